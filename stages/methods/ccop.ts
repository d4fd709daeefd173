/**
 * CCOP — "Contrastive Object-level Pre-training with Spatial Noise Curriculum Learning", Yang, Huang, Crowley, 2021,
 * https://arxiv.org/abs/2111.13651.
 * Authors' code: ChenhongyiYang/CCOP@956b952 `openselfsup/models/ccop.py` (CCOP.forward_train, LinearNormNeck,
 * aug_boxes, intra_loss, both enqueues), `openselfsup/models/utils/d2_fpn.py` (FPN), `openselfsup/models/utils/pooler.py`
 * (ROIAlignV2 + assign_boxes_to_levels_soco), `openselfsup/datasets/contrastive_boxes.py` (box pairs across views),
 * `configs/selfsup/ccop/r50_d2.py` (every default below).
 *
 * Loss:  L = L_img + L_roi + L_intra   (weights 1, as the three entries of the official loss dict)
 *   L_img   = −1/B Σ_b log( exp(q_b·k_b/τ_img) / (exp(q_b·k_b/τ_img) + Σ_j exp(q_b·Q_img,j/τ_img)) )
 *   L_roi   = −1/N Σ_r log( exp(u_r·v_r⁺/τ_roi) / (exp(u_r·v_r⁺/τ_roi) + Σ_j exp(u_r·Q_roi,j/τ_roi)) )
 *   L_intra = mean over (a, j) of the same image with IoU(k-box a, k-box j) < 0.05 of  max(0, u_a·v_j − u_j·v_j + 0.4)
 * with
 *   q, k       image embeddings: normalize(MLP(avgpool(C5))) of view 0 (online) and view 1 (momentum encoder)
 *   u_r        RoI embedding of box r in view 0: normalize(MLP(flatten(RoIAlign₇ₓ₇(P_ℓ(r), box_r)))), online
 *   v_j        the same of key box j in view 1 by the momentum encoder (the triplet's anchors)
 *   v_r⁺       the hardest positive of the spatial-noise curriculum: among J jitters of key box r plus the box
 *              itself, the one with the LOWEST u_r·v among those with IoU(jitter, box) ≥ θ(t); jitter
 *              t_xy, t_wh ~ U(−½, ½)·(m_xy(t), m_wh(t)), centre += t_xy·(w, h), size ·= exp(t_wh), clipped to the view;
 *              θ, m_xy, m_wh linear in t = (step+1)/totalSteps: 0.8→0.4, 0.15→0.6, 0.35→1.4. No gradient.
 *   P₂..P₅     FPN (detectron2, BN, sum fusion) on C2..C5; level ℓ(r) by √area: ≤48 → P2, ≤96 → P3, ≤192 → P4,
 *              ≤224 → P5 (in a 224-px view; scaled with the view size here)
 * After the update: Q_img ← k (FIFO); Q_roi ← v⁺ (variable length, truncated at the end of the buffer, not wrapped).
 * Momentum encoder ξ ← m·ξ + (1−m)·θ over FPN, both MLPs and the backbone, before the key forward.
 *
 * Shapes: B batch, S view size (px), C_l stage channels, F FPN channels, P pool size (7), H hidden, D embedding,
 * N boxes in the batch (n_b per image), J jitters, K_img / K_roi queue lengths.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import { boxesIntoView, type Box, type ViewGeometry } from '../data/geometry.js';
import { paramsComponent, queuesComponent } from '../engine/checkpoint.js';
import { BatchNorm, Conv2d, Linear, type ForwardOptions } from '../engine/layers.js';
import { relu } from '../engine/native.js';
import { roiAlign, type RoiBox } from '../engine/ops/roi_align.js';
import { Initializer, type ParamScope, type ParamStore } from '../engine/params.js';
import { MemoryQueue } from '../engine/queue.js';
import { defineMethod, type BackboneFactory, type FeatureBackbone, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { enqueueKeys, l2Normalize, queueInfoNce } from './shared/contrast.js';
import { reinitialize } from './shared/heads.js';
import { buildEncoderPair, encodeShuffled, momentumStep, type Encoder } from './shared/momentum-encoder.js';

const pair = (a: number, b: number) => z.tuple([z.number(), z.number()]).default([a, b]);

/** CCOP's arguments, each default from configs/selfsup/ccop/r50_d2.py or ccop.py at 956b952. */
export const ccopArgs = z.strictObject({
  imgTemperature: z.number().gt(1e-4).default(0.2).describe('τ_img of the image-level InfoNCE (`img_temperature=0.2`, r50_d2.py)'),
  roiTemperature: z.number().gt(1e-4).default(0.2).describe('τ_roi of the RoI-level InfoNCE (`roi_temperature=0.2`, r50_d2.py)'),
  queueSize: z.number().int().min(1).default(65536).describe('K_img, image keys kept as negatives (`img_queue_len=65536`); a multiple of the batch size (ccop.py asserts it)'),
  roiQueueSize: z.number().int().min(1).default(65536).describe('K_roi, RoI keys kept as negatives (`roi_queue_len=65536`); any size: the enqueue is truncated at the end of the buffer'),
  momentum: z.number().min(0).lt(1).default(0.999).describe('m of the momentum encoder (`momentum=0.999`, r50_d2.py); short runs need a faster one, e.g. 0.99'),
  embedDim: z.number().int().min(1).default(128).describe('D, both embeddings (`embed_channels=128` of img_neck_params and roi_neck_params)'),
  hiddenDim: z.number().int().min(1).optional().describe("H of the image MLP; default the backbone's C5 width (`hid_channels=2048` = ResNet-50's C5)"),
  roiHiddenDim: z.number().int().min(1).optional().describe("H of the RoI MLP; default the backbone's C5 width (`hid_channels=2048` in roi_neck_params)"),
  fpnChannels: z.number().int().min(1).default(256).describe('F, FPN output channels (`MODEL.FPN.OUT_CHANNELS = 256`, r50_d2.py)'),
  poolSize: z.number().int().min(1).default(7).describe('P, RoIAlign output bins per side (`pooling_sizes=(7,)`, ROIAlignV2, sampling ratio 0)'),
  assignSizes: z
    .tuple([z.number(), z.number(), z.number(), z.number()])
    .default([48, 96, 192, 224])
    .describe('√area bounds of P2..P5 in a 224-px view (`pooling_assign_sizes=((224, 192, 96, 48),)`); scaled by imageSize/224'),
  dropout: z.number().min(0).lt(1).default(0.1).describe('dropout after the hidden Linear of both MLPs, online and momentum (`LinearNormNeck(dropout_p=0.1)`, ccop.py)'),
  partThreshold: z.number().min(0).max(1).default(0.6).describe('keep a box only if more than this fraction of its area is inside BOTH views (`part_thr=0.6`)'),
  minBoxArea: z.number().min(0).default(144).describe('keep a box only if its area exceeds this in BOTH views, in 224-px view pixels² (`area_thr=144`); scaled by (imageSize/224)²'),
  maxBoxes: z.number().int().min(1).default(100).describe('boxes per image at most (`max_box_num=100`, r50_d2.py)'),
  nJitter: z.number().int().min(1).default(10).describe('J, jittered copies of each key box (`curr_params.n_jitter=10`)'),
  iouThreshold: pair(0.8, 0.4).describe('θ: a jitter is a positive if its IoU with the box ≥ θ, linear from [0] to [1] over training (`curr_params.iou_thr=(0.8, 0.4)`)'),
  jitterXY: pair(0.15, 0.6).describe('m_xy: centre-shift magnitude (fraction of w, h), linear over training (`curr_params.jit_mag[0:2]=(0.15, 0.6)`)'),
  jitterWH: pair(0.35, 1.4).describe('m_wh: log-scale magnitude, linear over training (`curr_params.jit_mag[2:4]=(0.35, 1.4)`)'),
  tripletMargin: z.number().min(0).default(0.4).describe('margin of the intra-image triplet loss (`intra_loss(..., margin=0.4)`, hard-coded in ccop.py)'),
  tripletMaxIou: z.number().min(0).max(1).default(0.05).describe('only box pairs with IoU below this are triplet negatives (`get_iou_mat(x) < 0.05`, hard-coded in ccop.py)'),
  shuffleBnGroups: z
    .number()
    .int()
    .min(1)
    .default(2)
    .describe('emulated GPUs for shuffle-BN (the official run had 8, `_img_batch_shuffle_ddp`); queries and keys normalised per group of B/G; 1 = plain BN'),
});
export type CCOPArgs = z.infer<typeof ccopArgs> & { hiddenDim: number; roiHiddenDim: number };

// ------------------------------------------------------------------------------------------------
// Randomness: jitter uniforms and dropout masks, injectable (the parity test replays PyTorch's)
// ------------------------------------------------------------------------------------------------

/** The neck calls that apply dropout, in the official order. */
export type DropoutSite = 'img_q' | 'roi_q' | 'img_k' | 'roi_k_jit' | 'roi_k_ori';

export interface CcopDraws {
  /** U[0, 1) for image b's jitters: t_xy then t_wh, each [n, J, 2] row-major (aug_boxes' two `torch.rand` calls). */
  jitter(image: number, n: number, nJitter: number): { xy: Float32Array; wh: Float32Array };
  /** Dropout keep-mask (1 kept, 0 dropped) for [rows, cols] activations at one neck call. */
  dropoutKeep(site: DropoutSite, rows: number, cols: number): Float32Array;
}

/** The default draws: everything from the step's Rng. */
export function rngDraws(rng: Rng, dropout: number): CcopDraws {
  const uniforms = (n: number) => Float32Array.from({ length: n }, () => rng.next());
  return {
    jitter: (_image, n, nJitter) => ({ xy: uniforms(n * nJitter * 2), wh: uniforms(n * nJitter * 2) }),
    dropoutKeep: (_site, rows, cols) => Float32Array.from({ length: rows * cols }, () => (rng.next() >= dropout ? 1 : 0)),
  };
}

// ------------------------------------------------------------------------------------------------
// Modules: detectron2 FPN with BN, LinearNormNeck
// ------------------------------------------------------------------------------------------------

/** detectron2 `Conv2d(..., bias=False, norm=BN)`: conv then BatchNorm; c2_xavier_fill (kaiming_uniform a=1). */
class ConvNorm {
  readonly conv: Conv2d;
  readonly norm: BatchNorm;
  constructor(scope: ParamScope, init: Initializer, inChannels: number, outChannels: number, kernelSize: number) {
    this.conv = new Conv2d(scope, init, { inChannels, outChannels, kernelSize, padding: (kernelSize - 1) / 2, bias: false, init: 'kaiming_uniform_a1' });
    this.norm = new BatchNorm(scope.child('norm'), outChannels);
  }
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D {
    return this.norm.apply(this.conv.apply(x), opts);
  }
}

/**
 * d2_fpn.py `FPN(norm='BN', fuse_type='sum')` on C2..C5, names `fpn_lateral{2..5}` / `fpn_output{2..5}` (+ `.norm.*`).
 * Top-down: prev = lateral₅(C5); prev = lateral_l(C_l) + nearest-upsample×2(prev); P_l = output_l(prev).
 * The LastLevelMaxPool P6 is not built: CCOP pools from P2..P5 only.
 */
export class CcopFpn {
  readonly lateral: ConvNorm[] = [];
  readonly output: ConvNorm[] = [];

  constructor(store: ParamStore, prefix: string, inChannels: readonly number[], outChannels: number, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`ccop-fpn:${prefix}:${seed}`);
    inChannels.forEach((c, i) => {
      this.lateral.push(new ConvNorm(scope.child(`fpn_lateral${i + 2}`), init, c, outChannels, 1));
      this.output.push(new ConvNorm(scope.child(`fpn_output${i + 2}`), init, outChannels, outChannels, 3));
    });
  }

  /** C2..C5 [B, h_l, w_l, C_l] → P2..P5 [B, h_l, w_l, F]. */
  apply(stages: tf.Tensor4D[], opts: ForwardOptions): tf.Tensor4D[] {
    const last = this.lateral.length - 1;
    let prev = this.lateral[last]!.apply(stages[last]!, opts);
    const results = [this.output[last]!.apply(prev, opts)];
    for (let l = last - 1; l >= 0; l--) {
      const lateral = this.lateral[l]!.apply(stages[l]!, opts);
      // F.interpolate(scale_factor=2, mode='nearest'): src = floor(dst / 2).
      prev = tf.add(lateral, tf.image.resizeNearestNeighbor(prev, [lateral.shape[1], lateral.shape[2]], false, false));
      results.unshift(this.output[l]!.apply(prev, opts));
    }
    return results;
  }
}

/**
 * ccop.py `LinearNormNeck(num_mlp=1, norm='', last_bn=False)`: Linear(in, H) → Dropout(p) → ReLU → Linear(H, D),
 * names `mlp.linear_1.0.*`, `mlp.last_linear.*`; init_weights('normal'): weights N(0, 0.01), biases 0.
 */
export class LinearNormNeck {
  readonly linear1: Linear;
  readonly last: Linear;

  constructor(store: ParamStore, prefix: string, inDim: number, hidden: number, out: number, seed: number | string) {
    const mlp = store.scope(prefix).child('mlp');
    const init = new Initializer(`ccop-neck:${prefix}:${seed}`);
    this.linear1 = new Linear(mlp.child('linear_1').child(0), init, inDim, hidden);
    this.last = new Linear(mlp.child('last_linear'), init, hidden, out);
    for (const layer of [this.linear1, this.last]) {
      reinitialize(layer.weight, init.normal(layer.weight.shape, 0.01));
      reinitialize(layer.bias!, tf.zeros(layer.bias!.shape));
    }
  }

  /** x [N, in] → [N, D] (not normalised); `keep` [N·H] the dropout keep-mask, or null when p = 0. */
  apply(x: tf.Tensor2D, keep: Float32Array | null, p: number): tf.Tensor2D {
    return tf.tidy(() => {
      let h = this.linear1.apply(x) as tf.Tensor2D;
      if (keep) h = tf.mul(h, tf.tensor2d(keep, h.shape as [number, number]).div(1 - p));
      return this.last.apply(relu(h)) as tf.Tensor2D;
    });
  }
}

export class CcopHead {
  readonly fpn: CcopFpn;
  readonly imgNeck: LinearNormNeck;
  readonly roiNeck: LinearNormNeck;
  constructor(store: ParamStore, prefix: string, stageChannels: readonly number[], args: CCOPArgs, seed: number | string) {
    this.fpn = new CcopFpn(store, `${prefix}.fpn`, stageChannels, args.fpnChannels, seed);
    this.imgNeck = new LinearNormNeck(store, `${prefix}.img_neck`, stageChannels[stageChannels.length - 1]!, args.hiddenDim, args.embedDim, seed);
    this.roiNeck = new LinearNormNeck(store, `${prefix}.roi_neck`, args.fpnChannels * args.poolSize ** 2, args.roiHiddenDim, args.embedDim, seed);
  }
}

// ------------------------------------------------------------------------------------------------
// Boxes: pairs across views, level assignment, RoIAlign, jitter
// ------------------------------------------------------------------------------------------------

/** One image's paired boxes: q[i] in view 0 and k[i] in view 1 are the same proposal. */
export interface BoxPairs {
  q: Box[];
  k: Box[];
}

const area = (b: Box) => (b[2] - b[0]) * (b[3] - b[1]);

export interface PairRules {
  partThreshold: number;
  /** In view pixels² (already scaled to the view size). */
  minArea: number;
  maxBoxes: number;
  /** View size: boxes are clamped to [0, size − 1] at the end, as the dataset does. */
  size: number;
}

const clampBox = (b: Box, max: number): Box => b.map((v) => Math.min(Math.max(v, 0), max)) as Box;

/**
 * contrastive_boxes.py `ScaleInstanceContrastAug`: a proposal is kept when, in BOTH views, more than `partThreshold`
 * of its area is inside the crop and its clipped area exceeds `minArea`; the same boxes in both views, in stored
 * order, at most `maxBoxes`, clamped to [0, size − 1]. `original`: the image's boxes in original pixels.
 */
export function pairBoxesFromOriginal(original: readonly Box[], g0: ViewGeometry, g1: ViewGeometry, rules: PairRules): BoxPairs {
  const v0 = boxesIntoView(g0, original);
  const v1 = boxesIntoView(g1, original);
  const out: BoxPairs = { q: [], k: [] };
  for (let i = 0; i < original.length && out.q.length < rules.maxBoxes; i++) {
    const [a, b] = [v0[i]!, v1[i]!];
    if (!a.box || !b.box || !(a.visibleFraction > rules.partThreshold && b.visibleFraction > rules.partThreshold)) continue;
    if (!(area(a.box) > rules.minArea && area(b.box) > rules.minArea)) continue;
    out.q.push(clampBox(a.box, rules.size - 1));
    out.k.push(clampBox(b.box, rules.size - 1));
  }
  return out;
}

/** Every image's pairs from the batch: its stored boxes (`original`) through both views' geometry. */
export function pairBatchBoxes(batch: MethodBatch, rules: PairRules): BoxPairs[] {
  if (!batch.proposals || batch.proposals.length < 2) throw new BadInputError('CCOP needs box proposals in both views', 'inputs.proposals');
  const [g0, g1] = [batch.geometry[0]!, batch.geometry[1]!];
  return batch.proposals[0]!.map((p, b) => pairBoxesFromOriginal(p.original, g0[b]!, g1[b]!, rules));
}

/**
 * pooler.py `assign_boxes_to_levels_soco`: the first level whose bound ≥ √area (bounds ascending, P2..P5); a box
 * above every bound goes to P2 (the official default 0; it cannot happen for boxes inside the view).
 */
export function assignLevels(boxes: readonly Box[], bounds: readonly number[]): number[] {
  return boxes.map((b) => {
    const size = Math.sqrt(area(b));
    let level = 0;
    for (let l = bounds.length - 1; l >= 0; l--) if (size <= bounds[l]!) level = l;
    return level;
  });
}

/**
 * ROIPooler(ROIAlignV2: aligned, adaptive sampling) + MultiPooler(flatten): per-level RoIAlign, back in box order,
 * flattened in PyTorch's (F, P, P) order. pyramid P2..P5 [B, h_l, w_l, F], rois [batch, x0, y0, x1, y1] → [N, F·P·P].
 */
export function poolRois(pyramid: tf.Tensor4D[], rois: RoiBox[], levels: number[], scales: number[], poolSize: number): tf.Tensor2D {
  return tf.tidy(() => {
    const f = pyramid[0]!.shape[3];
    if (rois.length === 0) return tf.zeros([0, f * poolSize * poolSize]) as tf.Tensor2D;
    const parts: tf.Tensor4D[] = [];
    const order: number[] = [];
    pyramid.forEach((map, l) => {
      const idx = rois.map((_, i) => i).filter((i) => levels[i] === l);
      if (idx.length === 0) return;
      parts.push(roiAlign(map, idx.map((i) => rois[i]!), { outputSize: poolSize, spatialScale: scales[l]!, samplingRatio: 0, aligned: true }));
      order.push(...idx);
    });
    const position = new Int32Array(rois.length);
    order.forEach((roi, pos) => (position[roi] = pos));
    const pooled = tf.gather(tf.concat(parts, 0), tf.tensor1d(position, 'int32')); // [N, P, P, F]
    return tf.reshape(tf.transpose(pooled, [0, 3, 1, 2]), [rois.length, f * poolSize * poolSize]) as tf.Tensor2D;
  });
}

function iou(a: Box, b: Box): number {
  const w = Math.max(Math.min(a[2], b[2]) - Math.max(a[0], b[0]), 0);
  const h = Math.max(Math.min(a[3], b[3]) - Math.max(a[1], b[1]), 0);
  const inter = w * h;
  return inter / (area(a) + area(b) - inter);
}

/**
 * ccop.py `aug_boxes(append_ori=True)`: J jitters of each box then the box itself ([n·(J+1)] boxes, box-major), and
 * which are not positives (IoU with the box < θ). Coordinates clamped to [0, width] × [0, height].
 */
export function jitterBoxes(boxes: readonly Box[], u: { xy: Float32Array; wh: Float32Array }, nJitter: number, magXY: number, magWH: number, width: number, height: number, iouThreshold: number): { boxes: Box[]; invalid: boolean[] } {
  const out: Box[] = [];
  const invalid: boolean[] = [];
  const f = Math.fround;
  boxes.forEach((b, i) => {
    const [x, y, w, h] = [(b[0] + b[2]) * 0.5, (b[1] + b[3]) * 0.5, b[2] - b[0], b[3] - b[1]];
    for (let j = 0; j < nJitter; j++) {
      const o = (i * nJitter + j) * 2;
      const [tx, ty] = [(u.xy[o]! - 0.5) * magXY, (u.xy[o + 1]! - 0.5) * magXY];
      const [tw, th] = [(u.wh[o]! - 0.5) * magWH, (u.wh[o + 1]! - 0.5) * magWH];
      const [cx, cy, jw, jh] = [w * tx + x, h * ty + y, Math.exp(tw) * w, Math.exp(th) * h];
      const clampX = (v: number) => f(Math.min(Math.max(v, 0), width));
      const clampY = (v: number) => f(Math.min(Math.max(v, 0), height));
      const jb: Box = [clampX(cx - 0.5 * jw), clampY(cy - 0.5 * jh), clampX(cx + 0.5 * jw), clampY(cy + 0.5 * jh)];
      out.push(jb);
      invalid.push(iou(b, jb) < iouThreshold);
    }
    out.push([...b] as Box);
    invalid.push(iou(b, b) < iouThreshold);
  });
  return { boxes: out, invalid };
}

const linear = ([a, b]: readonly [number, number], t: number) => a + t * (b - a);

/** θ, m_xy, m_wh at training progress t = iter/total_step, iter counted from 1 (forward_train increments it first). */
export function curriculum(args: Pick<CCOPArgs, 'iouThreshold' | 'jitterXY' | 'jitterWH'>, step: number, totalSteps: number): { iouThreshold: number; magXY: number; magWH: number } {
  const t = (step + 1) / totalSteps;
  return { iouThreshold: linear(args.iouThreshold, t), magXY: linear(args.jitterXY, t), magWH: linear(args.jitterWH, t) };
}

/** ccop.py `_roi_dequeue_and_enqueue`: write keys at the pointer, drop those past the end, pointer mod K. */
export function enqueueTruncated(queue: MemoryQueue, keys: tf.Tensor2D): void {
  const [n, d] = keys.shape;
  const ptr = queue.pointer;
  const valid = Math.min(n, queue.size - ptr);
  if (valid > 0) {
    const next = tf.tidy(() => {
      const parts: tf.Tensor2D[] = [];
      if (ptr > 0) parts.push(tf.slice(queue.buffer as tf.Tensor2D, [0, 0], [ptr, d]));
      parts.push(tf.slice(keys, [0, 0], [valid, d]));
      if (ptr + valid < queue.size) parts.push(tf.slice(queue.buffer as tf.Tensor2D, [ptr + valid, 0], [queue.size - ptr - valid, d]));
      return tf.concat(parts, 0);
    });
    queue.buffer.assign(next);
    next.dispose();
  }
  queue.pointer = (ptr + valid) % queue.size;
}

/**
 * intra_loss: for each image, S = u·vᵀ over its boxes, mean of ReLU(S_aj − S_jj + margin) over the pairs whose KEY
 * boxes have IoU < maxIou. Null when no pair qualifies (the official mean of nothing is NaN).
 */
export function intraImageTriplet(u: tf.Tensor2D, v: tf.Tensor2D, kBoxes: readonly Box[][], margin: number, maxIou: number): tf.Scalar | null {
  const [a, j]: [number[], number[]] = [[], []];
  let offset = 0;
  for (const boxes of kBoxes) {
    for (let r = 0; r < boxes.length; r++) for (let c = 0; c < boxes.length; c++) if (iou(boxes[r]!, boxes[c]!) < maxIou) (a.push(offset + r), j.push(offset + c));
    offset += boxes.length;
  }
  if (a.length === 0) return null;
  return tf.tidy(() => {
    const [ai, ji] = [tf.tensor1d(a, 'int32'), tf.tensor1d(j, 'int32')];
    const vj = tf.gather(v, ji);
    const sAj = tf.sum(tf.mul(tf.gather(u, ai), vj), 1);
    const sJj = tf.sum(tf.mul(tf.gather(u, ji), vj), 1);
    return tf.mean(tf.relu(tf.add(tf.sub(sAj, sJj), margin))) as tf.Scalar;
  });
}

// ------------------------------------------------------------------------------------------------
// CCOP
// ------------------------------------------------------------------------------------------------

interface CcopKeys extends Record<string, tf.Tensor> {
  /** k [B, D] */
  img: tf.Tensor2D;
  /** v of every jitter and the box itself [N·(J+1), D] */
  roiJit: tf.Tensor2D;
  /** v of the key boxes [N, D] (the triplet's anchors) */
  roiOri: tf.Tensor2D;
}

export class CCOP implements MethodInstance<CCOPArgs> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly queues: { img: MemoryQueue; roi: MemoryQueue };
  readonly state;
  readonly q: Encoder<CcopHead>;
  readonly k: Encoder<CcopHead>;
  /** Where the step's randomness comes from (the parity test replays PyTorch's draws). */
  draws: (rng: Rng, dropout: number) => CcopDraws = rngDraws;
  /** Where the step's box pairs come from (the parity test injects them). */
  boxPairs: (batch: MethodBatch) => BoxPairs[];

  constructor(
    readonly args: CCOPArgs,
    backboneFactory: BackboneFactory,
    seed: number,
    readonly imageSize: number,
  ) {
    const head = (store: ParamStore, prefix: string, _c: number, s: number | string, b: FeatureBackbone) => {
      const channels = b.stageChannels;
      if (!channels || channels.length !== 4 || !b.applyStages) {
        throw new BadInputError('CCOP needs a backbone with four stages C2..C5 (applyStages, stageChannels)', 'backbone');
      }
      return new CcopHead(store, prefix, channels, args, s);
    };
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, head, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    this.queues = { img: new MemoryQueue(args.queueSize, args.embedDim, seed, 'img_queue'), roi: new MemoryQueue(args.roiQueueSize, args.embedDim, seed, 'roi_queue') };
    this.state = { momentum: paramsComponent(this.momentumEncoder), queues: queuesComponent([this.queues.img, this.queues.roi]) };
    const scale = imageSize / 224;
    this.boxPairs = (batch) => pairBatchBoxes(batch, { partThreshold: args.partThreshold, minArea: args.minBoxArea * scale * scale, maxBoxes: args.maxBoxes, size: imageSize });
  }

  /** √area bounds of P2..P5 in this view size. */
  private get assignBounds(): number[] {
    return this.args.assignSizes.map((s) => (s * this.imageSize) / 224);
  }

  /** 1/stride of P2..P5: from the backbone's stride when it has one, else from the map sizes. */
  private levelScales(pyramid: tf.Tensor4D[]): number[] {
    const stride = this.q.backbone.stride;
    const last = pyramid.length - 1;
    return pyramid.map((p, l) => (stride ? 2 ** (last - l) / stride : p.shape[2] / this.imageSize));
  }

  /** RoI embeddings normalize(MLP(pool(P, boxes))) [N, D] of boxes given per image. */
  private embedRois(head: CcopHead, pyramid: tf.Tensor4D[], boxes: readonly Box[][], keep: (rows: number) => Float32Array | null): tf.Tensor2D {
    const rois: RoiBox[] = boxes.flatMap((bs, b) => bs.map((x): RoiBox => [b, ...x]));
    const flat = boxes.flat();
    const pooled = poolRois(pyramid, rois, assignLevels(flat, this.assignBounds), this.levelScales(pyramid), this.args.poolSize);
    return l2Normalize(head.roiNeck.apply(pooled, keep(rois.length), this.args.dropout), 1);
  }

  /** Query from view 0, keys from view 1 (forward_train). */
  step(batch: MethodBatch, { step, totalSteps, rng, applyGradients }: StepContext): StepResult {
    const a = this.args;
    const [view0, view1] = batch.views;
    const groups = a.shuffleBnGroups;
    const draws = this.draws(rng, a.dropout);
    const keep = (site: DropoutSite, cols: number) => (rows: number) => (a.dropout > 0 ? draws.dropoutKeep(site, rows, cols) : null);
    const pairs = this.boxPairs(batch);
    const qBoxes = pairs.map((p) => p.q);
    const kBoxes = pairs.map((p) => p.k);
    const counts = kBoxes.map((b) => b.length);
    const n = counts.reduce((s, c) => s + c, 0);
    const J = a.nJitter;
    const cur = curriculum(a, step, totalSteps);
    const jitter = kBoxes.map((boxes, b) => jitterBoxes(boxes, draws.jitter(b, boxes.length, J), J, cur.magXY, cur.magWH, this.imageSize, this.imageSize, cur.iouThreshold));
    const invalid = jitter.flatMap((x) => x.invalid);
    const { img: imgQueue, roi: roiQueue } = this.queues;
    let positives: tf.Tensor2D | null = null;

    const result = momentumStep<CcopKeys>(
      {
        online: this.online,
        momentumEncoder: this.momentumEncoder,
        momentum: a.momentum,
        encodeKeys: () => {
          const { img, ...pyramid } = encodeShuffled(view1!, groups, rng, (x, opts) => {
            const stages = this.k.backbone.applyStages!(x, opts);
            const p = this.k.head.fpn.apply(stages, opts);
            const c5 = tf.mean(stages[stages.length - 1]!, [1, 2]) as tf.Tensor2D;
            const k = l2Normalize(this.k.head.imgNeck.apply(c5, keep('img_k', a.hiddenDim)(c5.shape[0]), a.dropout), 1);
            return { img: k, p2: p[0]!, p3: p[1]!, p4: p[2]!, p5: p[3]! };
          });
          const levels = [pyramid.p2, pyramid.p3, pyramid.p4, pyramid.p5] as tf.Tensor4D[];
          return {
            img,
            roiJit: this.embedRois(this.k.head, levels, jitter.map((x) => x.boxes), keep('roi_k_jit', a.roiHiddenDim)),
            roiOri: this.embedRois(this.k.head, levels, kBoxes, keep('roi_k_ori', a.roiHiddenDim)),
          };
        },
        loss: (keys) => {
          const opts = { training: true, bnGroups: groups };
          const stages = this.q.backbone.applyStages!(view0!, opts);
          const pyramid = this.q.head.fpn.apply(stages, opts);
          const c5 = tf.mean(stages[stages.length - 1]!, [1, 2]) as tf.Tensor2D;
          const q = l2Normalize(this.q.head.imgNeck.apply(c5, keep('img_q', a.hiddenDim)(c5.shape[0]), a.dropout), 1);
          const img = queueInfoNce(q, keys.img, imgQueue.buffer as tf.Tensor2D, a.imgTemperature);
          if (n === 0) {
            // No box in the batch: L_roi and L_intra are 0 (the official means over nothing are NaN).
            positives = tf.keep(tf.zeros([0, a.embedDim]) as tf.Tensor2D);
            const [roi, intra] = [tf.scalar(0), tf.scalar(0)];
            return { loss: tf.addN([img, roi, intra]) as tf.Scalar, parts: { img, roi, intra } };
          }
          const u = this.embedRois(this.q.head, pyramid, qBoxes, keep('roi_q', a.roiHiddenDim)); // [N, D]
          // The hardest positive: the lowest u·v among the valid jitters (+5 on invalid ones), no gradient.
          const vJit = tf.reshape(keys.roiJit, [n, J + 1, a.embedDim]);
          const sims = tf.sum(tf.mul(tf.expandDims(u, 1), vJit), 2).arraySync() as number[][];
          const chosen = sims.map((row, r) => {
            let best = 0;
            row.forEach((s, j) => {
              if (s + (invalid[r * (J + 1) + j] ? 5 : 0) < row[best]! + (invalid[r * (J + 1) + best] ? 5 : 0)) best = j;
            });
            return r * (J + 1) + best;
          });
          const vPos = tf.gather(keys.roiJit, tf.tensor1d(chosen, 'int32')) as tf.Tensor2D;
          positives = tf.keep(vPos);
          const roi = queueInfoNce(u, vPos, roiQueue.buffer as tf.Tensor2D, a.roiTemperature);
          const intra = intraImageTriplet(u, keys.roiOri, kBoxes, a.tripletMargin, a.tripletMaxIou) ?? tf.scalar(0);
          return { loss: tf.addN([img, roi, intra]) as tf.Scalar, parts: { img, roi, intra } };
        },
        afterStep: (keys) => {
          enqueueKeys(imgQueue, keys.img);
          if (positives) enqueueTruncated(roiQueue, positives);
        },
      },
      applyGradients,
    );
    (positives as tf.Tensor2D | null)?.dispose();
    return result;
  }

  dispose(): void {
    this.online.dispose();
    this.momentumEncoder.dispose();
    this.queues.img.dispose();
    this.queues.roi.dispose();
  }
}

/** Both views alike (r50_d2.py): RRC scale (0.1, 1), flip, CJ(0.4, 0.4, 0.2, 0.1) p 0.8, gray 0.2, blur p 0.5. */
function ccopViews(size: number) {
  const v = {
    size,
    scale: [0.1, 1] as [number, number],
    ratio: [3 / 4, 4 / 3] as [number, number],
    flipP: 0.5,
    colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, p: 0.8 },
    grayscaleP: 0.2,
    blur: { p: 0.5, sigma: [0.1 * (size / 224), 2.0 * (size / 224)] as [number, number] },
  };
  return [v, { ...v }];
}

export const ccop = defineMethod({
  name: 'ccop',
  title: 'CCOP: image + RoI InfoNCE on selective-search boxes, intra-image triplet, box-jitter curriculum (FPN, RoIAlign)',
  paper: { citation: 'Yang, Huang, Crowley. Contrastive Object-level Pre-training with Spatial Noise Curriculum Learning. arXiv 2111.13651, 2021', url: 'https://arxiv.org/abs/2111.13651' },
  code: { repo: 'ChenhongyiYang/CCOP', commit: '956b952' },
  args: ccopArgs,
  // 2: each view's crop redrawn against the boxes (contrastive_boxes.py max_try), as the official dataset does.
  version: '2',
  consumes: {
    views: ccopViews,
    geometry: true,
    // View 0's boxes more than 0.6 visible (part_thr); the cross-view rules are applied in the step (pairBatchBoxes).
    // contrastive_boxes.py: each view's crop redrawn up to max_try 10 times for ≥ min_box_num 1 box > part_thr 0.6 inside.
    proposals: { kind: 'boxes', boxes: { minVisible: 0.6, minSize: 0, maxPerView: 100 }, cropRetry: { maxTries: 10, minBoxes: 1, minVisible: 0.6 } },
  },
  // r50_d2.py: SGD lr 0.3 at 32 × 8 GPUs = 256, momentum 0.9, wd 1e-4, cosine to 0, linear warm-up 10 of 800 epochs.
  optimizer: { kind: 'sgd', baseLr: 0.3, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 10 / 800 },
  smallScale: {
    args: { queueSize: 1024, roiQueueSize: 4096, momentum: 0.99, fpnChannels: 32 },
    why: 'queues sized to the toy datasets and a faster momentum encoder, as MoCo v2 (docs/EXPERIMENTS.md §1); 32 FPN channels so the RoI MLP input (F·7·7) stays small',
  },
  claims: [
    {
      metric: 'semseg.mIoU',
      over: 'mocov2',
      paper: '"improves on the MoCo v2 baseline by a large margin on multiple object-level tasks" (abstract; COCO pretraining, detection/instance segmentation; no number in abstract or README)',
    },
  ],
  validate: (args, { batchSize }) => {
    if (args.queueSize % batchSize !== 0) throw new BadInputError(`${args.queueSize} must be a multiple of the batch size ${batchSize}`, 'args.queueSize');
    if (batchSize % args.shuffleBnGroups !== 0) throw new BadInputError(`${args.shuffleBnGroups} groups must divide the batch size ${batchSize}`, 'args.shuffleBnGroups');
  },
  create: ({ args, backbone, backboneChannels, seed, imageSize }) =>
    new CCOP({ ...args, hiddenDim: args.hiddenDim ?? backboneChannels, roiHiddenDim: args.roiHiddenDim ?? backboneChannels }, backbone, seed, imageSize),
});
