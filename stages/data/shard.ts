import { BadInputError, throwIfAborted } from '../../core/errors.js';
import { sha256Hex } from '../../core/hash.js';
import { Rng } from '../../core/rng.js';
import type { Stage, StageRunContext } from '../../core/stage.js';
import { joinKey, putJson } from '../../core/store/index.js';
import { packShard, type WdsSample } from '../../core/webdataset.js';
import { DEFAULT_MAX_IMAGE_PIXELS } from '../../core/bounds.js';
import { shardConfigSchema, type ShardConfig } from './config.js';
import {
  countSample,
  DATASET_MANIFEST_SCHEMA,
  emptyCounters,
  mergeCounters,
  statsFromCounters,
  type DatasetManifest,
  type ShardRecord,
  type SkippedItem,
  type StatsCounters,
} from './manifest.js';
import { mapOrdered, prepareSample, TAR_END_BYTES, tarBytesOf } from './prepare.js';
import { openSource, sourceFingerprint } from './sources/index.js';
import type { SourceItem } from './sources/types.js';

/** The shard stage has no upstream stage: everything it reads is named in its config. */
export type ShardInputs = Record<string, never>;

export interface ShardResult {
  /** Store key of the dataset manifest (densepipe.dataset/v1: shards, sha256s, statistics). */
  datasetManifestKey: string;
  splits: Record<string, { shardKeys: string[]; samples: number }>;
  classes: string[];
  imageSize?: [number, number];
  /** Items left out under skipBad (details in the dataset manifest). */
  skipped: number;
}

/** A finished shard as the checkpoint remembers it: enough to verify it and to rebuild it. */
interface ShardProgress extends ShardRecord {
  /** Positions [start, end) in the split's shuffled item order. */
  start: number;
  end: number;
  counters: StatsCounters;
  sizes: string[];
}

interface Progress {
  splits: Record<string, { shards: ShardProgress[]; skipped: SkippedItem[]; nextPosition: number; done: boolean }>;
}

const PROGRESS_FILE = 'progress.json';

/** The deterministic order items are sharded in: a seeded shuffle per split. */
export function shuffledOrder(count: number, seed: number, split: string): number[] {
  return Rng.fromSeed('shard-order', seed, split).shuffle(Array.from({ length: count }, (_, i) => i));
}

export function shardKeyOf(prefix: string, split: string, index: number): string {
  return joinKey(prefix, split, `${split}-${String(index).padStart(6, '0')}.tar`);
}

interface BuiltShard {
  samples: WdsSample[];
  end: number;
  counters: StatsCounters;
  skipped: SkippedItem[];
  sizes: Set<string>;
}

/**
 * Collect the next shard's samples starting at `start`. With `fixedEnd` (rebuilding a recorded
 * shard) the range is given; otherwise the shard closes at shardSamples or before the sample that
 * would take it past shardBytes. Bad items become skip records (skipBad) or a BadInputError;
 * either way nothing has been written yet, so there is never a partial shard.
 */
async function buildShard(
  ctx: StageRunContext,
  config: ShardConfig,
  classes: readonly string[],
  split: string,
  items: readonly SourceItem[],
  order: readonly number[],
  start: number,
  seenKeys: Set<string>,
  fixedEnd?: number,
): Promise<BuiltShard> {
  const out: BuiltShard = { samples: [], end: start, counters: emptyCounters(classes.length), skipped: [], sizes: new Set() };
  let bytes = TAR_END_BYTES;
  const limit = fixedEnd ?? order.length;
  // Load a window ahead; the window never crosses `limit`, and items past the closing point are simply not consumed.
  const window = order.slice(start, Math.min(limit, start + config.shardSamples + config.concurrency)).map((i) => items[i]!);
  for await (const outcome of mapOrdered(window, config.concurrency, (item) =>
    prepareSample(item, classes, { format: config.imageFormat, jpegQuality: config.jpegQuality, maxPixels: config.maxImagePixels }),
  )) {
    throwIfAborted(ctx.signal);
    if (fixedEnd === undefined && out.samples.length >= config.shardSamples) break;
    if (!outcome.ok) {
      if (!(outcome.error instanceof BadInputError) || !config.skipBad) throw outcome.error;
      out.skipped.push({ split, origin: outcome.item.origin, reason: outcome.error.message });
      out.end++;
      continue;
    }
    const { sample, width, height, objects, imageLabel } = outcome.value;
    if (seenKeys.has(sample.key)) {
      const reason = `duplicate sample key ${sample.key} in split ${split}`;
      if (!config.skipBad) throw new BadInputError(reason, outcome.item.origin);
      out.skipped.push({ split, origin: outcome.item.origin, reason });
      out.end++;
      continue;
    }
    const sampleBytes = tarBytesOf(sample);
    if (fixedEnd === undefined && config.shardBytes !== undefined && out.samples.length > 0 && bytes + sampleBytes > config.shardBytes) break;
    seenKeys.add(sample.key);
    out.samples.push(sample);
    bytes += sampleBytes;
    countSample(out.counters, width, height, objects, imageLabel);
    out.sizes.add(`${width}x${height}`);
    out.end++;
  }
  return out;
}

/** Write a shard unless an identical object is already there (same sha256): reruns never rewrite. */
async function writeShardIdempotent(ctx: StageRunContext, key: string, tar: Uint8Array, sha256: string): Promise<'written' | 'kept'> {
  if (await ctx.store.exists(key)) {
    if (sha256Hex(await ctx.store.get(key)) === sha256) return 'kept';
    ctx.log(`shard ${key} exists with different bytes; rewriting`);
  }
  await ctx.store.put(key, tar, { contentType: 'application/x-tar' });
  return 'written';
}

async function loadProgress(ctx: StageRunContext): Promise<Progress> {
  const latest = await ctx.checkpoints.latest();
  if (!latest) return { splits: {} };
  return JSON.parse(Buffer.from(await latest.read(PROGRESS_FILE)).toString('utf8')) as Progress;
}

async function runShardStage(ctx: StageRunContext, config: ShardConfig): Promise<ShardResult> {
  const source = await openSource(config.source, config.skipBad, ctx.store);
  const classes = source.classes;
  const progress = await loadProgress(ctx);
  const total = Object.values(source.splits).reduce((n, items) => n + items.length, 0);
  let processed = 0;
  let checkpointStep = Object.values(progress.splits).reduce((n, s) => n + s.shards.length, 0);

  for (const [split, items] of Object.entries(source.splits)) {
    const order = shuffledOrder(items.length, config.seed, split);
    const state = (progress.splits[split] ??= { shards: [], skipped: [], nextPosition: 0, done: false });
    const seenKeys = new Set<string>();
    // Recorded shards: keep them if the object is there with the recorded sha, rebuild the same range otherwise.
    for (const [index, rec] of state.shards.entries()) {
      const intact = (await ctx.store.exists(rec.key)) && sha256Hex(await ctx.store.get(rec.key)) === rec.sha256;
      if (!intact) {
        const rebuilt = await buildShard(ctx, config, classes, split, items, order, rec.start, seenKeys, rec.end);
        const tar = await packShard(rebuilt.samples);
        await writeShardIdempotent(ctx, rec.key, tar, sha256Hex(tar));
        state.shards[index] = { ...rec, sha256: sha256Hex(tar), bytes: tar.byteLength };
        ctx.log(`rebuilt missing or changed shard ${rec.key}`);
      } else {
        // Re-read keys so duplicate detection spans the whole split after a resume.
        for (const i of order.slice(rec.start, rec.end)) seenKeys.add(items[i]!.key);
      }
      processed += rec.end - rec.start;
    }
    let position = state.nextPosition;
    while (position < order.length && !state.done) {
      throwIfAborted(ctx.signal);
      const built = await buildShard(ctx, config, classes, split, items, order, position, seenKeys);
      const index = state.shards.length;
      const key = shardKeyOf(ctx.outputPrefix, split, index);
      if (built.samples.length > 0) {
        const tar = await packShard(built.samples);
        const sha256 = sha256Hex(tar);
        await writeShardIdempotent(ctx, key, tar, sha256);
        state.shards.push({
          key,
          sha256,
          bytes: tar.byteLength,
          samples: built.samples.length,
          firstKey: built.samples[0]!.key,
          lastKey: built.samples[built.samples.length - 1]!.key,
          start: position,
          end: built.end,
          counters: built.counters,
          sizes: [...built.sizes],
        });
      }
      // Skips are recorded once, when their range is first sharded (a rebuild covers the same range).
      state.skipped.push(...built.skipped);
      processed += built.end - position;
      position = built.end;
      state.nextPosition = position;
      state.done = position >= order.length;
      await ctx.checkpoints.save(++checkpointStep, { [PROGRESS_FILE]: JSON.stringify(progress) }, { split, position });
      ctx.progress({ fraction: total ? processed / total : 1, message: `${split}: ${position}/${order.length} items`, metrics: { shards: checkpointStep } });
    }
    state.done = true;
  }

  return writeDatasetManifest(ctx, config, source.description, classes, source.listingProblems, progress);
}

async function writeDatasetManifest(
  ctx: StageRunContext,
  config: ShardConfig,
  description: string,
  classes: string[],
  listingProblems: SkippedItem[],
  progress: Progress,
): Promise<ShardResult> {
  const sizes = new Set<string>();
  const skipped: SkippedItem[] = [...listingProblems];
  const manifest: DatasetManifest = { schema: DATASET_MANIFEST_SCHEMA, description, classes, imageFormat: config.imageFormat, shuffleSeed: config.seed, splits: {}, skipped };
  const result: ShardResult = { datasetManifestKey: joinKey(ctx.outputPrefix, 'dataset.json'), splits: {}, classes, skipped: 0 };
  for (const [split, state] of Object.entries(progress.splits)) {
    const real = state.shards;
    skipped.push(...state.skipped);
    for (const s of real) s.sizes.forEach((x) => sizes.add(x));
    const samples = real.reduce((n, s) => n + s.samples, 0);
    manifest.splits[split] = {
      samples,
      shards: real.map(({ key, sha256, bytes, samples: n, firstKey, lastKey }) => ({ key, sha256, bytes, samples: n, firstKey, lastKey })),
      stats: statsFromCounters(classes, mergeCounters(classes.length, real.map((s) => s.counters))),
    };
    result.splits[split] = { shardKeys: real.map((s) => s.key), samples };
  }
  if (sizes.size === 1) {
    const [w, h] = [...sizes][0]!.split('x').map(Number);
    manifest.imageSize = result.imageSize = [w!, h!];
  }
  result.skipped = skipped.length;
  // Written after every shard: the manifest's presence means the dataset is complete.
  await putJson(ctx.store, result.datasetManifestKey, manifest);
  return result;
}

/**
 * Shard a dataset into WebDataset tars. Resumable per shard through checkpoints, idempotent
 * (identical shards are never rewritten) and content-addressed: local sources are fingerprinted
 * by their bytes, so an edited image or annotation gives a new output.
 */
/**
 * The version of the file readers (COCO, VOC, ImageFolder), in the key of every dataset read from files:
 * 2: paths confined to the dataset root, symlinked images inside it read and fingerprinted, ImageFolder leaves out
 * __MACOSX/ and AppleDouble files, images over maxImagePixels refused.
 */
const FILE_READER_VERSION = '2';

export const shardStage: Stage<ShardInputs, ShardConfig, ShardResult> = {
  name: 'data-shard',
  version: '1',
  keyConfig(config) {
    // Defaults applied first, so a config that spells out a default hashes like one that omits it.
    const full = shardConfigSchema.parse(config);
    const { concurrency: _speedOnly, jpegQuality, maxImagePixels, ...rest } = full;
    const base = { ...rest, ...(full.imageFormat === 'jpg' ? { jpegQuality } : {}) };
    // The built-in scenes are generated, never read from files: the readers' changes cannot alter them, and they keep
    // the key they always had (with its null fingerprint), so every run cached on them stays valid.
    if (full.source.kind === 'synthetic') return { ...base, ...(maxImagePixels !== DEFAULT_MAX_IMAGE_PIXELS ? { maxImagePixels } : {}), sourceFingerprint: null };
    return { ...base, maxImagePixels, readerVersion: FILE_READER_VERSION };
  },
  // Read streamed, off the event loop's critical path: heartbeats and cancellation keep flowing.
  keyContent(config, signal) {
    return sourceFingerprint(shardConfigSchema.parse(config).source, signal);
  },
  validate(_inputs, config) {
    const parsed = shardConfigSchema.safeParse(config);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new BadInputError(issue.message, `config.${issue.path.join('.')}`);
    }
  },
  run(ctx, _inputs, config) {
    return runShardStage(ctx, shardConfigSchema.parse(config));
  },
};
