import { BadInputError, throwIfAborted } from '../../core/errors.js';
import { sha256Hex } from '../../core/hash.js';
import { Rng } from '../../core/rng.js';
import { getJson, type ArtifactStore } from '../../core/store/index.js';
import { readShard, type WdsSample } from '../../core/webdataset.js';
import { augmentViews, sampleRng, type AugmentedView, type CropDraw, type ViewSpec } from './augment.js';
import { DATASET_MANIFEST_SCHEMA, type DatasetManifest, type ShardRecord } from './manifest.js';
import { decodeSample, type DecodedSample } from './sample.js';

/**
 * Where a worker is in its stream: `position` samples of `epoch` already handed out. Small and
 * JSON-able, so training can save it with its checkpoint and resume exactly.
 */
export interface LoaderCursor {
  epoch: number;
  position: number;
}

/** Turns a decoded sample into what training consumes; `rng` is per (seed, epoch, sample key). */
export type SampleTransform<T> = (sample: DecodedSample, rng: Rng) => T | Promise<T>;

export interface TrainLoaderOptions<T = DecodedSample> {
  store: ArtifactStore;
  /** The dataset: its manifest key (ShardResult.datasetManifestKey) or the manifest itself. */
  dataset: string | DatasetManifest;
  split?: string;
  seed: number;
  /** This worker's index and the number of workers: each reads a disjoint set of shards. */
  worker?: number;
  numWorkers?: number;
  /** Samples held for shuffling (WebDataset's shuffle buffer). */
  shuffleBuffer?: number;
  /** Shards fetched ahead of the one being read. */
  prefetchShards?: number;
  /** Samples decoded and transformed concurrently ahead of the consumer. */
  decodeAhead?: number;
  /** Check every shard's sha256 against the manifest before using it. */
  verify?: boolean;
  transform?: SampleTransform<T>;
  signal?: AbortSignal;
}

export interface LoaderItem<T> {
  key: string;
  value: T;
  /** Resume from here to continue right after this item. */
  cursor: LoaderCursor;
}

/** A sample's address: shard (index into the split's shard list) and ordinal within that shard. */
export interface SampleRef {
  shard: number;
  index: number;
}

export interface EpochPlan {
  /** This worker's shards, in reading order. */
  shards: number[];
  /** Samples in the order they are handed out. */
  order: SampleRef[];
}

/**
 * The whole epoch's order for one worker, from (seed, epoch) and the manifest alone. Shards are
 * shuffled with an epoch-wide seed and dealt round-robin to workers (disjoint by construction);
 * then a shuffle buffer is simulated over sample addresses. Computing the order before reading
 * any bytes is what makes a resume exact: the cursor only needs a position in this list.
 */
export function planEpoch(shards: readonly Pick<ShardRecord, 'samples'>[], seed: number, epoch: number, worker: number, numWorkers: number, bufferSize: number): EpochPlan {
  const shardOrder = Rng.fromSeed('loader-shards', seed, epoch).shuffle(shards.map((_, i) => i));
  const mine = shardOrder.filter((_, k) => k % numWorkers === worker);
  const rng = Rng.fromSeed('loader-buffer', seed, epoch, worker, numWorkers);
  const buffer: SampleRef[] = [];
  const order: SampleRef[] = [];
  const take = () => {
    const j = rng.int(0, buffer.length);
    order.push(buffer[j]!);
    buffer[j] = buffer[buffer.length - 1]!;
    buffer.pop();
  };
  for (const shard of mine) {
    for (let index = 0; index < shards[shard]!.samples; index++) {
      buffer.push({ shard, index });
      if (buffer.length >= bufferSize) take();
    }
  }
  while (buffer.length > 0) take();
  return { shards: mine, order };
}

export interface TrainLoader<T> {
  manifest: DatasetManifest;
  split: string;
  /** Samples this worker hands out per epoch. */
  samplesPerEpoch: number;
  plan(epoch: number): EpochPlan;
  /** Items from `cursor` on, through epoch `untilEpoch - 1` (forever when omitted). */
  iterate(cursor?: LoaderCursor, options?: { untilEpoch?: number }): AsyncGenerator<LoaderItem<T>>;
}

async function loadManifest(store: ArtifactStore, dataset: string | DatasetManifest): Promise<DatasetManifest> {
  const manifest = typeof dataset === 'string' ? await getJson<DatasetManifest>(store, dataset) : dataset;
  if (manifest.schema !== DATASET_MANIFEST_SCHEMA) {
    throw new BadInputError(`not a dataset manifest (schema ${JSON.stringify(manifest.schema)}, expected ${DATASET_MANIFEST_SCHEMA})`, typeof dataset === 'string' ? store.url(dataset) : 'dataset');
  }
  return manifest;
}

export async function createTrainLoader<T = DecodedSample>(options: TrainLoaderOptions<T>): Promise<TrainLoader<T>> {
  const manifest = await loadManifest(options.store, options.dataset);
  const split = options.split ?? 'train';
  const splitManifest = manifest.splits[split];
  if (!splitManifest) throw new BadInputError(`dataset has no split ${JSON.stringify(split)} (has ${Object.keys(manifest.splits).join(', ')})`, 'split');
  const worker = options.worker ?? 0;
  const numWorkers = options.numWorkers ?? 1;
  if (!(Number.isInteger(numWorkers) && numWorkers >= 1 && Number.isInteger(worker) && worker >= 0 && worker < numWorkers)) {
    throw new BadInputError(`worker ${worker} of ${numWorkers} is not a valid worker index`, 'worker');
  }
  const bufferSize = Math.max(1, options.shuffleBuffer ?? 256);
  const prefetch = Math.max(0, options.prefetchShards ?? 2);
  const decodeAhead = Math.max(1, options.decodeAhead ?? 8);
  const verify = options.verify ?? true;
  const shards = splitManifest.shards;
  const transform = options.transform ?? ((s: DecodedSample) => s as unknown as T);
  const plan = (epoch: number) => planEpoch(shards, options.seed, epoch, worker, numWorkers, bufferSize);
  const samplesPerEpoch = plan(0).order.length;

  async function fetchShard(shard: number): Promise<WdsSample[]> {
    const rec = shards[shard]!;
    const bytes = await options.store.get(rec.key);
    if (verify && sha256Hex(bytes) !== rec.sha256) throw new BadInputError(`shard bytes do not match the manifest's sha256 ${rec.sha256}`, options.store.url(rec.key));
    const samples: WdsSample[] = [];
    for await (const s of readShard(bytes, options.store.url(rec.key))) samples.push(s);
    if (samples.length !== rec.samples) throw new BadInputError(`shard holds ${samples.length} samples, the manifest says ${rec.samples}`, options.store.url(rec.key));
    return samples;
  }

  /** Raw samples of one epoch in plan order, from `position` on; memory stays within the shuffle buffer plus prefetched shards. */
  async function* rawSamples(epoch: number, position: number): AsyncGenerator<{ sample: WdsSample; position: number }> {
    const { shards: reading, order } = plan(epoch);
    const remaining = order.slice(position);
    const needed = new Set(remaining.map((r) => `${r.shard}:${r.index}`));
    const shardsNeeded = new Set(remaining.map((r) => r.shard));
    // After a resume, shards whose samples were all handed out already are not fetched again.
    const toRead = reading.filter((s) => shardsNeeded.has(s));
    const inflight = new Map<number, Promise<WdsSample[]>>();
    let next = 0;
    const ensurePrefetch = () => {
      for (let k = next; k < Math.min(toRead.length, next + 1 + prefetch); k++) {
        const shard = toRead[k]!;
        if (!inflight.has(shard)) {
          const p = fetchShard(shard);
          p.catch(() => {}); // surfaced when awaited; avoids an unhandled rejection for a shard never reached
          inflight.set(shard, p);
        }
      }
    };
    const ready = new Map<string, WdsSample>();
    for (let t = position; t < order.length; t++) {
      throwIfAborted(options.signal);
      const ref = order[t]!;
      const id = `${ref.shard}:${ref.index}`;
      while (!ready.has(id)) {
        if (next >= toRead.length) throw new Error(`loader plan refers to ${id}, which no remaining shard holds`);
        ensurePrefetch();
        const shard = toRead[next]!;
        const samples = await inflight.get(shard)!;
        inflight.delete(shard);
        next++;
        samples.forEach((s, index) => {
          if (needed.has(`${shard}:${index}`)) ready.set(`${shard}:${index}`, s);
        });
      }
      const sample = ready.get(id)!;
      ready.delete(id);
      yield { sample, position: t };
    }
  }

  async function* iterate(cursor: LoaderCursor = { epoch: 0, position: 0 }, iterateOptions: { untilEpoch?: number } = {}): AsyncGenerator<LoaderItem<T>> {
    for (let epoch = cursor.epoch; iterateOptions.untilEpoch === undefined || epoch < iterateOptions.untilEpoch; epoch++) {
      const start = epoch === cursor.epoch ? cursor.position : 0;
      const total = plan(epoch).order.length;
      if (total === 0) return; // this worker has no shards: nothing to hand out, ever
      // Decode and transform a few samples ahead, handing them out in plan order.
      const pending: Promise<LoaderItem<T>>[] = [];
      const source = rawSamples(epoch, start);
      let exhausted = false;
      const pull = async () => {
        const r = await source.next();
        if (r.done) {
          exhausted = true;
          return;
        }
        const { sample, position } = r.value;
        const work = (async () => {
          const decoded = await decodeSample(sample, `split ${split} sample ${sample.key}`);
          const value = await transform(decoded, sampleRng(options.seed, epoch, sample.key));
          const after: LoaderCursor = position + 1 >= total ? { epoch: epoch + 1, position: 0 } : { epoch, position: position + 1 };
          return { key: sample.key, value, cursor: after };
        })();
        work.catch(() => {});
        pending.push(work);
      };
      while (!exhausted && pending.length < decodeAhead) await pull();
      while (pending.length > 0) {
        const item = await pending.shift()!;
        if (!exhausted) await pull();
        yield item;
      }
    }
  }

  return { manifest, split, samplesPerEpoch, plan, iterate };
}

/** A transform giving augmented views with their geometry (two views for most dense methods). */
export function viewsTransform(
  specs: readonly ViewSpec[],
  options: { sharedFlip?: boolean; drawCrop?: (sample: DecodedSample) => CropDraw | undefined } = {},
): SampleTransform<{ sample: DecodedSample; views: AugmentedView[] }> {
  return (sample, rng) => ({ sample, views: augmentViews(rng, sample.image, specs, { sharedFlip: options.sharedFlip, drawCrop: options.drawCrop?.(sample) }) });
}
