/**
 * The evaluation stage (issue #6): frozen-backbone kNN and linear probe, semantic segmentation
 * with an FCN head (frozen or fine-tuned), FCOS-style object detection (detection/, scored with
 * cocoEvaluate), and R2O-style unsupervised object segmentation, on one
 * dataset stage's train/eval splits, optionally with only a seeded fraction of the training labels.
 * Metrics go to the store as JSON (flat names such as 'knn.top1', 'semseg.mIoU'), with per-class
 * tables and per-image predictions beside them. Trained heads checkpoint every epoch, so a
 * retried activity resumes where the last one stopped and finishes with the same numbers.
 * TensorBoard: each trained head's per-epoch loss and time (`<task>/loss`, `<task>/secondsPerEpoch`,
 * by epoch) while it trains, and every final metric (`metrics/<name>`), go to
 * `<output prefix>/tensorboard/` in the store (one file per attempt).
 * The backbone is a ResNet or a ViT (backbone.ts `EvalBackbone`): every task but the DETRs runs on
 * either, a ViT through its class token (or mean patch token), its patch-token map, and ViTDet's
 * simple feature pyramid for detection (docs/downstream.md, "ViT backbones").
 */
import { z } from 'zod';
import { limitMessage } from '../../core/bounds.js';
import { BadInputError } from '../../core/errors.js';
import { joinKey, putJson } from '../../core/store/index.js';
import type { Stage, StageRef, StageRunContext } from '../../core/stage.js';
import { StoreEventWriter, tensorboardPrefix } from '../../core/tfevents.js';
import { initBackend } from '../../core/tf.js';
import { ResNet } from '../engine/resnet.js';
import { isVitPreset, VIT_PRESETS } from '../engine/vit.js';
import { extractFeatures, loadBackbone, VIT_POOLINGS, type EvalBackbone, type EvalBackboneOptions, type Features } from './backbone.js';
import { detectionConfigSchema } from './detection/config.js';
import { runDetectionTask } from './detection/task.js';
import { detrConfigSchema } from './detr/config.js';
import { runDetrTask } from './detr/task.js';
import { pairDetrConfigSchema } from './pairdetr/config.js';
import { runPairDetrTask } from './pairdetr/task.js';
import { labelSubset, loadEvalSplit, type DatasetRefResult, type EvalSample } from './eval-data.js';
import { knnClassify } from './knn.js';
import { linearProbe } from './linear-probe.js';
import { ConfusionMatrix, IGNORE_INDEX, segmentationScores, top1Accuracy } from './metrics/segmentation.js';
import { predictSegmentation, trainSemanticSegmentation } from './semseg.js';
import { encodeVariables, restoreVariables } from './tensor-state.js';
import type { EpochCheckpointer } from './training.js';
import { evaluateUnsupervisedSegmentation } from './unsup-seg.js';
import { repeatSeeds, runOverSeeds, type SeedMetrics } from './repeats.js';

export { cocoEvaluate, defaultCocoParams, COCO_STAT_NAMES } from './metrics/coco-eval.js';
export type { CocoDetection, CocoGroundTruth, CocoEvalResult } from './metrics/coco-eval.js';
export { rleEncode, rleDecode, rleToString, rleFromString, toCocoRle, fromCocoRle, rleArea, rleToBbox, boxIou, maskIou } from './metrics/rle.js';
export type { Rle, CocoRle } from './metrics/rle.js';
export { meanIoU, segmentationScores, ConfusionMatrix, top1Accuracy, IGNORE_INDEX } from './metrics/segmentation.js';
export { hungarian } from '../engine/hungarian.js';
export { knnClassify } from './knn.js';
export { kmeans } from './kmeans.js';
export { labelSubset } from './eval-data.js';

export const EVALUATION_TASKS = ['knn', 'linear', 'semseg', 'detection', 'unsup-seg', 'detr', 'pairdetr'] as const;
export type EvaluationTask = (typeof EVALUATION_TASKS)[number];
/** Tasks this version runs (all of EVALUATION_TASKS; validate() refuses any other). */
export const IMPLEMENTED_TASKS: readonly EvaluationTask[] = ['knn', 'linear', 'semseg', 'unsup-seg', 'detection', 'detr', 'pairdetr'];

/** Upper bounds (core/bounds.ts) of fields the schema did not bound yet; each message says what it protects. */
const EVAL_LIMITS = { epochs: 1000, k: 10_000, hidden: 8192, clusters: 1000, repeats: 20 } as const;
const epochsField = () => z.number().int().min(1).max(EVAL_LIMITS.epochs, limitMessage(EVAL_LIMITS.epochs, 'the evaluation activity runs every epoch in one attempt'));

const sgdSchema = {
  batchSize: z.number().int().min(1).max(4096),
  lr: z.number().positive(),
  momentum: z.number().min(0).max(0.999).default(0.9),
  weightDecay: z.number().min(0).default(0),
};

export const evaluationConfigSchema = z
  .object({
    tasks: z.array(z.enum(EVALUATION_TASKS)).min(1).default(['knn', 'linear', 'semseg', 'unsup-seg']),
    /** Split the heads are trained on / the kNN bank comes from, and the split that is scored. */
    trainSplit: z.string().default('train'),
    evalSplit: z.string().default('val'),
    /** Images (and label maps) are resized to this square size so they batch. */
    imageSize: z.number().int().min(16).max(1024).default(64),
    /** Cap on samples read per split (0 = all). */
    maxSamplesPerSplit: z.number().int().min(0).default(0),
    /** Fraction of the training split's labels used (1 %, 10 % label-scarce regimes), fixed by `seed`. */
    labelFraction: z.number().gt(0).max(1).default(1),
    seed: z.number().int().min(0).default(0),
    /**
     * Evaluate this many times, with seeds seed, seed + 1, … (heads, k-means, label subset, and the
     * random-init baseline's backbone): metrics are the means, the result's `seedMetrics` the
     * per-seed values, so a report can show the evaluation's seed noise (repeats.ts).
     */
    repeats: z.number().int().min(1).max(EVAL_LIMITS.repeats, limitMessage(EVAL_LIMITS.repeats, 'every repeat is a whole evaluation in one activity')).default(1),
    featureBatchSize: z.number().int().min(1).max(1024).default(32),
    backbone: z
      .object({
        /** engine ResNet or ViT preset; must match what the pretraining stage trained (also used for the random-init baseline). */
        arch: z.string().default('resnet18-w16-cifar'),
        /**
         * ViT only: the image-level feature of kNN and the linear probe. 'cls' (the default when absent) is the class
         * token, as MoCo v3 and MAE probe; 'mean' the mean patch token (backbone.ts VIT_POOLINGS). Optional without a
         * default, so ResNet evaluations' cache keys stay as they were.
         */
        pooling: z.enum(VIT_POOLINGS).optional(),
      })
      .strict()
      .prefault({}),
    knn: z
      .object({
        k: z.number().int().min(1).max(EVAL_LIMITS.k, limitMessage(EVAL_LIMITS.k, 'the k nearest neighbours of every query are sorted and weighed in memory')).default(20),
        temperature: z.number().positive().default(0.07),
      })
      .strict()
      .prefault({}),
    linear: z
      .object({ epochs: epochsField().default(30), ...sgdSchema, batchSize: sgdSchema.batchSize.default(64), lr: sgdSchema.lr.default(0.1) })
      .strict()
      .prefault({}),
    semseg: z
      .object({
        mode: z.enum(['frozen', 'finetune']).default('frozen'),
        hidden: z.number().int().min(1).max(EVAL_LIMITS.hidden, limitMessage(EVAL_LIMITS.hidden, 'the head\'s activations at full feature-map resolution are held in memory')).default(64),
        epochs: epochsField().default(10),
        ...sgdSchema,
        batchSize: sgdSchema.batchSize.default(16),
        lr: sgdSchema.lr.default(0.02),
        weightDecay: sgdSchema.weightDecay.default(1e-4),
      })
      .strict()
      .prefault({}),
    /** FCOS-style detector (stages/downstream/detection). */
    detection: detectionConfigSchema.prefault({}),
    /** DETR fine-tuning (stages/downstream/detr): the whole detector, from a pretraining run's exported one or from scratch. */
    detr: detrConfigSchema.prefault({}),
    /** Pair DETR training (stages/downstream/pairdetr, arXiv 2210.16476): two decoders, keypoint pairs, contrastive pair association. */
    pairdetr: pairDetrConfigSchema.prefault({}),
    unsupSeg: z
      .object({
        /** Clusters per image; 'segments' = as many as the image has ground-truth segments (objects + background). */
        clusters: z.union([z.number().int().min(1).max(EVAL_LIMITS.clusters, limitMessage(EVAL_LIMITS.clusters, 'k-means cost grows with the clusters per image')), z.literal('segments')]).default('segments'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type EvaluationConfig = z.infer<typeof evaluationConfigSchema>;

export interface EvalInputs {
  dataset: StageRef<DatasetRefResult>;
  /** null = the random-init baseline. */
  backbone: StageRef<{ backboneKey: string; backbone?: unknown; exports?: Record<string, string> }> | null;
}

export interface EvaluationResult {
  metrics: Record<string, number>;
  metricsKey: string;
  perClassKey?: string;
  predictionsKey?: string;
  /** With `repeats` > 1: each seed's value of every quality metric (`metrics` holds their means). */
  seedMetrics?: SeedMetrics;
}

interface TaskOutcome {
  metrics: Record<string, number>;
  perClass?: unknown;
  predictions?: unknown;
}

/** One stage-wide checkpoint: finished tasks' outcomes plus the running task's epoch state. */
interface CheckpointMeta {
  completed: Record<string, TaskOutcome>;
  task: string | null;
  epoch: number;
  rngState: number;
  stepCount: number;
}

export const evaluationStage: Stage<EvalInputs, EvaluationConfig, EvaluationResult> = {
  name: 'evaluate',
  // Not bumped for the TensorBoard event files (per-epoch head losses, final metrics): the metrics are unchanged and
  // older outputs simply lack the events.
  // 2: kNN's (and Pair DETR's) L2 norms as sqrt(Σ x²) (stages/engine/ops/norm.ts) instead of tf.norm: equal up to
  // float rounding, which can still reorder a kNN tie.
  version: '2',
  // The `detr` block enters the key only when the task runs, so adding it left every other evaluation's key as it was.
  // Blocks that default to "nothing new" stay out of the key, so evaluations cached before they existed stay valid:
  // `detr` only when that task runs, `repeats` only when above 1 (one repeat is the plain evaluation).
  keyConfig: ({ detr, pairdetr, repeats, ...rest }) => ({
    ...rest,
    ...(repeats > 1 ? { repeats } : {}),
    ...(rest.tasks.includes('detr') ? { detr } : {}),
    ...(rest.tasks.includes('pairdetr') ? { pairdetr } : {}),
  }),
  validate(inputs, config) {
    if (!inputs?.dataset?.result?.splits) throw new BadInputError('dataset ref has no splits', 'inputs.dataset');
    for (const split of [config.trainSplit, config.evalSplit]) {
      if (!inputs.dataset.result.splits[split]) {
        throw new BadInputError(`dataset has no split '${split}' (has: ${Object.keys(inputs.dataset.result.splits).join(', ')})`, 'evaluation.trainSplit/evalSplit');
      }
    }
    const missing = config.tasks.filter((t) => !IMPLEMENTED_TASKS.includes(t));
    if (missing.length) throw new BadInputError(`task(s) ${missing.join(', ')} not implemented in this version (implemented: ${IMPLEMENTED_TASKS.join(', ')})`, 'evaluation.tasks');
    if (inputs.backbone && typeof inputs.backbone.result?.backboneKey !== 'string') throw new BadInputError('backbone ref has no backboneKey', 'inputs.backbone');
    const arch = archOf(inputs, config);
    if (!isVitPreset(arch)) {
      if (config.backbone.pooling) throw new BadInputError(`pooling '${config.backbone.pooling}' is for ViT backbones; ${arch} is a ResNet (its pooled feature is the global average of C5)`, 'evaluation.backbone.pooling');
    } else {
      const resnetOnly = config.tasks.filter((task) => task === 'detr' || task === 'pairdetr');
      if (resnetOnly.length) throw new BadInputError(`task(s) ${resnetOnly.join(', ')} fine-tune a ResNet-backed DETR; ${arch} is a ViT (use 'detection', which builds ViTDet's simple feature pyramid)`, 'evaluation.tasks');
      const patch = VIT_PRESETS[arch].patchSize;
      const grid = config.imageSize / patch;
      if (!Number.isInteger(grid)) throw new BadInputError(`${arch} has ${patch} px patches: imageSize ${config.imageSize} is not a multiple of it`, 'evaluation.imageSize');
      if (config.tasks.includes('detection') && grid % 2 !== 0) {
        throw new BadInputError(`detection on ${arch} max-pools its ${grid}x${grid} patch grid by 2 (the simple feature pyramid): imageSize must be a multiple of ${2 * patch}`, 'evaluation.imageSize');
      }
    }
  },
  async run(ctx, inputs, config) {
    await initBackend('auto');
    if (config.repeats === 1) return runEvaluation(ctx, inputs, config);
    return runOverSeeds(ctx, repeatSeeds(config.seed, config.repeats), (sub, seed) => runEvaluation(sub, inputs, { ...config, seed, repeats: 1 }));
  },
};

function archOf(inputs: EvalInputs, config: EvaluationConfig): string {
  const described = inputs.backbone?.result.backbone as { arch?: unknown; preset?: unknown } | string | undefined;
  if (typeof described === 'string') return described;
  if (described && typeof described.arch === 'string') return described.arch;
  if (described && typeof described.preset === 'string') return described.preset;
  return config.backbone.arch;
}

async function runEvaluation(ctx: StageRunContext, inputs: EvalInputs, config: EvaluationConfig): Promise<EvaluationResult> {
  const latest = await ctx.checkpoints.latest();
  const meta = (latest?.meta as unknown as CheckpointMeta | undefined) ?? { completed: {}, task: null, epoch: 0, rngState: 0, stepCount: 0 };
  const completed: Record<string, TaskOutcome> = { ...meta.completed };
  const classes = inputs.dataset.result.classes;
  const maxSamples = config.maxSamplesPerSplit || undefined;
  const arch = archOf(inputs, config);
  const backboneKey = inputs.backbone?.result.backboneKey ?? null;
  const detectorKey = inputs.backbone?.result.exports?.detector ?? null;

  ctx.progress({ fraction: 0, message: `loading ${config.trainSplit}/${config.evalSplit}` });
  const trainAll = await loadEvalSplit(ctx.store, inputs.dataset.result, config.trainSplit, config.imageSize, { maxSamples, signal: ctx.signal });
  const evalSplit = await loadEvalSplit(ctx.store, inputs.dataset.result, config.evalSplit, config.imageSize, { maxSamples, signal: ctx.signal });
  const train = labelSubset(trainAll.samples, config.labelFraction, config.seed);
  ctx.log(`evaluate: ${train.length}/${trainAll.samples.length} labelled training samples (fraction ${config.labelFraction}), ${evalSplit.samples.length} eval samples, backbone ${arch} ${backboneKey ?? '(random init)'}`);

  const { model, ignored, resampled } = await loadBackbone(ctx.store, arch, config.seed, backboneKey, backboneOptions(config));
  if (ignored.length) ctx.log(`evaluate: ignored ${ignored.length} non-backbone tensors (e.g. ${ignored.slice(0, 3).join(', ')})`);
  if (resampled.length) ctx.log(`evaluate: position embedding resampled bicubically to the ${config.imageSize} px grid: ${resampled.join(', ')}`);
  if (model.family === 'vit') ctx.log(`evaluate: ViT features: ${config.backbone.pooling ?? 'cls'} pooling for knn/linear, the patch-token map for dense tasks`);
  let trainFeatures: Features | null = null;
  let evalFeatures: Features | null = null;
  let featureSeconds = 0;
  const features = () => {
    if (!trainFeatures || !evalFeatures) {
      const t0 = performance.now();
      trainFeatures = extractFeatures(model, train.map((s) => s.pixels), config.imageSize, config.featureBatchSize);
      evalFeatures = extractFeatures(model, evalSplit.samples.map((s) => s.pixels), config.imageSize, config.featureBatchSize);
      featureSeconds = (performance.now() - t0) / 1000;
    }
    return { train: trainFeatures, eval: evalFeatures };
  };

  const tasks = [...new Set(config.tasks)];
  const events = new StoreEventWriter(ctx.store, tensorboardPrefix(ctx.outputPrefix), { attempt: ctx.attempt });
  const checkpointerFor = (task: string): EpochCheckpointer => ({
    async load() {
      if (!latest || meta.task !== task || !latest.files.includes(`${task}.safetensors`)) return null;
      const bytes = await latest.read(`${task}.safetensors`);
      return { epoch: meta.epoch, rngState: meta.rngState, stepCount: meta.stepCount, restore: (vars) => restoreVariables(vars, bytes, `${ctx.checkpoints.prefix} (${task})`) };
    },
    async save(epoch, vars, rngState, stepCount) {
      const next: CheckpointMeta = { completed, task, epoch, rngState, stepCount };
      await ctx.checkpoints.save(checkpointStep(tasks, task, epoch), { [`${task}.safetensors`]: encodeVariables(vars) }, next as unknown as Record<string, unknown>);
    },
  });

  try {
    for (const [i, task] of tasks.entries()) {
      if (completed[task]) continue;
      const report = (fraction: number, message: string, metrics?: Record<string, number>, epoch?: number) => {
        ctx.progress({ fraction: (i + fraction) / tasks.length, message: `${task}: ${message}`, metrics });
        if (metrics && epoch !== undefined) {
          events.scalars(Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`${task}/${k}`, v])), epoch);
          void events.flush().catch((err: unknown) => ctx.log(`evaluate: TensorBoard events not uploaded: ${(err as Error).message}`));
        }
      };
      report(0, 'start');
      const outcome = await runTask(task, { ctx, config, classes, model, arch, backboneKey, detectorKey, train, evalSamples: evalSplit.samples, features, checkpointer: checkpointerFor(task), report });
      if (featureSeconds > 0) outcome.metrics['features.imagesPerSecond'] = (train.length + evalSplit.samples.length) / featureSeconds;
      completed[task] = outcome;
      // Record the finished task so a retry after this point does not redo it.
      await ctx.checkpoints.save(checkpointStep(tasks, task, Number.MAX_SAFE_INTEGER), {}, { completed, task: null, epoch: 0, rngState: 0, stepCount: 0 });
    }
  } finally {
    model.dispose();
    await events.flush(true).catch((err: unknown) => ctx.log(`evaluate: TensorBoard events not uploaded: ${(err as Error).message}`));
  }

  const metrics: Record<string, number> = { 'eval.trainSamples': train.length, 'eval.evalSamples': evalSplit.samples.length, 'eval.labelFraction': config.labelFraction };
  const perClass: Record<string, unknown> = {};
  const predictions: Record<string, unknown> = {};
  for (const task of tasks) {
    const o = completed[task]!;
    Object.assign(metrics, o.metrics);
    if (o.perClass) perClass[task] = o.perClass;
    if (o.predictions) predictions[task] = o.predictions;
  }
  events.scalars(Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`metrics/${k}`, v])), 0);
  await events.close().catch((err: unknown) => ctx.log(`evaluate: TensorBoard events not uploaded: ${(err as Error).message}`));
  const metricsKey = joinKey(ctx.outputPrefix, 'metrics.json');
  const perClassKey = joinKey(ctx.outputPrefix, 'per-class.json');
  const predictionsKey = joinKey(ctx.outputPrefix, 'predictions.json');
  await putJson(ctx.store, metricsKey, { schema: 'densepipe.evaluation/v1', arch, backboneKey, config, metrics });
  await putJson(ctx.store, perClassKey, { classes, ...perClass });
  await putJson(ctx.store, predictionsKey, predictions);
  return { metrics: finiteOnly(metrics), metricsKey, perClassKey, predictionsKey };
}

/** How the evaluated backbone is built: at the evaluation's image size (a ViT's grid), with the configured ViT pooling. */
function backboneOptions(config: EvaluationConfig): EvalBackboneOptions {
  return { imageSize: config.imageSize, ...(config.backbone.pooling ? { pooling: config.backbone.pooling } : {}) };
}

/** Monotone checkpoint step across tasks: task index in the high part, epoch in the low part. */
function checkpointStep(tasks: string[], task: string, epoch: number): number {
  return tasks.indexOf(task) * 1_000_000 + Math.min(epoch, 999_999);
}

/** JSON (and Temporal payloads) cannot carry NaN: an undefined metric is dropped, not sent as null. */
function finiteOnly(m: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(m).filter(([, v]) => Number.isFinite(v)));
}

interface TaskContext {
  ctx: StageRunContext;
  config: EvaluationConfig;
  classes: string[];
  model: EvalBackbone;
  arch: string;
  backboneKey: string | null;
  /** The pretraining run's exported detector (UP-DETR's `exports.detector`), for the 'detr' task. */
  detectorKey: string | null;
  train: EvalSample[];
  evalSamples: EvalSample[];
  features(): { train: Features; eval: Features };
  checkpointer: EpochCheckpointer;
  /** Progress; with `epoch`, the metrics also go to TensorBoard as `<task>/<name>` at that epoch. */
  report(fraction: number, message: string, metrics?: Record<string, number>, epoch?: number): void;
}

/** Each task's runner; `satisfies` makes a task without one a compile error. */
const TASK_RUNNERS = {
  knn: runKnn,
  linear: runLinear,
  semseg: runSemseg,
  'unsup-seg': runUnsupSeg,
  detection: runDetection,
  detr: runDetr,
  pairdetr: runPairDetr,
} satisfies Record<EvaluationTask, (t: TaskContext) => Promise<TaskOutcome>>;

async function runTask(task: EvaluationTask, t: TaskContext): Promise<TaskOutcome> {
  const run = TASK_RUNNERS[task] as ((t: TaskContext) => Promise<TaskOutcome>) | undefined;
  if (!run) throw new BadInputError(`task '${task}' is not implemented`, 'evaluation.tasks');
  return run(t);
}

/** Rows of labelled samples only (images with neither an image label nor an object have none). */
function labelled(samples: EvalSample[], f: Features): { x: Float32Array; y: Int32Array; idx: number[] } {
  const idx = samples.flatMap((s, i) => (s.classLabel >= 0 ? [i] : []));
  const x = new Float32Array(idx.length * f.channels);
  idx.forEach((i, j) => x.set(f.pooled.subarray(i * f.channels, (i + 1) * f.channels), j * f.channels));
  return { x, y: Int32Array.from(idx.map((i) => samples[i]!.classLabel)), idx };
}

function classificationOutcome(name: string, t: TaskContext, evalIdx: number[], labels: Int32Array, pred: Int32Array, extra: Record<string, number> = {}): TaskOutcome {
  const perClassAccuracy = t.classes.map((_, c) => {
    const rows = [...labels.keys()].filter((i) => labels[i] === c);
    return rows.length ? rows.filter((i) => pred[i] === c).length / rows.length : null;
  });
  return {
    metrics: { [`${name}.top1`]: top1Accuracy(pred, labels), ...extra },
    perClass: { accuracy: perClassAccuracy, support: t.classes.map((_, c) => labels.filter((l) => l === c).length) },
    predictions: evalIdx.map((i, j) => ({ key: t.evalSamples[i]!.key, label: labels[j], predicted: pred[j] })),
  };
}

async function runKnn(t: TaskContext): Promise<TaskOutcome> {
  const f = t.features();
  const tr = labelled(t.train, f.train);
  const ev = labelled(t.evalSamples, f.eval);
  const t0 = performance.now();
  const pred = knnClassify(tr.x, tr.y, ev.x, f.train.channels, { k: t.config.knn.k, temperature: t.config.knn.temperature, numClasses: t.classes.length });
  const seconds = (performance.now() - t0) / 1000;
  return classificationOutcome('knn', t, ev.idx, ev.y, pred, { 'knn.imagesPerSecond': ev.idx.length / Math.max(seconds, 1e-9) });
}

async function runLinear(t: TaskContext): Promise<TaskOutcome> {
  const f = t.features();
  const tr = labelled(t.train, f.train);
  const ev = labelled(t.evalSamples, f.eval);
  const c = t.config.linear;
  const result = await linearProbe(tr.x, tr.y, ev.x, f.train.channels, t.classes.length, {
    ...c,
    seed: t.config.seed,
    checkpointer: t.checkpointer,
    signal: t.ctx.signal,
    onEpoch: (epoch, loss, seconds, extra?: { lr: number; imagesPerSecond: number }) => t.report(epoch / c.epochs, `epoch ${epoch}/${c.epochs}`, { loss, secondsPerEpoch: seconds, ...extra }, epoch),
  });
  return classificationOutcome('linear', t, ev.idx, ev.y, result.predictions, {
    'linear.finalLoss': result.finalLoss,
    'linear.secondsPerEpoch': mean(result.secondsPerEpoch),
  });
}

async function runSemseg(t: TaskContext): Promise<TaskOutcome> {
  const c = t.config.semseg;
  const size = t.config.imageSize;
  const withMaps = (s: EvalSample[]) => s.filter((x) => x.semantic);
  const train = withMaps(t.train);
  const evalSamples = withMaps(t.evalSamples);
  if (train.length === 0 || evalSamples.length === 0) throw new BadInputError('semseg needs samples with instance masks in both splits', 'evaluation.tasks');
  const numClasses = t.classes.length + 1; // + background
  // Fine-tuning changes the backbone: do it on a fresh copy so later tasks still see the evaluated weights.
  const model = c.mode === 'finetune' ? await loadEvaluatedCopy(t) : t.model;
  let features: Features | null = null;
  if (c.mode === 'frozen') features = extractFeatures(model, train.map((s) => s.pixels), size, t.config.featureBatchSize);
  try {
    const { head, finalLoss, secondsPerEpoch } = await trainSemanticSegmentation(model, { pixels: train.map((s) => s.pixels), labels: train.map((s) => s.semantic!), features }, size, numClasses, {
      ...c,
      seed: t.config.seed,
      checkpointer: t.checkpointer,
      signal: t.ctx.signal,
      onEpoch: (epoch, loss, seconds, extra?: { lr: number; imagesPerSecond: number }) => t.report(epoch / c.epochs, `epoch ${epoch}/${c.epochs}`, { loss, secondsPerEpoch: seconds, ...extra }, epoch),
    });
    const t0 = performance.now();
    const preds = predictSegmentation(model, head, evalSamples.map((s) => s.pixels), size, t.config.featureBatchSize);
    const evalSeconds = (performance.now() - t0) / 1000;
    head.params.dispose();
    const cm = new ConfusionMatrix(numClasses);
    const perImage = evalSamples.map((s, i) => {
      cm.add(s.semantic!, preds[i]!, IGNORE_INDEX);
      return { key: s.key, labels: Buffer.from(preds[i]!).toString('base64'), size };
    });
    const scores = segmentationScores(cm);
    return {
      metrics: {
        'semseg.mIoU': scores.mIoU,
        'semseg.pixelAccuracy': scores.pixelAccuracy,
        'semseg.meanAccuracy': scores.meanAccuracy,
        'semseg.finalLoss': finalLoss,
        'semseg.secondsPerEpoch': mean(secondsPerEpoch),
        'semseg.imagesPerSecond': evalSamples.length / Math.max(evalSeconds, 1e-9),
      },
      perClass: { mode: c.mode, classes: ['background', ...t.classes], IoU: scores.perClassIoU.map((v) => (Number.isNaN(v) ? null : v)) },
      predictions: perImage,
    };
  } finally {
    if (model !== t.model) model.dispose();
  }
}

async function runUnsupSeg(t: TaskContext): Promise<TaskOutcome> {
  const f = t.features().eval;
  const size = t.config.imageSize;
  const per = f.h * f.w * f.channels;
  const images = t.evalSamples.flatMap((s, i) => {
    const objects = s.masks.filter((m): m is Uint8Array => m !== null);
    if (objects.length === 0) return [];
    const background = new Uint8Array(size * size).fill(1);
    for (const m of objects) for (let p = 0; p < m.length; p++) if (m[p]) background[p] = 0;
    return [{ key: s.key, image: { features: f.dense.subarray(i * per, (i + 1) * per), h: f.h, w: f.w, channels: f.channels, segments: [background, ...objects], size } }];
  });
  if (images.length === 0) throw new BadInputError('unsup-seg needs eval samples with instance masks', 'evaluation.tasks');
  const t0 = performance.now();
  const result = evaluateUnsupervisedSegmentation(
    images.map((x) => x.image),
    { clusters: t.config.unsupSeg.clusters, seed: t.config.seed },
  );
  const seconds = (performance.now() - t0) / 1000;
  return {
    metrics: { 'unsup-seg.mIoU': result.mIoU, 'unsup-seg.imagesPerSecond': images.length / Math.max(seconds, 1e-9) },
    predictions: images.map((x, i) => ({ key: x.key, mIoU: result.perImage[i] })),
  };
}

/** A fresh copy of the evaluated backbone (either family), for tasks that fine-tune it. */
async function loadEvaluatedCopy(t: TaskContext): Promise<EvalBackbone> {
  return (await loadBackbone(t.ctx.store, t.arch, t.config.seed, t.backboneKey, backboneOptions(t.config))).model;
}

/** What both detector tasks (FCOS on the backbone, the whole DETR) take from the evaluation: data, a fresh backbone copy, checkpoints, progress. */
function detectorTaskBase(t: TaskContext, epochs: number) {
  return {
    seed: t.config.seed,
    imageSize: t.config.imageSize,
    batchSize: t.config.featureBatchSize,
    classes: t.classes,
    train: t.train,
    evalSamples: t.evalSamples,
    /** The DETR-family tasks fine-tune a ResNet (validate() refuses them on a ViT). */
    loadCopy: async (): Promise<ResNet> => {
      const model = await loadEvaluatedCopy(t);
      if (model instanceof ResNet) return model;
      model.dispose();
      throw new BadInputError(`this detector task needs a ResNet backbone; ${t.arch} is a ViT`, 'evaluation.tasks');
    },
    checkpointer: t.checkpointer,
    signal: t.ctx.signal,
    onEpoch: (epoch: number, loss: number, seconds: number, extra?: { lr: number; imagesPerSecond: number }) =>
      t.report(epoch / epochs, `epoch ${epoch}/${epochs}`, { loss, secondsPerEpoch: seconds, ...extra }, epoch),
  };
}

async function runDetection(t: TaskContext): Promise<TaskOutcome> {
  return runDetectionTask({ ...detectorTaskBase(t, t.config.detection.epochs), loadCopy: () => loadEvaluatedCopy(t), config: t.config.detection, model: t.model });
}

async function runDetr(t: TaskContext): Promise<TaskOutcome> {
  const detector = t.detectorKey ? { bytes: await t.ctx.store.get(t.detectorKey), source: t.ctx.store.url(t.detectorKey) } : null;
  return runDetrTask({ ...detectorTaskBase(t, t.config.detr.epochs), config: t.config.detr, detector });
}

async function runPairDetr(t: TaskContext): Promise<TaskOutcome> {
  return runPairDetrTask({ ...detectorTaskBase(t, t.config.pairdetr.epochs), config: t.config.pairdetr });
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

