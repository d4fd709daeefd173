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
 * Scaled down: no augmentation (the images are the eval stage's squares, unpadded), epochs of this split.
 * Epoch checkpoints hold every weight, both optimizers' moments, the shuffling RNG and the step count, so a retried
 * attempt resumes at the next epoch and ends with the same numbers (dropout masks are a function of (seed, step)).
 */
import { BadInputError, IncompatibleArtifactError, throwIfAborted } from '../../../core/errors.js';
import { Rng } from '../../../core/rng.js';
import { tf } from '../../../core/tf.js';
import { setCriterion, type SetCriterionConfig } from '../../engine/detr/criterion.js';
import { DetrHead, type DetrHeadConfig } from '../../engine/detr/detr.js';
import type { DetrTarget } from '../../engine/detr/matcher.js';
import type { DetrTransformerConfig } from '../../engine/detr/transformer.js';
import { importStateDict, type TorchTensor } from '../../engine/export.js';
import { clipGradientsByGlobalNorm, disposeGradients, namedGradients } from '../../engine/grads.js';
import { AdamW, excludeNothing } from '../../engine/optim.js';
import { ParamStore } from '../../engine/params.js';
import type { ResNet } from '../../engine/resnet.js';
import { decodeSafetensors, typedArrayOf } from '../../engine/safetensors.js';
import type { Xyxy } from '../detection/boxes.js';
import { scoreDetections } from '../detection/evaluate.js';
import type { Detection } from '../detection/postprocess.js';
import type { EvalSample } from '../eval-data.js';
import type { EpochCheckpointer } from '../training.js';
import type { DetrConfig } from './config.js';

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

/** The exported detector's tensors and shape; IncompatibleArtifactError when it is not one. */
export function readDetector(bytes: Uint8Array, source: string): { tensors: Map<string, TorchTensor>; shape: DetectorShape } {
  const { tensors, metadata } = decodeSafetensors(new Uint8Array(bytes), source);
  if (metadata.schema !== 'densepipe.detr/v1' || !metadata.detr) throw new IncompatibleArtifactError('not a DETR detector export (no densepipe.detr/v1 metadata)', source);
  const shape = JSON.parse(metadata.detr) as DetectorShape;
  return { tensors: new Map([...tensors].map(([k, t]) => [k, { shape: t.shape, values: typedArrayOf(t) as ArrayLike<number> }])), shape };
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

const batchOf = (samples: EvalSample[], idx: number[], size: number): tf.Tensor4D => {
  const data = new Float32Array(idx.length * size * size * 3);
  idx.forEach((i, j) => data.set(samples[i]!.pixels, j * size * size * 3));
  return tf.tensor4d(data, [idx.length, size, size, 3]);
};

export async function runDetrTask(t: DetrTaskInput): Promise<DetrTaskOutcome> {
  const c = t.config;
  const size = t.imageSize;
  const targets = t.train.map((s) => detrTargets(s, size));
  if (targets.every((x) => x.labels.length === 0)) throw new BadInputError('detr needs training samples with boxes (the training split has no objects)', 'evaluation.tasks');
  for (const s of [...t.train, ...t.evalSamples]) {
    const bad = s.labels.find((l) => !(l >= 0 && l < t.classes.length));
    if (bad !== undefined) throw new BadInputError(`object class ${bad} is outside the dataset's ${t.classes.length} classes`, s.key);
  }
  const exported = t.detector && c.pretrainedDetector ? readDetector(t.detector.bytes, t.detector.source) : null;
  const backbone = await t.loadCopy();
  const head = new ParamStore();
  const optimizers: AdamW[] = [];
  try {
    if (exported && exported.shape.backboneChannels !== backbone.outChannels) {
      throw new IncompatibleArtifactError(`the detector was pretrained on a ${exported.shape.backboneChannels}-channel backbone, the evaluated one has ${backbone.outChannels}`, t.detector!.source);
    }
    const config = detrHeadConfig(c, t.classes.length, backbone.outChannels, exported?.shape ?? null);
    const detr = new DetrHead(head.scope(''), config, `downstream-detr-${t.seed}`);
    if (exported) loadPretrainedDetector(head, exported.tensors, t.detector!.source);
    // models/backbone.py: FrozenBatchNorm2d (buffers only); only layer2-4 train, and only with lr_backbone > 0.
    const backboneParams = new Map<string, tf.Variable>();
    for (const [name, v] of backbone.params.vars) {
      const role = backbone.params.info.get(name)?.role;
      v.trainable = c.lrBackbone > 0 && /^layer[234]\./.test(name) && role !== 'norm' && role !== 'buffer';
      if (v.trainable) backboneParams.set(`backbone.${name}`, v);
    }
    const headParams = head.trainable();
    // main.py's param groups: one AdamW, every parameter decayed; two instances here for the two learning rates.
    const headOpt = new AdamW(headParams, { weightDecay: c.weightDecay, noDecay: excludeNothing }, head.info);
    optimizers.push(headOpt);
    const backboneOpt = backboneParams.size ? new AdamW(backboneParams, { weightDecay: c.weightDecay, noDecay: excludeNothing }) : null;
    if (backboneOpt) optimizers.push(backboneOpt);
    const criterion: SetCriterionConfig = {
      numClasses: t.classes.length,
      eosCoef: c.eosCoef,
      costs: { costClass: c.costClass, costBbox: c.costBbox, costGiou: c.costGiou },
      weights: { ce: 1, bbox: c.bboxLossCoef, giou: c.giouLossCoef },
    };
    const all = new Map([...backboneParams, ...headParams]);
    const state = () =>
      new Map<string, tf.Variable>([
        ...[...backbone.params.vars].map(([k, v]): [string, tf.Variable] => [`backbone.${k}`, v]),
        ...[...head.vars].map(([k, v]): [string, tf.Variable] => [`detr.${k}`, v]),
        ...optimizers.flatMap((o, i) => [...o.slots()].map(([k, v]): [string, tf.Variable] => [`optimizer${i}.${k}`, v])),
      ]);

    const stepsPerEpoch = Math.ceil(t.train.length / c.batchSize);
    const dropEpoch = Math.round(c.lrDropAt * c.epochs);
    const rng = Rng.fromSeed('downstream-detr', t.seed);
    let startEpoch = 0;
    const resume = await t.checkpointer?.load();
    if (resume) {
      resume.restore(state());
      rng.state = resume.rngState;
      for (const o of optimizers) o.loadCounters({ stepCount: resume.stepCount });
      startEpoch = resume.epoch;
    }
    const mask = (n: number, h: number, w: number) => tf.zeros([n, h, w], 'bool') as tf.Tensor3D;
    let finalLoss = NaN;
    const secondsPerEpoch: number[] = [];
    for (let epoch = startEpoch; epoch < c.epochs; epoch++) {
      const t0 = performance.now();
      const scale = epoch >= dropEpoch ? 0.1 : 1;
      const order = rng.shuffle(Array.from({ length: t.train.length }, (_, i) => i));
      let sum = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
        throwIfAborted(t.signal);
        const idx = order.slice(s * c.batchSize, (s + 1) * c.batchSize);
        const x = batchOf(t.train, idx, size);
        const dropoutRng = Rng.fromSeed('downstream-detr-dropout', t.seed, headOpt.stepCount);
        const { loss, grads } = namedGradients(() => {
          const features = backbone.apply(x, { training: false }).dense;
          const [n, h, w] = features.shape;
          const out = detr.apply(features, mask(n, h, w), { training: true, rng: dropoutRng });
          return setCriterion(out, idx.map((i) => targets[i]!), criterion).total;
        }, all);
        const clipped = c.clipMaxNorm > 0 ? clipGradientsByGlobalNorm(grads, c.clipMaxNorm) : { grads, totalNorm: null };
        const pick = (names: Map<string, tf.Variable>) => new Map([...clipped.grads].filter(([k]) => names.has(k)));
        headOpt.step(pick(headParams), c.lr * scale);
        backboneOpt?.step(pick(backboneParams), c.lrBackbone * scale);
        sum += (await loss.data())[0]!;
        tf.dispose([x, loss, ...(clipped.totalNorm ? [clipped.totalNorm] : [])]);
        disposeGradients(clipped.grads);
      }
      finalLoss = sum / stepsPerEpoch;
      const seconds = (performance.now() - t0) / 1000;
      secondsPerEpoch.push(seconds);
      await t.checkpointer?.save(epoch + 1, state(), rng.state, headOpt.stepCount);
      t.onEpoch?.(epoch + 1, finalLoss, seconds, { lr: c.lr * scale, imagesPerSecond: t.train.length / Math.max(seconds, 1e-9) });
    }

    const t0 = performance.now();
    const detections: Detection[][] = [];
    for (let start = 0; start < t.evalSamples.length; start += t.batchSize) {
      const idx = Array.from({ length: Math.min(t.batchSize, t.evalSamples.length - start) }, (_, j) => start + j);
      const [logits, boxes] = tf.tidy(() => {
        const features = backbone.apply(batchOf(t.evalSamples, idx, size), { training: false }).dense;
        const [n, h, w] = features.shape;
        const out = detr.apply(features, mask(n, h, w), { training: false });
        return [out.predLogits, out.predBoxes];
      });
      detections.push(...detrPostprocess(logits.dataSync() as Float32Array, boxes.dataSync() as Float32Array, config.numQueries, t.classes.length, size));
      tf.dispose([logits, boxes]);
    }
    const evalSeconds = (performance.now() - t0) / 1000;
    const scores = scoreDetections(t.evalSamples, detections, t.classes, size);
    const metrics = Object.fromEntries(Object.entries(scores.metrics).map(([k, v]) => [k.replace(/^det\./, 'detr.'), v]));
    return {
      metrics: {
        ...metrics,
        'detr.finalLoss': finalLoss,
        'detr.secondsPerEpoch': secondsPerEpoch.length ? secondsPerEpoch.reduce((a, b) => a + b, 0) / secondsPerEpoch.length : NaN,
        'detr.imagesPerSecond': t.evalSamples.length / Math.max(evalSeconds, 1e-9),
        'detr.pretrainedDetector': exported ? 1 : 0,
      },
      perClass: { pretrainedDetector: Boolean(exported), ...scores.perClass },
      predictions: scores.predictions,
    };
  } finally {
    for (const o of optimizers) o.dispose();
    head.dispose();
    backbone.dispose();
  }
}
