/**
 * DenseSiam — "Dense Siamese Network for Dense Unsupervised Learning", Zhang, Pang, Chen, Loy, ECCV 2022,
 * https://arxiv.org/abs/2203.11075.
 * Authors' code: ZwwWayne/DenseSiam@99f8ce1 `densesiam/models/architectures/densesiam.py` (DenseSimSiam: forward_train,
 * kernel_contrast, CESimilarity, HardCESimilarity), `densesiam/models/architectures/picie.py` (FPNDecoder),
 * `densesiam/datasets/pipelines/index_transforms.py` (ReplayRandomResizedCrop, ReplayRandomHorizontalTensorFlip),
 * `densesiam/datasets/cluster_replay_dataset.py` (the two views), `densesiam/engine/hooks/loss_weight_updater.py`
 * (LossWeightStepUpdateHook), `configs/densesiam/densesiam_r18_fpn_aux_seg-rebalance_4x64_sgd-fix-10e_coco-curated.py`
 * (every default below). No negative pixels, no momentum encoder: one Siamese network, stop-gradient on the targets.
 *
 * Views (PiCIE-style exact correspondence): view 0 = a square crop of the image (side ∈ [½, 1]) resized to S and flipped
 * with p ½; view 1 = the whole image resized to S. The crop and flip of view 0 are REPLAYED on view 1's feature map:
 *   f¹ = D(E(x⁰))                         [B, h, w, F]  decoder map of the crop view
 *   f² = R(D(E(x¹)); g⁰, g¹)              [B, h, w, F]  view 1's map, cropped to view 0's box + bilinear resize + flip
 * (R = `replayOnFeatures`: crop + F.interpolate(align_corners=False) + flip, from the two ViewGeometry; so f¹ and f² are
 * the same pixels of the image.) D = FPN decoder (1×1 laterals to F, bilinear upsample-add, stride of C2).
 *
 * Loss:  L = w_pix·L_pix + w_aux·L_aux + w_reg(t)·L_reg + w_seg·L_seg
 *   z^v = g(f^v) [B,h,w,K] (BN, no affine, last),  p^v = q(z^v);  z̃^v, p̃^v the same with the aux heads (K_aux classes)
 *   CE(p, z)  = mean over pixels of −Σ_k softmax(z)_k · log_softmax(p)_k                         (CESimilarity)
 *   L_pix     = ½ [CE(p¹, sg z²) + CE(p², sg z¹)];   L_aux = ½ [CE(p̃¹, sg z̃²) + CE(p̃², sg z̃¹)]
 *   w_pix     = log K_aux / (log K + log K_aux),  w_aux = log K / (log K + log K_aux)           ('auto')
 *   c^v_n     = Σ_pixels softmax(z^v)_n · f^v     [B, K, F]  region embeddings (un-normalised sums)
 *   u^v = ĝ(c^v), r^v = q̂(u^v), û = u/‖u‖, r̂ = r/‖r‖  (kernel projector / predictor, BN over the B·K rows of one view)
 *   L_reg     = −½ [ mean_{b,n} log softmax_m(r̂¹_bn·û²_bm / τ)_n + mean_{b,n} log softmax_m(r̂²_bn·û¹_bm / τ)_n ]
 *               (InfoNCE between the K regions of the two views of the SAME image, positives on the diagonal, no sg)
 *   w_reg(t)  = 0.1 · [t ≥ 0.8·T]   (released: ×0 for epochs 0–7, ×1 for epochs 8–9 of 10)
 *   L_seg     = ½ [H(z¹) + H(z²)],  H(z) = mean over pixels of −ω_y · log_softmax(z)_y,  y = argmax z (no gradient),
 *               ω_k = (pixels labelled k) / (all pixels)                                        (HardCESimilarity, rebalance)
 *
 * Shapes: B batch, S view size, C2..C5 backbone stages, h×w decoder map (C2's grid), F decoder width (128),
 * K classes (27), K_aux aux classes (128), τ RegionSim temperature (0.1).
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { ViewSpec } from '../data/augment.js';
import { boxViewToView, gridCellCenters, viewToView, type ViewGeometry } from '../data/geometry.js';
import { namedGradients } from '../engine/grads.js';
import { BatchNorm, Conv2d, Linear, type ForwardOptions } from '../engine/layers.js';
import { relu } from '../engine/native.js';
import { Initializer, ParamStore, type ParamScope } from '../engine/params.js';
import { defineMethod, type BackboneFactory, type FeatureBackbone, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { l2Normalize } from './shared/contrast.js';

/** DenseSiam's arguments, each default from the released config (densesiam_r18_fpn_aux_seg-rebalance_…py) or densesiam.py. */
export const densesiamArgs = z.strictObject({
  decoderChannels: z.number().int().min(1).default(128).describe('F, width of the FPN decoder and of the projector/predictor hidden layers (`out_channels=128`, `hid_channels=128`)'),
  numClasses: z.number().int().min(2).default(27).describe('K, channels of the PixSim projector output = regions of RegionSim = self-labelling classes (`num_classes=27`)'),
  auxClasses: z.number().int().min(2).default(128).describe('K_aux, channels of the auxiliary PixSim head (`num_aux_classes=128`)'),
  projectorConvs: z.number().int().min(0).default(2).describe('1×1 conv-BN-ReLU blocks before the last conv of the PixSim projector (`num_proj_convs=2`)'),
  auxProjectorConvs: z.number().int().min(0).default(2).describe('the same for the aux projector (`num_aux_proj_convs=2`)'),
  kernelProjectorLayers: z.number().int().min(0).default(2).describe('Linear-BN-ReLU blocks before the last Linear of the RegionSim projector (`num_kernel_proj_convs=2`, densesiam.py default)'),
  auxWeight: z
    .union([z.literal('auto'), z.number().min(0)])
    .default('auto')
    .describe("weight of L_aux; 'auto' = log K / (log K + log K_aux) and then w_pix = log K_aux / (log K + log K_aux) (`loss_aux_weight='auto'`)"),
  pixsimWeight: z.number().min(0).default(1).describe("weight of L_pix when auxWeight is a number (`loss_simsiam_weight=1.0`; overwritten by 'auto')"),
  regionWeight: z.number().min(0).default(0.1).describe('weight of RegionSim once it is on (`loss_kernel_cross_weight=0.1`)'),
  regionStartFraction: z
    .number()
    .min(0)
    .max(1)
    .default(0.8)
    .describe('RegionSim weight is 0 before this fraction of the run, then regionWeight (LossWeightStepUpdateHook steps [8, 10], gammas [0, 1] of 10 epochs)'),
  regionTemperature: z.number().gt(1e-4).default(0.1).describe('τ of the RegionSim InfoNCE (`kernel_temp=0.1`)'),
  segWeight: z.number().min(0).default(1).describe('weight of the self-labelling loss L_seg; 0 = off (`loss_seg_weight=1.0`)'),
  rebalanceSeg: z.boolean().default(true).describe('weight each pseudo-label class by its pixel frequency in L_seg (`rebalance_seg=True`)'),
});
export type DenseSiamArgs = z.infer<typeof densesiamArgs>;

/** The loss weights as the official constructor sets them ('auto' overwrites both PixSim weights). */
export function lossWeights(a: DenseSiamArgs): { pix: number; aux: number } {
  if (a.auxWeight !== 'auto') return { pix: a.pixsimWeight, aux: a.auxWeight };
  const [logAux, logSim] = [Math.log(a.auxClasses), Math.log(a.numClasses)];
  return { pix: logAux / (logAux + logSim), aux: logSim / (logAux + logSim) };
}

/** w_reg at a step: the release's epoch step schedule as a fraction of the run. */
export function regionWeightAt(a: Pick<DenseSiamArgs, 'regionWeight' | 'regionStartFraction'>, step: number, totalSteps: number): number {
  return step >= a.regionStartFraction * totalSteps ? a.regionWeight : 0;
}

// ------------------------------------------------------------------------------------------------
// Bilinear resampling (F.interpolate, align_corners=False) as separable interpolation matrices
// ------------------------------------------------------------------------------------------------

/**
 * Rows of PyTorch's linear interpolation (align_corners=False) sampling `size` cells at `positions` (cell-index
 * units, clamped to [0, size−1]; the upper neighbour clamped to the last cell): [positions.length, size].
 */
export function interpolationRows(positions: readonly number[], size: number): Float32Array {
  const m = new Float32Array(positions.length * size);
  positions.forEach((pos, o) => {
    const p = Math.min(Math.max(pos, 0), size - 1);
    const i0 = Math.floor(p);
    const l = p - i0;
    m[o * size + i0]! += 1 - l;
    m[o * size + Math.min(i0 + 1, size - 1)]! += l;
  });
  return m;
}

/** F.interpolate(size=out, mode='bilinear', align_corners=False) source positions: max(0, (o + ½)·in/out − ½). */
export function upsamplePositions(inSize: number, outSize: number): number[] {
  return Array.from({ length: outSize }, (_, o) => Math.max(0, ((o + 0.5) * inSize) / outSize - 0.5));
}

/**
 * x [B, h, w, C] resampled by per-image row matrices ry [B, H, h] and column matrices rx [B, W, w] → [B, H, W, C]:
 * y_b = ry_b · x_b · rx_bᵀ per channel, as two batched matMuls (exact gradients; no gather).
 */
export function separableResample(x: tf.Tensor4D, ry: tf.Tensor3D, rx: tf.Tensor3D): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    const [H, W] = [ry.shape[1], rx.shape[1]];
    const rows = tf.reshape(tf.matMul(ry, tf.reshape(x, [b, h, w * c])), [b, H, w, c]); // [B, H, w, C]
    const byCol = tf.reshape(tf.transpose(rows, [0, 2, 1, 3]), [b, w, H * c]); // [B, w, H·C]
    return tf.transpose(tf.reshape(tf.matMul(rx, byCol), [b, W, H, c]), [0, 2, 1, 3]) as tf.Tensor4D;
  });
}

/** Bilinear upsampling of a whole batch to [H, W] (FPNDecoder.upsample_add's F.interpolate). */
function upsampleBilinear(x: tf.Tensor4D, H: number, W: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w] = x.shape;
    const ry = tf.tile(tf.tensor3d(interpolationRows(upsamplePositions(h, H), h), [1, H, h]), [b, 1, 1]) as tf.Tensor3D;
    const rx = tf.tile(tf.tensor3d(interpolationRows(upsamplePositions(w, W), w), [1, W, w]), [b, 1, 1]) as tf.Tensor3D;
    return separableResample(x, ry, rx);
  });
}

/**
 * The replay of view 0's crop + flip on view 1's feature map (ReplayRandomResizedCrop + ReplayRandomHorizontalTensorFlip
 * on `feats_v2`), per image, from the two geometries: output cell (r, c) of view 0's h0×w0 grid samples view 1's
 * h1×w1 map at the point of the image that cell's centre shows (`viewToView`), in cell units (centre of cell i = i);
 * as F.interpolate on the cropped map, positions are clamped to the crop's cells [a, b − 1] and to the map. With a
 * crop on whole cells this is exactly the official crop → interpolate → flip. Returns ry [B, h0, h1], rx [B, w0, w1].
 */
export function replayMatrices(g0: readonly ViewGeometry[], g1: readonly ViewGeometry[], grid0: [number, number], grid1: [number, number]): { ry: Float32Array; rx: Float32Array } {
  const [h0, w0] = grid0;
  const [h1, w1] = grid1;
  const ry = new Float32Array(g0.length * h0 * h1);
  const rx = new Float32Array(g0.length * w0 * w1);
  g0.forEach((a, b) => {
    const v = g1[b]!;
    const centres = gridCellCenters(a, w0, h0).map((p) => viewToView(a, v, p)); // view-1 pixels, row-major
    const box = boxViewToView(a, v, [0, 0, a.width, a.height]); // view 0's crop in view-1 pixels
    const [sx, sy] = [w1 / v.width, h1 / v.height]; // cells per view-1 pixel
    const clampTo = (p: number, lo: number, hi: number) => Math.min(Math.max(p, lo), Math.max(lo, hi - 1));
    const xs = centres.slice(0, w0).map(([x]) => clampTo(x * sx - 0.5, box[0] * sx, box[2] * sx));
    const ys = Array.from({ length: h0 }, (_, r) => clampTo(centres[r * w0]![1] * sy - 0.5, box[1] * sy, box[3] * sy));
    ry.set(interpolationRows(ys, h1), b * h0 * h1);
    rx.set(interpolationRows(xs, w1), b * w0 * w1);
  });
  return { ry, rx };
}

/** f² = R(f; g⁰, g¹): view 1's map [B, h1, w1, F] replayed onto view 0's grid [h0, w0]. */
export function replayOnFeatures(f: tf.Tensor4D, g0: readonly ViewGeometry[], g1: readonly ViewGeometry[], grid0: [number, number]): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h1, w1] = f.shape;
    const { ry, rx } = replayMatrices(g0, g1, grid0, [h1, w1]);
    return separableResample(f, tf.tensor3d(ry, [b, grid0[0], h1]), tf.tensor3d(rx, [b, grid0[1], w1]));
  });
}

// ------------------------------------------------------------------------------------------------
// Modules: FPNDecoder, 1×1-conv heads (projector / predictor), Linear heads (kernel projector / predictor)
// ------------------------------------------------------------------------------------------------

/** picie.py FPNDecoder: 1×1 laterals `layer1` (C5) … `layer4` (C2) to F, o = up(o) + lateral, output on C2's grid. */
export class FpnDecoder {
  readonly laterals: Conv2d[];
  constructor(scope: ParamScope, init: Initializer, stageChannels: readonly number[], channels: number) {
    // layer1 ← res5, layer2 ← res4, layer3 ← res3, layer4 ← res2; nn.Conv2d default init, with bias.
    this.laterals = [3, 2, 1, 0].map((s, i) => new Conv2d(scope.child(`layer${i + 1}`), init, { inChannels: stageChannels[s]!, outChannels: channels, kernelSize: 1, padding: 0, bias: true, init: 'torch_default' }));
  }

  /** C2..C5 → [B, h2, w2, F]. */
  apply(stages: tf.Tensor4D[]): tf.Tensor4D {
    return tf.tidy(() => {
      let o = this.laterals[0]!.apply(stages[3]!);
      for (let i = 1; i < 4; i++) {
        const lateral = this.laterals[i]!.apply(stages[3 - i]!);
        o = tf.add(upsampleBilinear(o, lateral.shape[1], lateral.shape[2]), lateral);
      }
      return o;
    });
  }
}

type Layer = { kind: 'conv'; conv: Conv2d } | { kind: 'linear'; linear: Linear } | { kind: 'bn'; bn: BatchNorm } | { kind: 'relu' };

/**
 * An nn.Sequential of 1×1 convs (or Linears) with BN and ReLU, indices as in PyTorch (ReLU takes an index):
 * `blocks` × [layer(no bias), BN, ReLU] then layer(in → out, `lastBias`) and, if `lastBn`, BN(out, affine=False).
 */
export class Stack {
  readonly layers: Layer[] = [];
  constructor(scope: ParamScope, init: Initializer, kind: 'conv' | 'linear', dims: { in: number; hidden: number; out: number; blocks: number }, last: { bias: boolean; bn: boolean }) {
    const make = (i: number, inC: number, outC: number, bias: boolean): Layer =>
      kind === 'conv'
        ? { kind, conv: new Conv2d(scope.child(i), init, { inChannels: inC, outChannels: outC, kernelSize: 1, padding: 0, bias, init: 'torch_default' }) }
        : { kind, linear: new Linear(scope.child(i), init, inC, outC, { bias }) };
    let c = dims.in;
    for (let k = 0; k < dims.blocks; k++) {
      this.layers.push(make(this.layers.length, c, dims.hidden, false));
      this.layers.push({ kind: 'bn', bn: new BatchNorm(scope.child(this.layers.length), dims.hidden) });
      this.layers.push({ kind: 'relu' });
      c = dims.hidden;
    }
    this.layers.push(make(this.layers.length, c, dims.out, last.bias));
    if (last.bn) this.layers.push({ kind: 'bn', bn: new BatchNorm(scope.child(this.layers.length), dims.out, { affine: false }) });
  }

  apply<T extends tf.Tensor>(x: T, opts: ForwardOptions): T {
    let y: tf.Tensor = x;
    for (const l of this.layers) {
      if (l.kind === 'conv') y = l.conv.apply(y as tf.Tensor4D);
      else if (l.kind === 'linear') y = l.linear.apply(y);
      else if (l.kind === 'bn') y = l.bn.apply(y, opts);
      else y = relu(y);
    }
    return y as T;
  }
}

/** Every module of DenseSimSiam but the backbone, under `neck.*` with the official names. */
export class DenseSiamHead {
  readonly decoder: FpnDecoder;
  readonly projector: Stack;
  readonly predictor: Stack;
  readonly auxProjector: Stack;
  readonly auxPredictor: Stack;
  readonly kernelProjector: Stack;
  readonly kernelPredictor: Stack;

  constructor(store: ParamStore, prefix: string, stageChannels: readonly number[], a: DenseSiamArgs, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`densesiam:${prefix}:${seed}`);
    const F = a.decoderChannels;
    this.decoder = new FpnDecoder(scope.child('decoder'), init, stageChannels, F);
    // projector: [conv(F,F,no bias)-BN-ReLU]×n, conv(F→K, bias), BN(K, affine=False); predictor: conv-BN-ReLU, conv(→K, bias)
    this.projector = new Stack(scope.child('projector'), init, 'conv', { in: F, hidden: F, out: a.numClasses, blocks: a.projectorConvs }, { bias: true, bn: true });
    this.predictor = new Stack(scope.child('predictor'), init, 'conv', { in: a.numClasses, hidden: F, out: a.numClasses, blocks: 1 }, { bias: true, bn: false });
    this.auxProjector = new Stack(scope.child('aux_projector'), init, 'conv', { in: F, hidden: F, out: a.auxClasses, blocks: a.auxProjectorConvs }, { bias: true, bn: true });
    this.auxPredictor = new Stack(scope.child('aux_predictor'), init, 'conv', { in: a.auxClasses, hidden: F, out: a.auxClasses, blocks: 1 }, { bias: true, bn: false });
    // kernel projector: [Linear(no bias)-BN1d-ReLU]×n, Linear(no bias), BN1d(affine=False); predictor Linear-BN-ReLU-Linear(bias)
    this.kernelProjector = new Stack(scope.child('kernel_projector'), init, 'linear', { in: F, hidden: F, out: F, blocks: a.kernelProjectorLayers }, { bias: false, bn: true });
    this.kernelPredictor = new Stack(scope.child('kernel_predictor'), init, 'linear', { in: F, hidden: F, out: F, blocks: 1 }, { bias: true, bn: false });
  }
}

// ------------------------------------------------------------------------------------------------
// Losses
// ------------------------------------------------------------------------------------------------

/** Identity forward, zero gradient (`.detach()`). */
const detach = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const x = args[0] as tf.Tensor;
  return { value: tf.clone(x), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
}) as <T extends tf.Tensor>(x: T) => T;

/** CESimilarity averaged over pixels: mean of −Σ_k softmax(z)_k·log_softmax(p)_k, channels last. */
export function ceSimilarity(p: tf.Tensor4D, zTarget: tf.Tensor4D): tf.Scalar {
  return tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(tf.softmax(zTarget), tf.logSoftmax(p)), -1))) as tf.Scalar);
}

/**
 * HardCESimilarity(z, z.detach(), rebalance) averaged over pixels: y = argmax z, ω_k = count_k / Σ count (when
 * rebalancing), mean of −ω_y·log_softmax(z)_y. Labels and ω are constants (read back: argmax has no gradient).
 */
export function selfLabellingLoss(z: tf.Tensor4D, rebalance: boolean): tf.Scalar {
  const k = z.shape[3];
  const labels = tf.tidy(() => tf.argMax(z, 3).dataSync() as Int32Array);
  const counts = new Float32Array(k);
  for (const y of labels) counts[y]! += 1;
  const weight = rebalance ? counts.map((c) => c / labels.length) : counts.map(() => 1);
  const target = new Float32Array(labels.length * k); // one-hot times ω_y
  labels.forEach((y, i) => (target[i * k + y] = weight[y]!));
  return tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(tf.tensor4d(target, z.shape), tf.logSoftmax(z)), -1))) as tf.Scalar);
}

/** kernel_contrast: region embeddings c^v = softmax(z^v)ᵀ·f^v, heads, InfoNCE with diagonal positives (unweighted). */
export function regionSimLoss(head: DenseSiamHead, f1: tf.Tensor4D, f2: tf.Tensor4D, z1: tf.Tensor4D, z2: tf.Tensor4D, temperature: number, opts: ForwardOptions): tf.Scalar {
  return tf.tidy(() => {
    const [b, h, w, F] = f1.shape;
    const k = z1.shape[3];
    const centres = (f: tf.Tensor4D, z: tf.Tensor4D) => tf.reshape(tf.matMul(tf.reshape(tf.softmax(z), [b, h * w, k]), tf.reshape(f, [b, h * w, F]), true, false), [b * k, F]);
    const [c1, c2] = [centres(f1, z1), centres(f2, z2)]; // [B·K, F]
    const u1 = head.kernelProjector.apply(c1, opts);
    const u2 = head.kernelProjector.apply(c2, opts);
    const r1 = head.kernelPredictor.apply(u1, opts);
    const r2 = head.kernelPredictor.apply(u2, opts);
    const unit = (x: tf.Tensor) => tf.reshape(l2Normalize(x, 1), [b, k, F]) as tf.Tensor3D;
    const eye = tf.eye(k);
    const diagonalLogProb = (r: tf.Tensor3D, u: tf.Tensor3D) => tf.mean(tf.sum(tf.mul(tf.logSoftmax(tf.div(tf.matMul(r, u, false, true), temperature)), eye), -1)); // [B, K] → mean
    return tf.mul(tf.add(diagonalLogProb(unit(r1), unit(u2)), diagonalLogProb(unit(r2), unit(u1))), -0.5) as tf.Scalar;
  });
}

export interface DenseSiamLoss {
  loss: tf.Scalar;
  /** The weighted terms, as the official loss dict: loss_simsiam, loss_kernel_cross, loss_seg, loss_aux. */
  parts: { pixsim: tf.Scalar; regionsim: tf.Scalar; seg: tf.Scalar; aux: tf.Scalar };
}

/**
 * forward_train from the two views' backbone stages: view 0 (the crop) and view 1 (the whole image, replayed onto
 * view 0's grid). Module calls in the official order (BN running statistics follow it).
 */
export function denseSiamLoss(head: DenseSiamHead, a: DenseSiamArgs, stages0: tf.Tensor4D[], stages1: tf.Tensor4D[], g0: readonly ViewGeometry[], g1: readonly ViewGeometry[], regionWeight: number): DenseSiamLoss {
  const opts = { training: true };
  const w = lossWeights(a);
  const f1 = head.decoder.apply(stages0); // [B, h, w, F]
  const z1 = head.projector.apply(f1, opts);
  const p1 = head.predictor.apply(z1, opts);
  const f2 = replayOnFeatures(head.decoder.apply(stages1), g0, g1, [f1.shape[1], f1.shape[2]]);
  const z2 = head.projector.apply(f2, opts);
  const p2 = head.predictor.apply(z2, opts);
  const pixsim = tf.mul(tf.mul(tf.add(ceSimilarity(p1, detach(z2)), ceSimilarity(p2, detach(z1))), 0.5), w.pix) as tf.Scalar;
  const regionsim = tf.mul(regionSimLoss(head, f1, f2, z1, z2, a.regionTemperature, opts), regionWeight) as tf.Scalar;
  const seg = a.segWeight > 0 ? (tf.mul(tf.mul(tf.add(selfLabellingLoss(z1, a.rebalanceSeg), selfLabellingLoss(z2, a.rebalanceSeg)), 0.5), a.segWeight) as tf.Scalar) : tf.scalar(0);
  const az1 = head.auxProjector.apply(f1, opts);
  const ap1 = head.auxPredictor.apply(az1, opts);
  const az2 = head.auxProjector.apply(f2, opts);
  const ap2 = head.auxPredictor.apply(az2, opts);
  const aux = tf.mul(tf.mul(tf.add(ceSimilarity(ap1, detach(az2)), ceSimilarity(ap2, detach(az1))), 0.5), w.aux) as tf.Scalar;
  return { loss: tf.addN([pixsim, regionsim, seg, aux]) as tf.Scalar, parts: { pixsim, regionsim, seg, aux } };
}

// ------------------------------------------------------------------------------------------------
// DenseSiam
// ------------------------------------------------------------------------------------------------

export class DenseSiam implements MethodInstance<DenseSiamArgs> {
  readonly online = new ParamStore();
  readonly backbone: FeatureBackbone;
  readonly head: DenseSiamHead;
  readonly state = {};

  constructor(
    readonly args: DenseSiamArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    this.backbone = backboneFactory(this.online, 'backbone', seed);
    const channels = this.backbone.stageChannels;
    if (!channels || channels.length !== 4 || !this.backbone.applyStages) {
      throw new BadInputError('DenseSiam needs a backbone with four stages C2..C5 (applyStages, stageChannels) for its FPN decoder', 'backbone');
    }
    this.head = new DenseSiamHead(this.online, 'neck', channels, args, seed);
  }

  /** View 0 = the crop, view 1 = the whole image (see `densesiamViews`); each through the network on its own (own BN batch). */
  step(batch: MethodBatch, { step, totalSteps, applyGradients }: StepContext): StepResult {
    const [crop, whole] = batch.views;
    const [g0, g1] = batch.geometry;
    if (!crop || !whole || !g0 || !g1) throw new Error('DenseSiam needs two views with their geometry');
    const regionWeight = regionWeightAt(this.args, step, totalSteps);
    let parts: Record<string, tf.Scalar> = {};
    const { loss, grads } = namedGradients(() => {
      const out = denseSiamLoss(this.head, this.args, this.backbone.applyStages!(crop, { training: true }), this.backbone.applyStages!(whole, { training: true }), g0, g1, regionWeight);
      parts = Object.fromEntries(Object.entries(out.parts).map(([k, t]) => [k, tf.keep(t)]));
      return out.loss;
    }, this.online.trainable());
    applyGradients(grads);
    const result: StepResult = { loss: loss.dataSync()[0]!, parts: Object.fromEntries(Object.entries(parts).map(([k, t]) => [k, t.dataSync()[0]!])) };
    tf.dispose([loss, ...grads.values(), ...Object.values(parts)]);
    return result;
  }

  dispose(): void {
    this.online.dispose();
  }
}

/**
 * The released views (cluster_replay_dataset.py + config), for S-pixel inputs: both views from the same (centre-square)
 * image; view 0 = the equivariant crop (square, side ½–1, flip ½) taken from the image, view 1 = the whole image (no
 * flip: the crop and flip are replayed on its feature map). Per view its own invariant colour recipe: brightness,
 * contrast, saturation 0.3, hue 0.1 (p 0.8), grayscale 0.2, blur p 0.5.
 */
export function densesiamViews(size: number): ViewSpec[] {
  const colour = { colorJitter: { brightness: 0.3, contrast: 0.3, saturation: 0.3, hue: 0.1, p: 0.8 }, grayscaleP: 0.2 };
  // The official blur radius is 0.1 + 3.8·(u − ½) for u < ½, i.e. |σ| ≤ 1.8 px at 640 px before the resize to 320:
  // σ ∈ [0.1, 1.8]·S/640 on the whole view, ×640/480 on the crop (mean side ¾ of 640).
  const blur = (scale: number) => ({ p: 0.5, sigma: [0.1 * scale, 1.8 * scale] as [number, number] });
  return [
    // scale is an AREA fraction here (torchvision RRC): side ∈ [½, 1] ⇔ area ∈ [¼, 1].
    { size, scale: [0.25, 1], ratio: [1, 1], flipP: 0.5, ...colour, blur: blur(size / 480) },
    { size, scale: [1, 1], ratio: [1, 1], flipP: 0, ...colour, blur: blur(size / 640) },
  ];
}

export const densesiam = defineMethod({
  name: 'densesiam',
  title: 'DenseSiam: PixSim (stop-grad CE per pixel, + aux head) on exact replayed correspondences, RegionSim InfoNCE, self-labelling (FPN decoder)',
  paper: {
    citation: 'Zhang, Pang, Chen, Loy. Dense Siamese Network for Dense Unsupervised Learning. ECCV 2022',
    url: 'https://arxiv.org/abs/2203.11075',
  },
  code: { repo: 'ZwwWayne/DenseSiam', commit: '99f8ce1' },
  args: densesiamArgs,
  consumes: { views: densesiamViews, geometry: true },
  // Released config: SGD lr 0.05 at 4×64 = 256 ("0.05 * total_bs / 256"), momentum 0.9, wd 1e-4, lr_config 'Fixed'
  // (no warm-up, constant schedule), 10 epochs.
  optimizer: { kind: 'sgd', baseLr: 0.05, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0, schedule: 'constant' },
  smallScale: {
    args: { decoderChannels: 32 },
    why: 'the small-image stem puts C2 at stride 1, so the decoder map is 64×64 (not S/4) and every head runs per pixel: 32 decoder channels keep the step within memory on the 2-core benchmark; classes (27 / 128), weights and schedule as released',
  },
  claims: [
    {
      metric: 'unsup-seg.mIoU',
      over: 'mocov2',
      paper: 'abstract: unsupervised semantic segmentation +2.1 mIoU over the state of the art with 28% of its training cost; README: COCO-stuff curated, R-18, 16.4 mIoU vs PiCIE 14.4',
    },
    {
      metric: 'semseg.mIoU',
      over: 'mocov2',
      paper: 'README: R-50 DenseSiam pretraining, COCO Mask R-CNN 1x mask AP 36.8 (config not released; no MoCo v2 number in the release or the reference notes)',
    },
  ],
  create: ({ args, backbone, seed }) => new DenseSiam(args, backbone, seed),
});
