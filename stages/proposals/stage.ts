import { BadInputError, throwIfAborted } from '../../core/errors.js';
import { digest } from '../../core/hash.js';
import type { Stage, StageRef, StageRunContext } from '../../core/stage.js';
import { ArtifactNotFoundError, joinKey } from '../../core/store/index.js';
import { packShard, readShardFromStore, type WdsSample } from '../../core/webdataset.js';
import type { Box } from './boxes.js';
import { proposalConfigSchema, resolveRecipe, type ProposalConfig } from './config.js';
import { decodeImage, encodeLabelPng, resizeImage } from './image-io.js';
import type { ImageProposals } from './propose.js';
import { inlineRunner, workerPoolRunner, type ProposalRunner } from './worker-pool.js';

export interface ProposalInputs {
  dataset: StageRef<{ splits: Record<string, { shardKeys: string[] }> }>;
  shardKey: string;
}

export interface ProposalResult {
  shardKey: string;
  /** JSON document (ProposalsFile) with every sample's boxes. */
  proposalsKey: string;
  images: number;
  boxes: number;
  /** WebDataset tar of `<key>.seg.png` 16-bit label maps, for methods that keep them. */
  segmentsKey?: string;
}

/** One sample's proposals as stored. */
export interface SampleProposals {
  key: string;
  /** Size of the original image the boxes refer to. */
  width: number;
  height: number;
  /** [x1, y1, x2, y2), exclusive right/bottom, original-image pixels (2 decimals after a resize). */
  boxes: Box[];
  /** Boxes the method produced before filters / NMS / top-k. */
  rawCount: number;
  /** Label count of the stored segment map, when there is one. */
  segmentCount?: number;
}

export interface ProposalsFile {
  schema: 'densepipe.proposals/v1';
  shardKey: string;
  preset: string;
  boxFormat: 'x1y1x2y2, exclusive right/bottom edges, pixels of the original image';
  recipe: unknown;
  samples: SampleProposals[];
}

const IMAGE_EXTENSIONS = ['png', 'jpg', 'jpeg', 'webp', 'tif', 'tiff'];

function imageOf(sample: WdsSample, where: string): Uint8Array {
  for (const ext of IMAGE_EXTENSIONS) if (sample.files[ext]) return sample.files[ext]!;
  throw new BadInputError(`sample has no image member (looked for .${IMAGE_EXTENSIONS.join(', .')}; has .${Object.keys(sample.files).join(', .')})`, where);
}

const round2 = (v: number) => Math.round(v * 100) / 100;

function segmentPartKey(prefix: string, sampleKey: string): string {
  return joinKey(prefix, 'segment-parts', `${sampleKey}.seg.png`);
}

/**
 * Region proposals for one shard. Samples are decoded (and resized) on this thread with sharp,
 * computed on a worker-thread pool, and collected in shard order. Every `checkpointEvery` images
 * the finished records are checkpointed (label maps are written as they finish), so a retried
 * activity continues where the last one stopped. Randomness is per (seed, sample key).
 */
export const proposalStage: Stage<ProposalInputs, ProposalConfig, ProposalResult> = {
  name: 'proposals',
  // 2: selective search box-exact against OpenCV 4.6 (Lab, FH, texture, grouping ties) and the
  // 'linear' resize equal to cv2.resize INTER_LINEAR (issue #18)
  version: '2',
  keyConfig(config) {
    const parsed = proposalConfigSchema.parse(config);
    // the resolved recipe, so equivalent configs share outputs; workers/checkpointEvery do not change results
    return { recipe: resolveRecipe(parsed), seed: parsed.seed, preset: parsed.preset };
  },
  validate(inputs, config) {
    const parsed = proposalConfigSchema.safeParse(config);
    if (!parsed.success) throw new BadInputError(parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '), 'proposals config');
    if (typeof inputs?.shardKey !== 'string' || inputs.shardKey.length === 0) throw new BadInputError('must be a non-empty store key', 'inputs.shardKey');
    const splits = inputs.dataset?.result?.splits;
    if (!splits || typeof splits !== 'object') throw new BadInputError('missing splits in the dataset result', 'inputs.dataset.result.splits');
    const known = Object.values(splits).some((s) => s.shardKeys?.includes(inputs.shardKey));
    if (!known) throw new BadInputError(`shard ${inputs.shardKey} is not in any split of dataset ${inputs.dataset.hash}`, 'inputs.shardKey');
  },
  async run(ctx, inputs, rawConfig) {
    return runProposals(ctx, inputs, proposalConfigSchema.parse(rawConfig));
  },
};

async function runProposals(ctx: StageRunContext, inputs: ProposalInputs, config: ProposalConfig): Promise<ProposalResult> {
  const recipe = resolveRecipe(config);
  const { store, outputPrefix } = ctx;
  const checkpoint = await ctx.checkpoints.latest();
  const records: SampleProposals[] = checkpoint ? (JSON.parse(Buffer.from(await checkpoint.read('samples.json')).toString('utf8')) as SampleProposals[]) : [];
  const finished = new Set(records.map((r) => r.key));
  if (checkpoint) ctx.log(`proposals: resuming ${inputs.shardKey} after ${records.length} images`);
  const runner: ProposalRunner = config.workers === 1 ? inlineRunner() : await workerPoolRunner(config.workers);
  const inFlight: Array<Promise<SampleProposals>> = [];
  let sinceCheckpoint = 0;
  const t0 = performance.now();
  let computed = 0;

  const settleOldest = async () => {
    records.push(await inFlight.shift()!);
    computed++;
    sinceCheckpoint++;
    ctx.progress({ step: records.length, message: `${records.length} images`, metrics: { imagesPerSecond: computed / ((performance.now() - t0) / 1000) } });
    if (sinceCheckpoint >= config.checkpointEvery) {
      await ctx.checkpoints.save(records.length, { 'samples.json': JSON.stringify(records) }, { images: records.length });
      sinceCheckpoint = 0;
    }
  };

  try {
    for await (const sample of readShardFromStore(store, inputs.shardKey)) {
      throwIfAborted(ctx.signal);
      if (finished.has(sample.key)) continue;
      const where = `${store.url(inputs.shardKey)}#${sample.key}`;
      const original = await decodeImage(imageOf(sample, where), where);
      const prepared = recipe.resize ? await resizeImage(original, recipe.resize.width, recipe.resize.height, recipe.resize.kernel) : original;
      const job = runner.run({ key: sample.key, seed: config.seed, recipe, image: prepared, originalWidth: original.width, originalHeight: original.height });
      inFlight.push(job.then((out) => storeSample(ctx, sample.key, original.width, original.height, out)));
      // keep every worker busy plus one decoded image waiting, without reading the whole shard ahead
      while (inFlight.length > runner.threads) await settleOldest();
    }
    while (inFlight.length > 0) await settleOldest();
  } finally {
    // let in-flight jobs settle before the pool goes away, then surface the first error
    await Promise.allSettled(inFlight);
    await runner.close();
  }

  const file: ProposalsFile = {
    schema: 'densepipe.proposals/v1',
    shardKey: inputs.shardKey,
    preset: config.preset,
    boxFormat: 'x1y1x2y2, exclusive right/bottom edges, pixels of the original image',
    recipe,
    samples: records,
  };
  const proposalsKey = joinKey(outputPrefix, 'proposals.json');
  await store.put(proposalsKey, JSON.stringify(file), { contentType: 'application/json' });
  const result: ProposalResult = {
    shardKey: inputs.shardKey,
    proposalsKey,
    images: records.length,
    boxes: records.reduce((n, r) => n + r.boxes.length, 0),
  };
  if (recipe.segments && records.some((r) => r.segmentCount !== undefined)) result.segmentsKey = await packSegments(ctx, records);
  ctx.log(`proposals: ${inputs.shardKey}: ${result.images} images, ${result.boxes} boxes (${digest(records.map((r) => r.boxes), 8)})`);
  return result;
}

async function storeSample(ctx: StageRunContext, key: string, width: number, height: number, out: ImageProposals): Promise<SampleProposals> {
  const record: SampleProposals = { key, width, height, boxes: out.boxes.map((b) => b.map(round2) as Box), rawCount: out.rawCount };
  if (out.segments) {
    await ctx.store.put(segmentPartKey(ctx.outputPrefix, key), await encodeLabelPng(out.segments), { contentType: 'image/png' });
    record.segmentCount = out.segments.count;
  }
  return record;
}

/** One WebDataset tar of all label maps (`<key>.seg.png`), then the per-sample parts are removed. */
async function packSegments(ctx: StageRunContext, records: SampleProposals[]): Promise<string> {
  const samples: WdsSample[] = [];
  for (const r of records) {
    if (r.segmentCount === undefined) continue;
    try {
      samples.push({ key: r.key, files: { 'seg.png': await ctx.store.get(segmentPartKey(ctx.outputPrefix, r.key)) } });
    } catch (err) {
      if (err instanceof ArtifactNotFoundError) throw new Error(`label map of ${r.key} is missing from the checkpointed run (${err.url}); delete the checkpoint to recompute`);
      throw err;
    }
  }
  const segmentsKey = joinKey(ctx.outputPrefix, 'segments.tar');
  await ctx.store.put(segmentsKey, await packShard(samples), { contentType: 'application/x-tar' });
  for (const s of samples) await ctx.store.delete(segmentPartKey(ctx.outputPrefix, s.key));
  return segmentsKey;
}
