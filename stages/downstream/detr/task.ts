/**
 * The evaluation stage's 'detr' task: fine-tune a whole DETR detector (backbone, transformer, queries, heads) on the
 * training split's boxes and score the eval split with cocoEvaluate (bbox), as facebookresearch/detr@29901c5 main.py /
 * engine.py train and evaluate it (and UP-DETR's detr_main.py fine-tunes a pretrained one):
 *
 *   - the detector: the engine's `DetrHead` on the evaluated backbone's last map; when the pretraining run exported a
 *     detector (UP-DETR's `exports.detector`), its weights and shape are loaded as `detr_main.py --pretrain` does:
 *     every tensor but `class_embed` (the pretext's classes), the pretext-only heads (`patch2query`, `feature_align`)
 *     ignored; otherwise DETR from scratch at `evaluation.detr`'s sizes;
 *   - the backbone as DETR's `Backbone`: FrozenBatchNorm2d (eval-mode BN, its affine parameters not trained), conv1 and
 *     layer1 frozen, layer2-4 trained at `lrBackbone` (0 = frozen);
 *   - the loss: Hungarian matching and SetCriterion with auxiliary losses on every decoder layer (engine);
 *   - AdamW over every trained parameter with one weight decay (two param groups: transformer/heads at `lr`, backbone at
 *     `lrBackbone`), gradient norm clipped to `clipMaxNorm`, both rates ×0.1 from `lrDropAt` of the epochs (StepLR);
 *   - targets: crowd objects and degenerate boxes dropped (ConvertCocoPolysToMask), boxes as (cx, cy, w, h) / size;
 *   - inference (PostProcess): softmax, each query's best object class and its probability as the score, boxes back to
 *     pixels; all Q queries of an image are scored.
 * With `kind` 'deformable' (chosen by a `densepipe.deformable-detr/v1` export, DETReg's, or by the config) the detector
 * is the engine's `DeformableDetr` fine-tuned as amirbar/DETReg@a4b6363 main.py does (docs/downstream.md, "Deformable
 * DETR"): built from the export's metadata, every exported tensor loaded but `class_embed.*` (main.py --pretrain deletes
 * every key holding 'class_embed'), DETReg's pretext head `feature_embed.*` ignored (strict=False drops it); on the
 * backbone's C3..C5 maps; the focal matcher and criterion (costs 2 / 5 / 2, weights 2 / 5 / 2, α 0.25); AdamW lr 2e-4,
 * backbone 2e-5, `reference_points` / `sampling_offsets` at lr × 0.1; clip 0.1; inference as Deformable DETR's
 * `PostProcess` (sigmoid, the top 100 (query, class) pairs of an image). Without an export it is the same detector from
 * scratch at `detr.deformable`'s sizes (the low-data claim's baseline arm).
 * The low-data settings (DETReg's --filter_pct 0.01 / 0.1) are the stage's `evaluation.labelFraction`: `train` is
 * already that subset (eval-data.ts `labelSubset`).
 * Scaled down: no augmentation (the images are the eval stage's squares, unpadded), epochs of this split.
 * Epoch checkpoints hold every weight, both optimizers' moments, the shuffling RNG and the step count, so a retried
 * attempt resumes at the next epoch and ends with the same numbers (dropout masks are a function of (seed, step)).
 */
import { BadInputError, IncompatibleArtifactError, throwIfAborted } from '../../../core/errors.js';
import { Rng } from '../../../core/rng.js';
import { tf } from '../../../core/tf.js';
import type { DropoutContext } from '../../engine/detr/attention.js';
import { setCriterion, type DetrOutputs, type SetCriterionConfig } from '../../engine/detr/criterion.js';
import { DeformableDetr, type DeformableDetrConfig, type DeformableTransformerConfig } from '../../engine/detr/deformable.js';
import { deformableSetCriterion, type DeformableCriterionConfig } from '../../engine/detr/deformable_criterion.js';
import { DetrHead, type DetrHeadConfig } from '../../engine/detr/detr.js';
import type { DetrTarget } from '../../engine/detr/matcher.js';
import type { DetrTransformerConfig } from '../../engine/detr/transformer.js';
import { importStateDict, type TorchTensor } from '../../engine/export.js';
import { clipGradientsByGlobalNorm, disposeGradients, namedGradients } from '../../engine/grads.js';
import { AdamW, excludeNothing, lrMultiplierOf } from '../../engine/optim.js';
import { ParamStore } from '../../engine/params.js';
import type { ResNet } from '../../engine/resnet.js';
import { decodeSafetensors, typedArrayOf } from '../../engine/safetensors.js';
import type { Xyxy } from '../detection/boxes.js';
import { scoreDetections } from '../detection/evaluate.js';
import type { Detection } from '../detection/postprocess.js';
import type { EvalSample } from '../eval-data.js';
import type { EpochCheckpointer } from '../training.js';
import { deformableFinetuneSchema, type DeformableFinetuneConfig, type DetrConfig, type DetrKind } from './config.js';

export interface DetrTaskInput {
  config: DetrConfig;
  seed: number;
  imageSize: number;
  /** Inference batch. */
  batchSize: number;
  classes: string[];
  train: EvalSample[];
  evalSamples: EvalSample[];
  /** A fresh copy of the evaluated backbone (fine-tuned here). */
  loadCopy(): Promise<ResNet>;
  /** The pretraining run's exported detector (safetensors bytes and where they came from), or null. */
  detector: { bytes: Uint8Array; source: string } | null;
  checkpointer?: EpochCheckpointer;
  signal?: AbortSignal;
  onEpoch?(epoch: number, loss: number, seconds: number, extra?: { lr: number; imagesPerSecond: number }): void;
}

export interface DetrTaskOutcome {
  metrics: Record<string, number>;
  perClass: unknown;
  predictions: unknown;
}

/** What an exported detector says about its shape (`detr` metadata: the transformer config, queries, backbone width). */
interface DetectorShape extends DetrTransformerConfig {
  numQueries: number;
  backboneChannels: number;
}

/** The detector's shape: the exported one's, else `evaluation.detr`'s from-scratch sizes. */
export function detrHeadConfig(c: DetrConfig, numClasses: number, backboneChannels: number, exported: DetectorShape | null): DetrHeadConfig {
  const transformer: DetrTransformerConfig = exported
    ? {
        dModel: exported.dModel,
        nHead: exported.nHead,
        numEncoderLayers: exported.numEncoderLayers,
        numDecoderLayers: exported.numDecoderLayers,
        dimFeedforward: exported.dimFeedforward,
        dropout: exported.dropout,
        activation: exported.activation,
        normalizeBefore: exported.normalizeBefore,
        returnIntermediateDec: true,
      }
    : { dModel: c.hiddenDim, nHead: c.nheads, numEncoderLayers: c.encLayers, numDecoderLayers: c.decLayers, dimFeedforward: c.dimFeedforward, dropout: c.dropout, activation: 'relu', normalizeBefore: c.preNorm, returnIntermediateDec: true };
  return { backboneChannels, numClasses, numQueries: exported?.numQueries ?? c.numQueries, auxLoss: true, transformer };
}

/**
 * What a `densepipe.deformable-detr/v1` export (DETReg's `exports.detector`) says about its detector: the transformer
 * config, queries, its pretext classes, the backbone levels' channels (C3..C5) and the variant flags.
 */
export interface DeformableDetectorShape extends DeformableTransformerConfig {
  numQueries: number;
  numClasses: number;
  backboneChannels: number[];
  withBoxRefine: boolean;
  twoStage: boolean;
}

/** Each detector export schema and the metadata entry holding its shape. */
const DETECTOR_SCHEMAS = {
  'densepipe.detr/v1': { kind: 'detr', entry: 'detr' },
  'densepipe.deformable-detr/v1': { kind: 'deformable', entry: 'deformableDetr' },
} as const satisfies Record<string, { kind: DetrKind; entry: string }>;

export type ExportedDetector = { tensors: Map<string, TorchTensor> } & ({ kind: 'detr'; shape: DetectorShape } | { kind: 'deformable'; shape: DeformableDetectorShape });

/** Any detector export (plain or deformable): its kind (from the schema), tensors and shape; IncompatibleArtifactError otherwise. */
export function readDetectorExport(bytes: Uint8Array, source: string): ExportedDetector {
  const { tensors, metadata } = decodeSafetensors(new Uint8Array(bytes), source);
  const schema = DETECTOR_SCHEMAS[metadata.schema as keyof typeof DETECTOR_SCHEMAS] as (typeof DETECTOR_SCHEMAS)[keyof typeof DETECTOR_SCHEMAS] | undefined;
  const json = schema ? metadata[schema.entry] : undefined;
  if (!schema || !json) throw new IncompatibleArtifactError(`not a detector export (schema '${metadata.schema ?? 'none'}'; known: ${Object.keys(DETECTOR_SCHEMAS).join(', ')} with their shape entry)`, source);
  const read = new Map([...tensors].map(([k, t]): [string, TorchTensor] => [k, { shape: t.shape, values: typedArrayOf(t) as ArrayLike<number> }]));
  if (schema.kind === 'detr') return { kind: 'detr', tensors: read, shape: JSON.parse(json) as DetectorShape };
  const shape = JSON.parse(json) as DeformableDetectorShape;
  if (shape.withBoxRefine || shape.twoStage) throw new IncompatibleArtifactError('the deformable detector was exported with box refinement or two-stage, which the engine does not build', source);
  return { kind: 'deformable', tensors: read, shape };
}

/** The exported DETR detector's tensors and shape; IncompatibleArtifactError when it is not one. */
export function readDetector(bytes: Uint8Array, source: string): { tensors: Map<string, TorchTensor>; shape: DetectorShape } {
  const read = readDetectorExport(bytes, source);
  if (read.kind !== 'detr') throw new IncompatibleArtifactError('not a DETR detector export (no densepipe.detr/v1 metadata)', source);
  return { tensors: read.tensors, shape: read.shape };
}

/**
 * The detector a task fine-tunes: with a pretrained detector the export's schema decides (a different `kind` in the
 * config is refused, naming the field), otherwise `kind` (absent = plain DETR).
 */
export function resolveDetrKind(configured: DetrKind | undefined, exported: DetrKind | null, source: string | null): DetrKind {
  if (exported === null) return configured ?? 'detr';
  if (configured && configured !== exported) {
    throw new BadInputError(`'${configured}' was asked for, but the pretrained detector (${source}) is a '${exported}' export; drop kind, or set pretrainedDetector false for a from-scratch arm`, 'evaluation.detr.kind');
  }
  return exported;
}

/** The Deformable DETR's config: the exported one's shape (its classes replaced), else `detr.deformable`'s from-scratch sizes. */
export function deformableDetrConfig(d: DeformableFinetuneConfig, numClasses: number, backboneChannels: readonly number[], exported: DeformableDetectorShape | null): DeformableDetrConfig {
  const transformer: DeformableTransformerConfig = exported
    ? {
        dModel: exported.dModel,
        nHead: exported.nHead,
        numEncoderLayers: exported.numEncoderLayers,
        numDecoderLayers: exported.numDecoderLayers,
        dimFeedforward: exported.dimFeedforward,
        dropout: exported.dropout,
        numFeatureLevels: exported.numFeatureLevels,
        encNPoints: exported.encNPoints,
        decNPoints: exported.decNPoints,
      }
    : { dModel: d.hiddenDim, nHead: d.nheads, numEncoderLayers: d.encLayers, numDecoderLayers: d.decLayers, dimFeedforward: d.dimFeedforward, dropout: d.dropout, numFeatureLevels: d.numFeatureLevels, encNPoints: d.encNPoints, decNPoints: d.decNPoints };
  return { backboneChannels: [...backboneChannels], numClasses, numQueries: exported?.numQueries ?? d.numQueries, auxLoss: true, transformer };
}

/** Which tensors a pretrained deformable detector's fine-tune took from the file, kept fresh, and ignored. */
export interface DetectorLoadReport {
  loaded: string[];
  /** The model's tensors left at their fresh initialisation (class_embed.*). */
  fresh: string[];
  /** The file's tensors not loaded (its class_embed.* and the pretext head feature_embed.*). */
  ignored: string[];
}

/**
 * DETReg main.py --pretrain on a Deformable DETR: every tensor of the file but those whose name holds 'class_embed'
 * (`if 'class_embed' in k: del state_dict[k]`); DETReg's `feature_embed.*` ignored (load_state_dict(strict=False) drops it
 * as unexpected). Stricter than strict=False otherwise: any other missing or unexpected tensor, or a shape that differs,
 * is an IncompatibleArtifactError naming the file.
 */
export function loadPretrainedDeformable(store: ParamStore, tensors: Map<string, TorchTensor>, source: string): DetectorLoadReport {
  const fresh = (name: string) => name.includes('class_embed');
  const pretextOnly = (name: string) => name.startsWith('feature_embed.');
  const wanted = new Map([...tensors].filter(([name]) => !fresh(name) && !pretextOnly(name)));
  importStateDict(store, wanted, { skip: fresh, source });
  return {
    loaded: [...wanted.keys()].sort(),
    fresh: [...store.vars.keys()].filter(fresh).sort(),
    ignored: [...tensors.keys()].filter((name) => fresh(name) || pretextOnly(name)).sort(),
  };
}

/** detr_main.py --pretrain: every head tensor from the file but `class_embed` (strict otherwise), the file's extra heads ignored. */
export function loadPretrainedDetector(store: ParamStore, tensors: Map<string, TorchTensor>, source: string): void {
  const fresh = (name: string) => name.startsWith('class_embed.');
  const wanted = new Map([...tensors].filter(([name]) => store.vars.has(name) && !fresh(name)));
  importStateDict(store, wanted, { skip: fresh, source });
}

/** DETR's training targets: crowd objects and empty boxes dropped, (cx, cy, w, h) normalised by the image side. */
export function detrTargets(s: EvalSample, size: number): DetrTarget {
  const labels: number[] = [];
  const boxes: number[][] = [];
  for (let g = 0; g < s.labels.length; g++) {
    const [x0, y0, x1, y1] = s.boxes.subarray(g * 4, g * 4 + 4);
    if (s.iscrowd[g] || !(x1! > x0! && y1! > y0!)) continue;
    labels.push(s.labels[g]!);
    boxes.push([(x0! + x1!) / 2 / size, (y0! + y1!) / 2 / size, (x1! - x0!) / size, (y1! - y0!) / size]);
  }
  return { labels, boxes };
}

/** `PostProcess`: per query, the best object class (no-object left out) and its softmax probability; xyxy pixels. */
export function detrPostprocess(logits: Float32Array, boxes: Float32Array, queries: number, classes: number, size: number): Detection[][] {
  const k = classes + 1;
  const images = logits.length / (queries * k);
  return Array.from({ length: images }, (_, i) =>
    Array.from({ length: queries }, (_, q) => {
      const base = (i * queries + q) * k;
      let max = -Infinity;
      for (let c = 0; c < k; c++) max = Math.max(max, logits[base + c]!);
      let sum = 0;
      for (let c = 0; c < k; c++) sum += Math.exp(logits[base + c]! - max);
      let label = 0;
      for (let c = 1; c < classes; c++) if (logits[base + c]! > logits[base + label]!) label = c;
      const [cx, cy, w, h] = boxes.subarray((i * queries + q) * 4, (i * queries + q) * 4 + 4);
      const box: Xyxy = [(cx! - w! / 2) * size, (cy! - h! / 2) * size, (cx! + w! / 2) * size, (cy! + h! / 2) * size];
      return { box, label, score: Math.exp(logits[base + label]! - max) / sum };
    }),
  );
}

/**
 * Deformable DETR's `PostProcess` (amirbar/DETReg@a4b6363 models/deformable_detr.py): sigmoid of every (query, class)
 * logit, the top `topK` pairs of the image (fewer when Q · C is smaller; torch.topk(prob.view(B, -1), 100)), each pair's
 * query box (cxcywh → xyxy, × the image side) and class. Highest score first; equal logits keep the lower index first.
 */
export function deformablePostprocess(logits: Float32Array, boxes: Float32Array, queries: number, classes: number, size: number, topK: number): Detection[][] {
  const per = queries * classes;
  const images = logits.length / per;
  const k = Math.min(topK, per);
  return Array.from({ length: images }, (_, i) => {
    const order = Array.from({ length: per }, (_, j) => j).sort((a, b) => logits[i * per + b]! - logits[i * per + a]! || a - b);
    return order.slice(0, k).map((j) => {
      const q = Math.floor(j / classes);
      const [cx, cy, w, h] = boxes.subarray((i * queries + q) * 4, (i * queries + q) * 4 + 4);
      const box: Xyxy = [(cx! - w! / 2) * size, (cy! - h! / 2) * size, (cx! + w! / 2) * size, (cy! + h! / 2) * size];
      return { box, label: j % classes, score: 1 / (1 + Math.exp(-logits[i * per + j]!)) };
    });
  });
}

const batchOf = (samples: EvalSample[], idx: number[], size: number): tf.Tensor4D => {
  const data = new Float32Array(idx.length * size * size * 3);
  idx.forEach((i, j) => data.set(samples[i]!.pixels, j * size * size * 3));
  return tf.tensor4d(data, [idx.length, size, size, 3]);
};

/** What the shared fine-tuning loop (`fineTuneDetector`) needs of a detector: plain DETR, Deformable DETR, Pair DETR. */
export interface TrainableDetector {
  /** Head parameters (the detector but the backbone), the store the task made and disposes. */
  store: ParamStore;
  /** Checkpoint names of the head's tensors are `<name>.<tensor>`. */
  name: string;
  /** Learning rates, the fraction of the epochs after which both drop ×0.1, the per-parameter multiple of the head's rate. */
  lr: number;
  lrBackbone: number;
  lrDropAt: number;
  lrScale?: (name: string) => number;
  /** A training batch's loss, called under the tape; `extras`: named loss terms averaged per epoch (Pair DETR's pair loss). */
  loss(backbone: ResNet, x: tf.Tensor4D, targets: DetrTarget[], ctx: DropoutContext): { total: tf.Scalar; extras?: Record<string, tf.Scalar> };
  /** An eval batch's detections (inference mode). */
  detect(backbone: ResNet, x: tf.Tensor4D): Detection[][];
}

/** A detector's per-image targets for the training split, refusing a split without boxes or a class outside the dataset's. */
export function detectorTargets(t: Pick<DetrTaskInput, 'train' | 'evalSamples' | 'classes' | 'imageSize'>, task: string): DetrTarget[] {
  const targets = t.train.map((s) => detrTargets(s, t.imageSize));
  if (targets.every((x) => x.labels.length === 0)) throw new BadInputError(`${task} needs training samples with boxes (the training split has no objects)`, 'evaluation.tasks');
  for (const s of [...t.train, ...t.evalSamples]) {
    const bad = s.labels.find((l) => !(l >= 0 && l < t.classes.length));
    if (bad !== undefined) throw new BadInputError(`object class ${bad} is outside the dataset's ${t.classes.length} classes`, s.key);
  }
  return targets;
}

export interface FineTunedDetector {
  finalLoss: number;
  /** The last epoch's mean of each `extras` term. */
  finalExtras: Record<string, number>;
  secondsPerEpoch: number;
  evalImagesPerSecond: number;
  scores: ReturnType<typeof scoreDetections>;
}

/**
 * The DETR fine-tuning loop (main.py / engine.py), shared by every DETR-family task: the backbone as DETR's `Backbone`
 * (FrozenBatchNorm2d, conv1 and layer1 frozen, layer2-4 at `lrBackbone`, 0 = frozen); AdamW over every trained
 * parameter with one weight decay (two instances for the two learning rates), gradient norm clipped to `clipMaxNorm`,
 * both rates ×0.1 from `lrDropAt` of the epochs; epoch checkpoints of every weight, both optimizers' moments, the
 * shuffling RNG and the step count; then inference over the eval split, scored with cocoEvaluate (bbox).
 */
export async function fineTuneDetector(
  t: Omit<DetrTaskInput, 'config' | 'detector'>,
  c: Pick<DetrConfig, 'epochs' | 'batchSize' | 'weightDecay' | 'clipMaxNorm'>,
  backbone: ResNet,
  targets: DetrTarget[],
  m: TrainableDetector,
): Promise<FineTunedDetector> {
  const size = t.imageSize;
  const optimizers: AdamW[] = [];
  try {
    const backboneParams = new Map<string, tf.Variable>();
    for (const [name, v] of backbone.params.vars) {
      const role = backbone.params.info.get(name)?.role;
      v.trainable = m.lrBackbone > 0 && /^layer[234]\./.test(name) && role !== 'norm' && role !== 'buffer';
      if (v.trainable) backboneParams.set(`backbone.${name}`, v);
    }
    const headParams = m.store.trainable();
    const headOpt = new AdamW(headParams, { weightDecay: c.weightDecay, noDecay: excludeNothing, ...(m.lrScale ? { lrScale: m.lrScale } : {}) }, m.store.info);
    optimizers.push(headOpt);
    const backboneOpt = backboneParams.size ? new AdamW(backboneParams, { weightDecay: c.weightDecay, noDecay: excludeNothing }) : null;
    if (backboneOpt) optimizers.push(backboneOpt);
    const all = new Map([...backboneParams, ...headParams]);
    const state = () =>
      new Map<string, tf.Variable>([
        ...[...backbone.params.vars].map(([k, v]): [string, tf.Variable] => [`backbone.${k}`, v]),
        ...[...m.store.vars].map(([k, v]): [string, tf.Variable] => [`${m.name}.${k}`, v]),
        ...optimizers.flatMap((o, i) => [...o.slots()].map(([k, v]): [string, tf.Variable] => [`optimizer${i}.${k}`, v])),
      ]);

    const stepsPerEpoch = Math.ceil(t.train.length / c.batchSize);
    const dropEpoch = Math.round(m.lrDropAt * c.epochs);
    // One stream for every DETR-family task: at equal batch sizes they see the same batches.
    const rng = Rng.fromSeed('downstream-detr', t.seed);
    let startEpoch = 0;
    const resume = await t.checkpointer?.load();
    if (resume) {
      resume.restore(state());
      rng.state = resume.rngState;
      for (const o of optimizers) o.loadCounters({ stepCount: resume.stepCount });
      startEpoch = resume.epoch;
    }
    let finalLoss = NaN;
    let finalExtras: Record<string, number> = {};
    const secondsPerEpoch: number[] = [];
    for (let epoch = startEpoch; epoch < c.epochs; epoch++) {
      const t0 = performance.now();
      const scale = epoch >= dropEpoch ? 0.1 : 1;
      const order = rng.shuffle(Array.from({ length: t.train.length }, (_, i) => i));
      let sum = 0;
      const extraSums: Record<string, number> = {};
      for (let s = 0; s < stepsPerEpoch; s++) {
        throwIfAborted(t.signal);
        const idx = order.slice(s * c.batchSize, (s + 1) * c.batchSize);
        const x = batchOf(t.train, idx, size);
        const dropoutRng = Rng.fromSeed('downstream-detr-dropout', t.seed, headOpt.stepCount);
        const kept: Record<string, tf.Scalar> = {};
        const { loss, grads } = namedGradients(() => {
          const out = m.loss(backbone, x, idx.map((i) => targets[i]!), { training: true, rng: dropoutRng });
          for (const [k, v] of Object.entries(out.extras ?? {})) kept[k] = tf.keep(v.clone());
          return out.total;
        }, all);
        const clipped = c.clipMaxNorm > 0 ? clipGradientsByGlobalNorm(grads, c.clipMaxNorm) : { grads, totalNorm: null };
        const pick = (names: Map<string, tf.Variable>) => new Map([...clipped.grads].filter(([k]) => names.has(k)));
        headOpt.step(pick(headParams), m.lr * scale);
        backboneOpt?.step(pick(backboneParams), m.lrBackbone * scale);
        sum += (await loss.data())[0]!;
        for (const [k, v] of Object.entries(kept)) extraSums[k] = (extraSums[k] ?? 0) + v.dataSync()[0]!;
        tf.dispose([x, loss, ...Object.values(kept), ...(clipped.totalNorm ? [clipped.totalNorm] : [])]);
        disposeGradients(clipped.grads);
      }
      finalLoss = sum / stepsPerEpoch;
      finalExtras = Object.fromEntries(Object.entries(extraSums).map(([k, v]) => [k, v / stepsPerEpoch]));
      const seconds = (performance.now() - t0) / 1000;
      secondsPerEpoch.push(seconds);
      await t.checkpointer?.save(epoch + 1, state(), rng.state, headOpt.stepCount);
      t.onEpoch?.(epoch + 1, finalLoss, seconds, { lr: m.lr * scale, imagesPerSecond: t.train.length / Math.max(seconds, 1e-9) });
    }

    const t0 = performance.now();
    const detections: Detection[][] = [];
    for (let start = 0; start < t.evalSamples.length; start += t.batchSize) {
      const idx = Array.from({ length: Math.min(t.batchSize, t.evalSamples.length - start) }, (_, j) => start + j);
      const x = batchOf(t.evalSamples, idx, size);
      try {
        detections.push(...m.detect(backbone, x));
      } finally {
        x.dispose();
      }
    }
    const evalSeconds = (performance.now() - t0) / 1000;
    return {
      finalLoss,
      finalExtras,
      secondsPerEpoch: secondsPerEpoch.length ? secondsPerEpoch.reduce((a, b) => a + b, 0) / secondsPerEpoch.length : NaN,
      evalImagesPerSecond: t.evalSamples.length / Math.max(evalSeconds, 1e-9),
      scores: scoreDetections(t.evalSamples, detections, t.classes, size),
    };
  } finally {
    for (const o of optimizers) o.dispose();
  }
}

/** A detector's metrics under its task's name (`det.AP` → `detr.AP`). */
export function renameDetectionMetrics(metrics: Record<string, number>, task: string): Record<string, number> {
  return Object.fromEntries(Object.entries(metrics).map(([k, v]) => [k.replace(/^det\./, `${task}.`), v]));
}

const noPadding = (n: number, h: number, w: number) => tf.zeros([n, h, w], 'bool') as tf.Tensor3D;

/** Plain DETR on the backbone's last map: softmax classes with no-object, SetCriterion, PostProcess over every query. */
function plainDetr(t: DetrTaskInput, backbone: ResNet, store: ParamStore, exported: { tensors: Map<string, TorchTensor>; shape: DetectorShape } | null): TrainableDetector & { load?: undefined } {
  const c = t.config;
  if (exported && exported.shape.backboneChannels !== backbone.outChannels) {
    throw new IncompatibleArtifactError(`the detector was pretrained on a ${exported.shape.backboneChannels}-channel backbone, the evaluated one has ${backbone.outChannels}`, t.detector!.source);
  }
  const config = detrHeadConfig(c, t.classes.length, backbone.outChannels, exported?.shape ?? null);
  const detr = new DetrHead(store.scope(''), config, `downstream-detr-${t.seed}`);
  if (exported) loadPretrainedDetector(store, exported.tensors, t.detector!.source);
  const criterion: SetCriterionConfig = {
    numClasses: t.classes.length,
    eosCoef: c.eosCoef,
    costs: { costClass: c.costClass, costBbox: c.costBbox, costGiou: c.costGiou },
    weights: { ce: 1, bbox: c.bboxLossCoef, giou: c.giouLossCoef },
  };
  const forward = (net: ResNet, x: tf.Tensor4D, ctx: DropoutContext): DetrOutputs => {
    const features = net.apply(x, { training: false }).dense;
    const [n, h, w] = features.shape;
    return detr.apply(features, noPadding(n, h, w), ctx);
  };
  return {
    store,
    name: 'detr',
    lr: c.lr,
    lrBackbone: c.lrBackbone,
    lrDropAt: c.lrDropAt,
    loss: (net, x, targets, ctx) => ({ total: setCriterion(forward(net, x, ctx), targets, criterion).total }),
    detect: (net, x) => detectWith(forward, net, x, (logits, boxes) => detrPostprocess(logits, boxes, config.numQueries, t.classes.length, t.imageSize)),
  };
}

/** Inference through a DETR-style forward: its logits and boxes read back, then the task's PostProcess. */
function detectWith(
  forward: (net: ResNet, x: tf.Tensor4D, ctx: DropoutContext) => DetrOutputs,
  net: ResNet,
  x: tf.Tensor4D,
  postprocess: (logits: Float32Array, boxes: Float32Array) => Detection[][],
): Detection[][] {
  const [logits, boxes] = tf.tidy(() => {
    const out = forward(net, x, { training: false });
    return [out.predLogits, out.predBoxes];
  });
  try {
    return postprocess(logits.dataSync() as Float32Array, boxes.dataSync() as Float32Array);
  } finally {
    tf.dispose([logits, boxes]);
  }
}

/**
 * Deformable DETR (DETReg's detector) on the backbone's C3..C5: the focal criterion, the reference_points /
 * sampling_offsets rate multiple, top-k sigmoid PostProcess.
 */
function deformableDetr(t: DetrTaskInput, backbone: ResNet, store: ParamStore, exported: { tensors: Map<string, TorchTensor>; shape: DeformableDetectorShape } | null): TrainableDetector & { load?: DetectorLoadReport } {
  const d = t.config.deformable ?? deformableFinetuneSchema.parse({});
  if (backbone.stageChannels.length !== 4) throw new BadInputError(`a Deformable DETR reads the backbone's C3..C5; this ResNet has ${backbone.stageChannels.length} stages`, 'evaluation.backbone.arch');
  const levels = backbone.stageChannels.slice(1, 4);
  if (exported && exported.shape.backboneChannels.join(',') !== levels.join(',')) {
    throw new IncompatibleArtifactError(`the detector was pretrained on backbone levels C3..C5 of [${exported.shape.backboneChannels}] channels, the evaluated backbone's are [${levels}]`, t.detector!.source);
  }
  const config = deformableDetrConfig(d, t.classes.length, levels, exported?.shape ?? null);
  const detector = new DeformableDetr(store.scope(''), config, `downstream-deformable-detr-${t.seed}`);
  const load = exported ? loadPretrainedDeformable(store, exported.tensors, t.detector!.source) : undefined;
  const criterion: DeformableCriterionConfig = {
    numClasses: t.classes.length,
    focalAlpha: d.focalAlpha,
    costs: { costClass: d.costClass, costBbox: d.costBbox, costGiou: d.costGiou },
    weights: { ce: d.clsLossCoef, bbox: d.bboxLossCoef, giou: d.giouLossCoef },
  };
  const forward = (net: ResNet, x: tf.Tensor4D, ctx: DropoutContext): DetrOutputs => {
    const levelMaps = net.apply(x, { training: false }).stages.slice(1, 4);
    const [n, h, w] = x.shape;
    return detector.apply(levelMaps, noPadding(n, h, w), ctx);
  };
  return {
    store,
    name: 'detr',
    lr: d.lr,
    lrBackbone: d.lrBackbone,
    lrDropAt: d.lrDropAt,
    // main.py lr_linear_proj_names × lr_linear_proj_mult.
    lrScale: lrMultiplierOf({ match: ['reference_points', 'sampling_offsets'], scale: d.lrLinearProjMult }),
    // Called under the tape (tf.variableGrads tidies the per-term losses).
    loss: (net, x, targets, ctx) => ({ total: deformableSetCriterion(forward(net, x, ctx), targets, criterion).total }),
    detect: (net, x) => detectWith(forward, net, x, (logits, boxes) => deformablePostprocess(logits, boxes, config.numQueries, t.classes.length, t.imageSize, d.topK)),
    ...(load ? { load } : {}),
  };
}

export async function runDetrTask(t: DetrTaskInput): Promise<DetrTaskOutcome> {
  const c = t.config;
  const targets = detectorTargets(t, 'detr');
  const exported = t.detector && c.pretrainedDetector ? readDetectorExport(t.detector.bytes, t.detector.source) : null;
  const kind = resolveDetrKind(c.kind, exported?.kind ?? null, t.detector?.source ?? null);
  const backbone = await t.loadCopy();
  const head = new ParamStore();
  try {
    const m =
      kind === 'deformable'
        ? deformableDetr(t, backbone, head, exported?.kind === 'deformable' ? exported : null)
        : plainDetr(t, backbone, head, exported?.kind === 'detr' ? exported : null);
    const run = await fineTuneDetector(t, c, backbone, targets, m);
    // The plain path's outputs are as before; the deformable kind adds its flag and what it loaded.
    const extraMetrics: Record<string, number> = kind === 'deformable' ? { 'detr.deformable': 1 } : {};
    const extraInfo = kind === 'deformable' ? { kind, ...(m.load ? { loaded: m.load.loaded.length, fresh: m.load.fresh, ignored: m.load.ignored } : {}) } : {};
    return {
      metrics: {
        ...renameDetectionMetrics(run.scores.metrics, 'detr'),
        'detr.finalLoss': run.finalLoss,
        'detr.secondsPerEpoch': run.secondsPerEpoch,
        'detr.imagesPerSecond': run.evalImagesPerSecond,
        'detr.pretrainedDetector': exported ? 1 : 0,
        ...extraMetrics,
      },
      perClass: { pretrainedDetector: Boolean(exported), ...extraInfo, ...run.scores.perClass },
      predictions: run.scores.predictions,
    };
  } finally {
    head.dispose();
    backbone.dispose();
  }
}
