/**
 * R2O — "Refine and Represent: Region-to-Object Representation Learning", Gokul, Kallidromitis, Li, Kato, Kozuka,
 * Darrell, Reed, 2022, https://arxiv.org/abs/2208.11821.
 * Authors' code: KKallidromitis/r2o@c1a12f7 `model/r2o_model.py` (R2OModel.forward, do_kmeans, handle_flip),
 * `model/basic_modules.py` (MLP, EncoderwithProjection, Predictor), `utils/mask_utils.py` (to_binary_mask, maskpool),
 * `trainer/r2o_trainer.py` (_forward_masked_byol_loss, adjust_learning_rate, adjust_mm), `utils/scheduler.py`
 * (CosineScheduler, get_num_segments), `utils/kmeans/` (torch KMeans), `data/r2o_transform.py` (views, roi_t, SLIC),
 * `config/train_imagenet_300.yaml`.
 *
 * Objects from regions (no gradient, target encoder ξ BEFORE this step's EMA update):
 *   A_b,s     = bilinear(onehot(S_b))  at the C4 grid                 (superpixel s of image b, soft, [h4·w4])
 *   f_b,s     = normalize( A_b,s·F4_b / max(ΣA_b,s, 1) )              (F4 = C4 of the whole-image view)
 *   y_b,s     = kmeans_k( {f_b,s}_{b,s} )                             (all superpixels of the batch jointly, k-means++)
 *   O_b(p)    = ⌊ Σ_s bilinear(onehot(S_b))_s(p) · y_b,s ⌋             (object label map on the mask grid, 56×56)
 *   m^v_b,c   = flip_v( RoIAlign(onehot_k(O_b), box_v·56, h5×w5) )   (object c carried into view v's C5 grid)
 * Embeddings (online θ: projector g_θ, predictor q_θ; target ξ: projector g_ξ):
 *   e^v_b,c   = m^v_b,c·F5^v_b / max(Σ m^v_b,c, 1)                    (mask pooling of C5)
 *   p^v       = q_θ(g_θ(e_θ^v)),   z^v = g_ξ(e_ξ^v)                    (MLP: Linear → BN → ReLU → Linear; BN over 2B·k rows)
 * Loss (symmetric, only objects present in both views):
 *   w_b,c     = [Σ m^1_b,c > 1e-3]·[Σ m^2_b,c > 1e-3]
 *   L         = Σ_{b,c} w_b,c·( ‖p̂^1_b,c − ẑ^2_b,c‖² + ‖p̂^2_b,c − ẑ^1_b,c‖² ) / (2·Σ w_b,c)
 * Schedules: ξ ← m·ξ + (1−m)·θ with m = 1 − (1−m₀)(cos(π t/T)+1)/2; k(e) = ⌊cos(e/E·π/2)(k₀−k₁)+k₁⌋
 *   (k > 128: no k-means, raw superpixels); lr ← lr·k/16 (`lrScale`).
 *
 * Shapes: B batch, S_b superpixel label map of the whole-image view (H×W), M superpixel slots (batch max label + 1),
 * C4/C5 backbone stage widths, h4×w4 C4 grid of the whole-image view, G mask grid (H/4 × W/4, 56×56 at 224),
 * h5×w5 C5 grid of a crop view (RoIAlign output), k clusters (objects), D embedding, H hidden width.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import { VIEW_PRESETS, type ViewSpec } from '../data/augment.js';
import type { ViewGeometry } from '../data/geometry.js';
import { paramsComponent } from '../engine/checkpoint.js';
import { emaUpdate } from '../engine/ema.js';
import { namedGradients } from '../engine/grads.js';
import { MlpHead } from '../engine/heads.js';
import { kmeans } from '../engine/kmeans.js';
import { roiAlignPlan, type RoiBox } from '../engine/ops/roi_align.js';
import type { ParamStore } from '../engine/params.js';
import { cosineMomentum } from '../engine/schedule.js';
import { defineMethod, type BackboneFactory, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { cosineRegression, l2Normalize } from './shared/contrast.js';
import { buildEncoderPair, type Encoder } from './shared/momentum-encoder.js';

export const r2oArgs = z.strictObject({
  baseMomentum: z.number().min(0).lt(1).default(0.99).describe('m₀ of the target EMA, raised to 1 by a cosine over training (`model.base_momentum: 0.99`, trainer adjust_mm)'),
  hiddenDim: z.number().int().min(1).default(4096).describe('H, hidden width of the projector (`model.projection.hidden_dim: 4096`)'),
  predictorHiddenDim: z.number().int().min(1).default(4096).describe('hidden width of the predictor (`model.predictor.hidden_dim: 4096`)'),
  embedDim: z.number().int().min(1).default(256).describe('D, projector/predictor output width (`model.projection.output_dim: 256`)'),
  kStart: z.number().int().min(1).default(128).describe('k at the start of the region-to-object curriculum (`clustering.scheduler.values[0]: 128`); above 128 the raw superpixels are used, no k-means (scheduler.get_num_segments)'),
  kEnd: z.number().int().min(1).default(4).describe('k at the end of the curriculum (`clustering.scheduler.values[1]: 4`)'),
  curriculumEpochs: z.number().int().min(1).default(300).describe('E: the curriculum is a cosine quarter-wave over E equal phases of training, k constant within a phase (`clustering.scheduler.epochs: [0, 300]`, `optimizer.total_epochs: 300`; k is read per epoch)'),
  lrScaleByK: z.number().min(0).default(16).describe('learning rate × k / this at every step; 0 = off (`optimizer.scale_lr_by_k: 16`, trainer adjust_learning_rate)'),
  kmeansMaxIter: z.number().int().min(1).default(200).describe('Lloyd iterations at most (utils/kmeans KMeans `max_iter=200`, the default R2OModel uses)'),
  kmeansEps: z.number().min(0).default(1e-6).describe('k-means stops when the inertia changes by less than this (utils/kmeans KMeans `eps=1e-6`)'),
  maskStride: z.number().int().min(1).default(4).describe('image pixels per cell of the object-mask grid: 224-px whole-image view → 56×56 (r2o_model.py `mask_dim = 56`, `to_binary_mask(..., (56, 56))`)'),
  overlapIndicator: z.boolean().default(true).describe('regress only objects with area > 1e-3 in BOTH views (`data.overlap_indicator: true`)'),
  weightByArea: z.boolean().default(false).describe('weight each object by its mean area in the two views (`data.weight: false`)'),
});
export type R2OArgs = z.infer<typeof r2oArgs>;

/** Above this many clusters the scheduler means "no k-means: raw superpixels" (scheduler.get_num_segments). */
export const RAW_SUPERPIXELS_ABOVE = 128;
/** What get_num_segments returns for "raw superpixels"; the trainer also scales the lr by it. */
export const RAW_SUPERPIXELS_K = 9999;
/** An object counts as present in a view when its mask sums to more than this (`_forward_masked_byol_loss`). */
export const MIN_MASK_AREA = 1e-3;

// ------------------------------------------------------------------------------------------------
// Region-to-object curriculum and learning-rate scale
// ------------------------------------------------------------------------------------------------

/** CosineScheduler(epochs [0, E], values [k₀, k₁]).get_num_segments(epoch). */
export function clusterCount(epoch: number, kStart: number, kEnd: number, epochs: number): number {
  let k: number;
  if (epoch <= 0) k = kStart;
  else if (epoch >= epochs) k = kEnd;
  else {
    let x = (epoch / epochs) * (Math.PI / 2);
    if (kEnd > kStart) x = Math.PI / 2 - x;
    k = Math.cos(x) * (Math.max(kStart, kEnd) - Math.min(kStart, kEnd)) + Math.min(kStart, kEnd);
  }
  k = Math.trunc(k);
  return k > RAW_SUPERPIXELS_ABOVE ? RAW_SUPERPIXELS_K : Math.max(k, 1);
}

/** The curriculum phase ("epoch") of a step: E equal phases over the run. */
export const curriculumEpoch = (step: number, totalSteps: number, epochs: number): number => Math.floor((step * epochs) / totalSteps);

// ------------------------------------------------------------------------------------------------
// Masks (host side: no gradient flows through them)
// ------------------------------------------------------------------------------------------------

/** PyTorch's bilinear source taps for one axis (align_corners=False, no antialias): [i0, i1, λ0, λ1] per output. */
function bilinearTaps(inSize: number, outSize: number): Array<[number, number, number, number]> {
  const scale = inSize / outSize;
  return Array.from({ length: outSize }, (_, o) => {
    const src = Math.max((o + 0.5) * scale - 0.5, 0);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    const i1 = i0 < inSize - 1 ? i0 + 1 : i0;
    const l1 = src - i0;
    return [i0, i1, 1 - l1, l1];
  });
}

/** For every output cell of a bilinear resize, the source pixels and weights (zero weights dropped). */
function bilinearPlan(inH: number, inW: number, outH: number, outW: number): Array<Array<[number, number]>> {
  const ty = bilinearTaps(inH, outH), tx = bilinearTaps(inW, outW);
  const cells: Array<Array<[number, number]>> = [];
  for (const [y0, y1, wy0, wy1] of ty) {
    for (const [x0, x1, wx0, wx1] of tx) {
      const taps: Array<[number, number]> = [];
      for (const [y, wy] of [[y0, wy0], [y1, wy1]] as const) for (const [x, wx] of [[x0, wx0], [x1, wx1]] as const) if (wy * wx !== 0) taps.push([y * inW + x, wy * wx]);
      cells.push(taps);
    }
  }
  return cells;
}

/**
 * `to_binary_mask(S, M, resize_to=(h, w))`: one-hot label maps bilinearly resized, [B, M, h·w], without building the
 * full-resolution one-hot. Label −1 (no region) contributes to no slot.
 */
export function softLabelMasks(labels: readonly Int32Array[], size: [number, number], grid: [number, number], slots: number): Float32Array {
  const [inH, inW] = size, [h, w] = grid;
  const plan = bilinearPlan(inH, inW, h, w);
  const out = new Float32Array(labels.length * slots * h * w);
  labels.forEach((map, b) => {
    plan.forEach((taps, cell) => {
      for (const [pixel, weight] of taps) {
        const s = map[pixel]!;
        if (s >= 0 && s < slots) out[(b * slots + s) * h * w + cell]! += weight;
      }
    });
  });
  return out;
}

/**
 * do_kmeans's label painting: O(p) = ⌊Σ_s soft_s(p)·y_s⌋ (`einsum('bchw,bc->bchw', ...).sum(1).long()`): at a
 * superpixel boundary the cell gets the truncated weighted mean of the cluster ids, which can be a third cluster.
 * (float64 here; 1e-6 absorbs round-off so that Σ weights = 1 does not truncate L to L − 1.)
 */
export function paintObjects(labels: readonly Int32Array[], size: [number, number], grid: [number, number], clusterOf: Int32Array, slots: number): Int32Array {
  const [inH, inW] = size, [h, w] = grid;
  const plan = bilinearPlan(inH, inW, h, w);
  const out = new Int32Array(labels.length * h * w);
  labels.forEach((map, b) => {
    plan.forEach((taps, cell) => {
      let v = 0;
      for (const [pixel, weight] of taps) {
        const s = map[pixel]!;
        if (s >= 0 && s < slots) v += weight * clusterOf[b * slots + s]!;
      }
      out[b * h * w + cell] = Math.floor(v + 1e-6);
    });
  });
  return out;
}

/**
 * A view's crop box on the mask grid: roi_t's (x1, y1, x2, y2) normalised by the original size, × the grid size, in
 * float32 as the official tensors hold it (RoIAlign's adaptive sampling count is ⌈roi size / 7⌉: a box 28.000002 cells
 * tall samples 5 rows per bin where 28 would sample 4).
 */
export function maskGridBox(g: ViewGeometry, grid: [number, number]): [number, number, number, number] {
  const [h, w] = grid;
  const f = (v: number, size: number, cells: number) => Math.fround(Math.fround(v / size) * cells);
  return [f(g.crop[0], g.imageWidth, w), f(g.crop[1], g.imageHeight, h), f(g.crop[2], g.imageWidth, w), f(g.crop[3], g.imageHeight, h)];
}

/**
 * Object masks carried into one view: `handle_flip(roi_align(onehot(O), rois, out))` with torchvision's defaults
 * (spatial scale 1, adaptive sampling, aligned=False), then mirrored when the view was. `objects` is either a painted
 * label map [B, G] (one-hot with `channels` = k) or soft masks [B, channels, G] (raw superpixels). → [B, channels, oh·ow].
 */
export function masksInView(objects: { labels: Int32Array } | { soft: Float32Array }, grid: [number, number], channels: number, geometry: readonly ViewGeometry[], out: [number, number]): Float32Array {
  const [gh, gw] = grid, [oh, ow] = out;
  const b = geometry.length;
  const boxes = geometry.map((g, i): RoiBox => [i, ...maskGridBox(g, grid)]);
  const plan = roiAlignPlan(boxes, [b, gh, gw, 1], { outputSize: [oh, ow], spatialScale: 1, samplingRatio: -1, aligned: false });
  const cells = oh * ow;
  const result = new Float32Array(b * channels * cells);
  for (let e = 0; e < plan.indices.length; e++) {
    const row = plan.indices[e]!; // b·G + pixel
    const k = Math.floor(plan.cells[e]! / cells), cell = plan.cells[e]! % cells;
    const y = Math.floor(cell / ow), x = cell % ow;
    const target = geometry[k]!.flipped ? y * ow + (ow - 1 - x) : cell;
    if ('labels' in objects) {
      const c = objects.labels[row]!;
      if (c >= 0 && c < channels) result[(k * channels + c) * cells + target]! += plan.weights[e]!;
    } else {
      const pixel = row - k * gh * gw;
      for (let c = 0; c < channels; c++) result[(k * channels + c) * cells + target]! += plan.weights[e]! * objects.soft[(k * channels + c) * gh * gw + pixel]!;
    }
  }
  return result;
}

// ------------------------------------------------------------------------------------------------
// Mask pooling, embeddings and loss
// ------------------------------------------------------------------------------------------------

/** `maskpool` / EncoderwithProjection.forward: masks [N, K, hw] / max(area, 1) @ features [N, hw, C] → [N, K, C]. */
export function maskPool(featureMap: tf.Tensor4D, masks: tf.Tensor3D): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, h, w, c] = featureMap.shape;
    const area = tf.sum(masks, 2, true);
    return tf.matMul(tf.div(masks, tf.maximum(area, 1)), tf.reshape(featureMap, [n, h * w, c])) as tf.Tensor3D;
  });
}

/** basic_modules.MLP on [N, K, in]: every (image, object) row through Linear → BN (over all N·K rows) → ReLU → Linear. */
export function applyRows(mlp: MlpHead, x: tf.Tensor3D): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, k, d] = x.shape;
    const y = mlp.apply(tf.reshape(x, [n * k, d]) as tf.Tensor2D, { training: true });
    return tf.reshape(y, [n, k, y.shape[1]]) as tf.Tensor3D;
  });
}

/** Which objects the loss regresses and with what weight: [B, K] (`_forward_masked_byol_loss`). */
export function objectWeights(masks1: tf.Tensor3D, masks2: tf.Tensor3D, o: { overlapIndicator: boolean; weightByArea: boolean }): tf.Tensor2D {
  return tf.tidy(() => {
    const [a1, a2] = [tf.sum(masks1, 2), tf.sum(masks2, 2)];
    let w = o.weightByArea ? tf.div(tf.add(a1, a2), 2) : tf.onesLike(a1);
    if (o.overlapIndicator) w = tf.mul(w, tf.cast(tf.logicalAnd(tf.greater(a1, MIN_MASK_AREA), tf.greater(a2, MIN_MASK_AREA)), 'float32'));
    return w as tf.Tensor2D;
  });
}

/**
 * L = Σ w·(2 − 2cos(p, z)) / Σ w over both directions: p [2B, K, D] (online on views 1, 2), z [2B, K, D] (target on
 * views 2, 1), weights [B, K] repeated for both halves. No object in both views: 0 (the official line would raise).
 */
export function r2oLoss(p: tf.Tensor3D, z: tf.Tensor3D, weights: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const [n, k, d] = p.shape;
    const per = cosineRegression(tf.reshape(p, [n * k, d]) as tf.Tensor2D, tf.reshape(z, [n * k, d]) as tf.Tensor2D); // [2B·K]
    const w = tf.reshape(tf.concat([weights, weights], 0), [n * k]);
    const total = tf.sum(w);
    return tf.div(tf.sum(tf.mul(per, w)), tf.maximum(total, 1e-12)) as tf.Scalar;
  });
}

// ------------------------------------------------------------------------------------------------
// R2O
// ------------------------------------------------------------------------------------------------

/** The online / target projector (`projetion`), under `neck.*`: Linear (no bias: BN follows) → BN → ReLU → Linear. */
const projector = (args: R2OArgs) => (store: ParamStore, prefix: string, inChannels: number, seed: number | string) =>
  new MlpHead(store, prefix, { inDim: inChannels, hiddenDims: [args.hiddenDim], outDim: args.embedDim, batchNorm: true }, seed);

/** Object masks of both crop views for one step. */
export interface ObjectMasks {
  /** k, the number of object channels (or M superpixel slots when k means "raw superpixels"). */
  channels: number;
  /** Cluster of every superpixel slot, [B·M] (empty when raw superpixels). */
  clusterOf: Int32Array;
  /** Painted object label map on the mask grid, [B, G] (empty when raw superpixels). */
  objects: Int32Array;
  grid: [number, number];
}

export class R2O implements MethodInstance<R2OArgs> {
  readonly online: ParamStore;
  readonly target: ParamStore;
  readonly state;
  readonly q: Encoder<MlpHead>;
  readonly k: Encoder<MlpHead>;
  readonly predictor: MlpHead;
  /** Initial k-means centres from the points [N, C4] (default k-means++ on the step's rng); tests inject them. */
  kmeansInit: ((points: tf.Tensor2D, k: number) => tf.Tensor2D) | null = null;

  constructor(
    readonly args: R2OArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, projector(args), seed));
    if (!this.q.backbone.applyStages) throw new BadInputError('R2O clusters C4 features: the backbone must expose its stages (applyStages)', 'pretrain.backbone');
    this.online = this.q.store;
    this.target = this.k.store;
    // Online only, built after the pair is tied (basic_modules.Predictor).
    this.predictor = new MlpHead(this.online, 'predictor', { inDim: args.embedDim, hiddenDims: [args.predictorHiddenDim], outDim: args.embedDim, batchNorm: true }, `${seed}-predictor`);
    this.state = { target: paramsComponent(this.target) };
  }

  /** k of this step (the curriculum). */
  clusters(step: number, totalSteps: number): number {
    const { kStart, kEnd, curriculumEpochs } = this.args;
    return clusterCount(curriculumEpoch(step, totalSteps, curriculumEpochs), kStart, kEnd, curriculumEpochs);
  }

  /** The trainer's lr × k / 16 (adjust_learning_rate): the loop multiplies its scheduled lr by this. */
  lrScale(step: number, totalSteps: number): number {
    return this.args.lrScaleByK > 0 ? this.clusters(step, totalSteps) / this.args.lrScaleByK : 1;
  }

  /**
   * do_kmeans on the whole-image view (view 2): target C4, superpixel pooling, k-means over every superpixel of the
   * batch, labels painted on the mask grid. Call before the EMA update (the official order).
   */
  objectMasks(whole: tf.Tensor4D, regions: readonly Int32Array[], geometry: readonly ViewGeometry[], k: number, rng: Rng): ObjectMasks {
    const { width, height } = geometry[0]!;
    if (geometry.some((g) => g.width !== width || g.height !== height)) throw new Error('R2O: whole-image views of one batch must share a size');
    const size: [number, number] = [height, width];
    const grid: [number, number] = [Math.max(1, Math.floor(height / this.args.maskStride)), Math.max(1, Math.floor(width / this.args.maskStride))];
    const slots = Math.max(1, ...regions.map((r) => r.reduce((m, v) => (v > m ? v : m), -1) + 1)); // M = max label + 1
    if (k > RAW_SUPERPIXELS_ABOVE) return { channels: slots, clusterOf: new Int32Array(0), objects: new Int32Array(0), grid };
    const b = regions.length;
    const points = tf.tidy(() => {
      const c4 = this.k.backbone.applyStages!(whole, { training: true })[2]!; // layer3
      const [, h4, w4] = c4.shape;
      const masks = tf.tensor3d(softLabelMasks(regions, size, [h4, w4], slots), [b, slots, h4 * w4]);
      const pooled = maskPool(c4, masks); // [B, M, C4]
      const flat = tf.reshape(pooled, [b * slots, -1]) as tf.Tensor2D;
      return l2Normalize(flat, 1); // F.normalize
    });
    const kFit = Math.min(k, points.shape[0]); // k-means++ cannot seed more centres than points
    const init = this.kmeansInit ? this.kmeansInit(points, kFit) : 'k-means++';
    const fit = kmeans(points, { k: kFit, init, rng, maxIter: this.args.kmeansMaxIter, eps: this.args.kmeansEps });
    tf.dispose([points, fit.centres, init === 'k-means++' ? [] : init]);
    return { channels: k, clusterOf: fit.labels, objects: paintObjects(regions, size, grid, fit.labels, slots), grid };
  }

  /** The objects as masks on a view's C5 grid, [B, channels, h5·w5]. */
  viewMasks(objects: ObjectMasks, regions: readonly Int32Array[], wholeSize: [number, number], geometry: readonly ViewGeometry[], out: [number, number]): tf.Tensor3D {
    const source = objects.objects.length > 0 ? { labels: objects.objects } : { soft: softLabelMasks(regions, wholeSize, objects.grid, objects.channels) };
    return tf.tensor3d(masksInView(source, objects.grid, objects.channels, geometry, out), [geometry.length, objects.channels, out[0] * out[1]]);
  }

  /** z = g_ξ(pool(ξ(views 2, 1))): [2B, K, D], no gradient. */
  targetEmbeddings(targetMap: tf.Tensor4D, masksInv: tf.Tensor3D): tf.Tensor3D {
    return tf.tidy(() => applyRows(this.k.head, maskPool(targetMap, masksInv)));
  }

  /** The loss from the online C5 maps of views 1, 2 ([2B, h5, w5, C5]): what the tape differentiates. */
  onlineLoss(onlineMap: tf.Tensor4D, masks: tf.Tensor3D, z: tf.Tensor3D, weights: tf.Tensor2D): tf.Scalar {
    return tf.tidy(() => r2oLoss(applyRows(this.predictor, applyRows(this.q.head, maskPool(onlineMap, masks))), z, weights));
  }

  step({ views, geometry, proposals }: MethodBatch, { step, totalSteps, rng, applyGradients }: StepContext): StepResult {
    const [view1, view2, whole] = views;
    if (!view1 || !view2 || !whole || !proposals?.[2]) throw new Error('R2O: needs views 1, 2, the whole-image view and its region maps');
    const regions = proposals[2].map((p, b) => {
      if (!p.regions) throw new BadInputError(`image ${b} has no region label map (proposals preset r2o)`, 'proposals.preset');
      return p.regions;
    });
    const wholeSize: [number, number] = [geometry[2]![0]!.height, geometry[2]![0]!.width];
    // 1. objects from the target encoder as it is before this step's update (do_kmeans runs before _update_target_network).
    const objects = this.objectMasks(whole, regions, geometry[2]!, this.clusters(step, totalSteps), rng);
    // 2. ξ ← m·ξ + (1−m)·θ over parameters (not BN buffers; the predictor has no target twin).
    const m = cosineMomentum(step, this.args.baseMomentum, totalSteps);
    const encoderVars = new Map([...this.online.vars].filter(([name]) => !name.startsWith('predictor.')));
    emaUpdate(this.target.vars, encoderVars, m, 'skip');
    // 3. target on (view 2, view 1) with the swapped masks, no gradient.
    const targetMap = tf.tidy(() => this.k.backbone.apply(tf.concat([view2, view1]), { training: true }));
    const out: [number, number] = [targetMap.shape[1], targetMap.shape[2]];
    const masks1 = this.viewMasks(objects, regions, wholeSize, geometry[0]!, out);
    const masks2 = this.viewMasks(objects, regions, wholeSize, geometry[1]!, out);
    const masks = tf.concat([masks1, masks2]) as tf.Tensor3D;
    const masksInv = tf.concat([masks2, masks1]) as tf.Tensor3D;
    const z = this.targetEmbeddings(targetMap, masksInv);
    const weights = objectWeights(masks1, masks2, this.args);
    // 4. online on (view 1, view 2), loss, gradients of θ (backbone, projector, predictor).
    const { loss, grads } = namedGradients(() => this.onlineLoss(this.q.backbone.apply(tf.concat([view1, view2]), { training: true }), masks, z, weights), this.online.trainable());
    // 5. optimizer (at the loop's lr × lrScale).
    applyGradients(grads);
    const value = loss.dataSync()[0]!;
    tf.dispose([targetMap, masks1, masks2, masks, masksInv, z, weights, loss, ...grads.values()]);
    return { loss: value, parts: {} };
  }

  dispose(): void {
    this.online.dispose();
    this.target.dispose();
  }
}

/**
 * Views as data/r2o_transform.py makes them: two BYOL crops (RandomResizedCrop scale (0.08, 1), bicubic; view 1 always
 * blurred, view 2 rarely blurred and sometimes solarized) and the whole image squashed to a square (no colour ops).
 * Flips: the release passes `slic_segments` (100) positionally as MultiViewDataInjector's `flip_p`, so
 * `torch.rand(1) < 100` mirrors BOTH crops of every image; kept (flipP 1). The whole-image view: scale [1, 1] with
 * any aspect ratio allowed, which sampleResizedCrop answers with the whole image.
 */
export function r2oViews(size: number): ViewSpec[] {
  const [a, b] = VIEW_PRESETS.pixpro(size) as [ViewSpec, ViewSpec];
  return [
    { ...a, interpolation: 'bicubic', flipP: 1 },
    { ...b, interpolation: 'bicubic', flipP: 1 },
    { size, scale: [1, 1], ratio: [0, Infinity], interpolation: 'bicubic', flipP: 0 },
  ];
}

export const r2o = defineMethod({
  name: 'r2o',
  title: 'R2O: BYOL over object masks refined from superpixels by batch k-means, k annealed 128 → 4',
  paper: { citation: 'Gokul, Kallidromitis, Li, Kato, Kozuka, Darrell, Reed. Refine and Represent: Region-to-Object Representation Learning. arXiv 2022', url: 'https://arxiv.org/abs/2208.11821' },
  code: { repo: 'KKallidromitis/r2o', commit: 'c1a12f7' },
  args: r2oArgs,
  consumes: { views: r2oViews, geometry: true, proposals: { kind: 'regions' } },
  // train_imagenet_300.yaml: LARS base_lr 0.3 @256 (× B/256), momentum 0.9, wd 1e-6, cosine, 3 of 300 warm-up epochs,
  // bias and BN excluded; the lr is further × k/16 every step (lrScale).
  optimizer: { kind: 'lars', baseLr: 0.3, momentum: 0.9, weightDecay: 1e-6, warmupFraction: 0.01 },
  smallScale: {
    args: { hiddenDim: 512, predictorHiddenDim: 512, embedDim: 128, kStart: 32 },
    why: 'toy backbones are 64–512 wide and a toy batch holds a few hundred superpixels: 4096-wide heads and 128 objects per batch would be mostly empty rows; k anneals 32 → 4 instead of 128 → 4',
  },
  claims: [
    { metric: 'semseg.mIoU', over: 'mocov2', paper: 'README: PASCAL VOC 77.3 mIoU (IN-1k 300 ep); abstract: SOTA on VOC (+0.7 mIoU) and Cityscapes (+0.4 mIoU)' },
    { metric: 'unsup-seg.mIoU', over: 'mocov2', paper: 'abstract: +2.9 mIoU unsupervised object segmentation on CUB-200-2011' },
  ],
  create: ({ args, backbone, seed }) => new R2O(args, backbone, seed),
});

