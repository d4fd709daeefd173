/**
 * PixPro — "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual Representation Learning",
 * Xie, Lin, Zhang, Cao, Lin, Hu, CVPR 2021, https://arxiv.org/abs/2011.10043.
 * Authors' code: zdaxie/PixPro@e390d6b `contrast/models/PixPro.py` (PixPro, MLP2d, featprop, regression_loss,
 * _momentum_update_key_encoder), `contrast/data/transform_coord.py` (crop coordinates), `contrast/lars.py`,
 * `tools/pixpro_base_r50_400ep.sh` (the released recipe), `contrast/option.py` (defaults), `contrast/resnet.py` (the
 * backbone: zero γ on the last BN of every residual branch, `backboneInit` below).
 *
 * Per view v ∈ {0, 1} of an image, on its last feature map (C5):
 *   x_v = g_θ(f_θ(view_v))                 projector MLP2d: conv1×1 C→H, BN, ReLU, conv1×1 H→D   [B, S², D]
 *   y_v,i = Σ_j s_ij · t(x_v,j)/‖t(x_v,j)‖,  s_ij = max(cos(x_v,i, x_v,j), c)^γ   pixel propagation (PPM), c = 0, γ = 2
 *   x'_v = g_ξ(f_ξ(view_v))                momentum encoder (no PPM), no gradient
 * Loss, symmetric over the two directions, with A_b the geometric positive mask of image b (below):
 *   L = ℓ(y_0, x'_1, A^{01}) + ℓ(y_1, x'_0, A^{10})
 *   ℓ(y, x', A) = −2 · 1/B Σ_b ( Σ_ij A_b,ij · cos(y_b,i, x'_b,j) ) / ( Σ_ij A_b,ij + 1e-6 )
 * so an image with no positive pair contributes 0. A_b,ij = 1 iff the centres of bin i (view 0) and bin j (view 1),
 * in the original image's normalised frame, are closer than pos_ratio (0.7) × the larger of the two views' bin
 * diagonals (stages/data/geometry.ts pixproCoords / pixproPositiveMask, the official transform_coord convention).
 * t is the value transform (`--pixpro-transform-layer 1`: one conv1×1 D→D); note the official code L2-normalises
 * t(x) per location before propagating, and normalises y and x' before the dot product.
 * Momentum: ξ ← m_k·ξ + (1−m_k)·θ over the backbone and projector parameters (not BN buffers, not the PPM), with
 * m_k = 1 − (1 − m)·(cos(πk/K) + 1)/2, m = 0.99, k the 0-based step and K the total steps; the update happens
 * before the key forward and before the optimizer step, as in `forward` (where it follows the online forward,
 * which reads the same θ).
 *
 * Instance branch (`--pixpro-ins-loss-weight λ`, 0 in both released scripts, so off by default; built only when λ > 0):
 *   p_v = normalize(avgpool(q(g^ins_θ(f_θ(view_v)))))    projector_instance MLP2d C→H→D, predictor q MLP2d D→H→D   [B, D]
 *   z'_v = normalize(avgpool(g^ins_ξ(f_ξ(view_v))))       projector_instance_k, EMA'd with the encoder             [B, D]
 *   L += λ · ( −2·mean_b(p_0·z'_1) − 2·mean_b(p_1·z'_0) )   (`PixPro.regression_loss`, symmetric)
 * Both MLPs act per location (BN over B·h·w) and the pooling follows them. The official pooling is AvgPool2d(7, stride 1),
 * which on its 7×7 map is the global average; ours is the global average at any map size (on a larger map the
 * official layer would pool 7×7 windows and concatenate them, an artefact of the hard-coded 224 px).
 *
 * Shapes: B batch, h×w last feature map (S² = h·w, h = w), C backbone channels, H projector hidden, D projector out.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import { VIEW_PRESETS } from '../data/augment.js';
import { pixproCoords, pixproPositiveMask, type ViewGeometry } from '../data/geometry.js';
import { paramsComponent } from '../engine/checkpoint.js';
import { emaUpdate } from '../engine/ema.js';
import { namedGradients } from '../engine/grads.js';
import { BatchNorm, Conv2d, type ForwardOptions } from '../engine/layers.js';
import { relu } from '../engine/native.js';
import { Initializer, type ParamStore } from '../engine/params.js';
import { cosineMomentum } from '../engine/schedule.js';
import { defineMethod, type BackboneFactory, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { l2Normalize } from './shared/contrast.js';
import { buildEncoderPair, type Encoder } from './shared/momentum-encoder.js';

/** PixPro's arguments: the `--pixpro-*` flags of tools/pixpro_base_r50_400ep.sh (defaults there, else option.py). */
export const pixproArgs = z.strictObject({
  momentum: z.number().min(0).lt(1).default(0.99).describe('m, base EMA momentum; m_k rises from m to 1 on a cosine (`--pixpro-momentum 0.99`)'),
  posRatio: z.number().gt(0).default(0.7).describe('positive iff bin-centre distance < posRatio × the larger bin diagonal (`--pixpro-pos-ratio 0.7`)'),
  gamma: z.number().gt(0).default(2).describe('γ, sharpness of the propagation similarity s = max(cos, c)^γ (`--pixpro-p 2`; option.py default 1)'),
  clampValue: z.number().default(0).describe('c, lower clamp of the cosine before ^γ (`--pixpro-clamp-value`, option.py default 0)'),
  transformLayer: z
    .union([z.literal(0), z.literal(1), z.literal(2)])
    .default(1)
    .describe('value transform t of the PPM: 0 identity, 1 conv1×1, 2 MLP2d D→D→D (`--pixpro-transform-layer 1`; option.py default 0)'),
  projectorHidden: z.number().int().min(1).default(4096).describe('H, projector MLP2d hidden width (Proj_Head inner_dim 4096)'),
  projectorOut: z.number().int().min(1).default(256).describe('D, projector output width (Proj_Head out_dim 256; also the PPM width)'),
  insLossWeight: z
    .number()
    .min(0)
    .optional()
    .describe(
      'λ, weight of the instance branch (projector_instance → predictor → avgpool, BYOL-style regression, symmetric); absent = 0, off, as ' +
        '`--pixpro-ins-loss-weight 0.` in both released scripts (option.py default 0; the paper\'s "PixPro + instance" rows use 1). ' +
        'Optional rather than defaulted so that runs without it keep their cache keys',
    ),
});
export type PixProArgs = z.infer<typeof pixproArgs>;

// ------------------------------------------------------------------------------------------------
// Projector (MLP2d) and pixel propagation module
// ------------------------------------------------------------------------------------------------

/**
 * The official MLP2d: conv1×1 (bias) → BatchNorm2d → ReLU → conv1×1 (bias), torch names `linear1.*`, `bn1.*`,
 * `linear2.*`. PyTorch's default init (nothing in the official code re-initialises it: resnet.py's init loop covers
 * only the ResNet), BN eps 1e-5 / momentum 0.1 (SyncBatchNorm's defaults).
 */
export class MLP2d {
  readonly linear1: Conv2d;
  readonly bn1: BatchNorm;
  readonly linear2: Conv2d;

  constructor(store: ParamStore, prefix: string, inDim: number, innerDim: number, outDim: number, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`pixpro-mlp2d:${prefix}:${seed}`);
    this.linear1 = new Conv2d(scope.child('linear1'), init, { inChannels: inDim, outChannels: innerDim, kernelSize: 1, padding: 0, bias: true, init: 'torch_default' });
    this.bn1 = new BatchNorm(scope.child('bn1'), innerDim);
    this.linear2 = new Conv2d(scope.child('linear2'), init, { inChannels: innerDim, outChannels: outDim, kernelSize: 1, padding: 0, bias: true, init: 'torch_default' });
  }

  /** [B, h, w, in] → [B, h, w, out]; BN with the batch statistics of THIS call (one view), as each official call. */
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D {
    return tf.tidy(() => this.linear2.apply(relu(this.bn1.apply(this.linear1.apply(x), opts)) as tf.Tensor4D));
  }
}

/** Pixel propagation module (`featprop`), online branch only; value transform under `${prefix}.value_transform`. */
export class PixelPropagation {
  private readonly transform: ((x: tf.Tensor4D) => tf.Tensor4D) | null;

  constructor(
    store: ParamStore,
    prefix: string,
    readonly dim: number,
    readonly opts: { transformLayer: 0 | 1 | 2; gamma: number; clampValue: number },
    seed: number | string,
  ) {
    const name = `${prefix}.value_transform`;
    if (opts.transformLayer === 1) {
      const conv = new Conv2d(store.scope(name), new Initializer(`pixpro-ppm:${name}:${seed}`), { inChannels: dim, outChannels: dim, kernelSize: 1, padding: 0, bias: true, init: 'torch_default' });
      this.transform = (x) => conv.apply(x);
    } else if (opts.transformLayer === 2) {
      const mlp = new MLP2d(store, name, dim, dim, dim, seed);
      this.transform = (x) => mlp.apply(x, { training: true });
    } else this.transform = null;
  }

  /** x [B, h, w, D] (projector output) → y [B, S², D], not normalised: y_i = Σ_j s_ij · t̂(x_j). */
  apply(x: tf.Tensor4D): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, h, w, d] = x.shape;
      const value = l2Normalize(tf.reshape(this.transform ? this.transform(x) : x, [b, h * w, d]) as tf.Tensor3D, 2); // t̂(x) [B, S², D]
      const xHat = l2Normalize(tf.reshape(x, [b, h * w, d]) as tf.Tensor3D, 2); // [B, S², D]
      let s: tf.Tensor = tf.maximum(tf.matMul(xHat, xHat, false, true), this.opts.clampValue); // cos clamped [B, S², S²]
      if (this.opts.gamma < 1) s = tf.add(s, 1e-6); // as the official code, so 0^γ has a finite gradient
      s = tf.pow(s, this.opts.gamma); // s_ij
      return tf.matMul(s, value) as tf.Tensor3D; // [B, S², D]
    });
  }
}

// ------------------------------------------------------------------------------------------------
// Correspondence and loss
// ------------------------------------------------------------------------------------------------

/**
 * A^{ab}: [B, S², S²] 0/1, rows = bins of view a, columns = bins of view b, on a g×g grid (g = the feature map's
 * side). Built from each image's two ViewGeometry through PixPro's normalised crop coordinates. Constant.
 */
export function pixproMasks(geometryA: readonly ViewGeometry[], geometryB: readonly ViewGeometry[], g: number, posRatio: number): tf.Tensor3D {
  if (geometryA.length !== geometryB.length) throw new Error(`pixproMasks: ${geometryA.length} vs ${geometryB.length} geometries`);
  const s2 = g * g;
  const out = new Float32Array(geometryA.length * s2 * s2);
  geometryA.forEach((ga, b) => out.set(pixproPositiveMask(pixproCoords(ga), pixproCoords(geometryB[b]!), g, posRatio), b * s2 * s2));
  return tf.tensor3d(out, [geometryA.length, s2, s2]);
}

/** ℓ(y, x', A) = −2·mean_b( Σ_ij A·(ŷ_i·x̂'_j) / (Σ_ij A + 1e-6) ); y, x' normalised [B, S², D], A [B, S², S²]. */
export function pixproRegression(y: tf.Tensor3D, xPrime: tf.Tensor3D, mask: tf.Tensor3D): tf.Scalar {
  return tf.tidy(() => {
    const logit = tf.matMul(y, xPrime, false, true); // [B, S², S²]
    const perImage = tf.div(tf.sum(tf.mul(logit, mask), [1, 2]), tf.add(tf.sum(mask, [1, 2]), 1e-6)); // [B]
    return tf.mul(tf.mean(perImage), -2) as tf.Scalar;
  });
}

/**
 * The heads of one encoder: the pixel projector (`neck.*` in the ParamStore ↔ `projector.*` / `projector_k.*`) and, with
 * the instance branch, the instance projector (`neck_instance.*` ↔ `projector_instance.*` / `projector_instance_k.*`).
 */
export interface PixProHeads {
  projector: MLP2d;
  instance: MLP2d | null;
}
export type PixProEncoder = Encoder<PixProHeads>;

/** What the online branch adds to the encoder: the PPM and, with the instance branch, the predictor (`predictor.*`). */
export interface PixProOnline {
  heads: PixProHeads;
  ppm: PixelPropagation;
  predictor: MLP2d | null;
}

/** The momentum targets of one view: x̂' [B, h, w, D] per location and, with the instance branch, z' [B, D]. */
export interface PixProTargets {
  pixel: tf.Tensor4D;
  instance?: tf.Tensor2D;
}

/** normalize(avgpool(x)) over the whole map: [B, h, w, D] → [B, D] (the official AvgPool2d(7) on its 7×7 map). */
const poolNormalize = (x: tf.Tensor4D): tf.Tensor2D => l2Normalize(tf.mean(x, [1, 2]) as tf.Tensor2D, 1);

/**
 * x̂' = normalize(projector_k(backbone_k(view))) per location, and z' = normalize(avgpool(projector_instance_k(·))) from
 * the same backbone forward (one per view, as the official key forward), no gradient.
 */
export function pixproTargets(k: PixProEncoder, view: tf.Tensor4D): PixProTargets {
  return tf.tidy(() => {
    const feat = k.backbone.apply(view, { training: true });
    const pixel = l2Normalize(k.head.projector.apply(feat, { training: true }), 3);
    return k.head.instance ? { pixel, instance: poolNormalize(k.head.instance.apply(feat, { training: true })) } : { pixel };
  });
}

/** −2·mean_b(p_b · z'_b), p and z' normalised [B, D] (the official `PixPro.regression_loss`). */
export function pixproInstanceRegression(p: tf.Tensor2D, zPrime: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => tf.mul(tf.mean(tf.sum(tf.mul(p, zPrime), 1)), -2) as tf.Scalar);
}

/** ŷ = normalize(PPM(projector(featureMap))) per location: [B, S², D], the online predictions. */
export function pixproPredict(head: MLP2d, ppm: PixelPropagation, featureMap: tf.Tensor4D): tf.Tensor3D {
  return tf.tidy(() => l2Normalize(ppm.apply(head.apply(featureMap, { training: true })), 2));
}

/**
 * Both directions, L = ℓ(y_0, x'_1, A^{01}) + ℓ(y_1, x'_0, A^{10}) [+ λ·(ℓ_ins(p_0, z'_1) + ℓ_ins(p_1, z'_0))], from the
 * online feature maps of the two views (what the gradient flows through) and the momentum targets. Parts: `view0`,
 * `view1` (the pixel terms) and, with the instance branch, `instance` (weighted by λ).
 */
export function pixproLoss(online: PixProOnline, maps: [tf.Tensor4D, tf.Tensor4D], targets: [PixProTargets, PixProTargets], masks: [tf.Tensor3D, tf.Tensor3D], insLossWeight = 0): { loss: tf.Scalar; parts: Record<string, tf.Scalar> } {
  return tf.tidy(() => {
    const [b, h, w, d] = targets[0].pixel.shape;
    const [x0, x1] = targets.map((t) => tf.reshape(t.pixel, [b, h * w, d]) as tf.Tensor3D) as [tf.Tensor3D, tf.Tensor3D]; // x̂'_v [B, S², D]
    const y0 = pixproPredict(online.heads.projector, online.ppm, maps[0]); // ŷ_0 [B, S², D]
    const y1 = pixproPredict(online.heads.projector, online.ppm, maps[1]);
    const l01 = pixproRegression(y0, x1, masks[0]);
    const l10 = pixproRegression(y1, x0, masks[1]);
    const pixel = tf.add(l01, l10) as tf.Scalar;
    const parts: Record<string, tf.Scalar> = { view0: l01, view1: l10 };
    if (!(insLossWeight > 0)) return { loss: pixel, parts };
    const { heads: { instance: projector }, predictor } = online;
    const [z0, z1] = [targets[0].instance, targets[1].instance];
    if (!projector || !predictor || !z0 || !z1) throw new Error('pixproLoss: the instance branch needs the instance projector, the predictor and both views\' instance targets');
    // p_v = normalize(avgpool(predictor(projector_instance(C5_v)))): one call per view (its own BN statistics).
    const [p0, p1] = maps.map((m) => poolNormalize(predictor.apply(projector.apply(m, { training: true }), { training: true })));
    const instance = tf.mul(tf.add(pixproInstanceRegression(p0!, z1), pixproInstanceRegression(p1!, z0)), insLossWeight) as tf.Scalar;
    return { loss: tf.add(pixel, instance) as tf.Scalar, parts: { ...parts, instance } };
  });
}

// ------------------------------------------------------------------------------------------------
// PixPro
// ------------------------------------------------------------------------------------------------

export class PixPro implements MethodInstance<PixProArgs> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly state;
  readonly q: PixProEncoder;
  readonly k: PixProEncoder;
  readonly ppm: PixelPropagation;
  /** The instance branch's predictor (online only), when `insLossWeight` > 0. */
  readonly predictor: MLP2d | null;
  /** The online tensors the momentum encoder averages (everything but the PPM and the predictor). */
  private readonly shared: Map<string, tf.Variable>;

  constructor(
    readonly args: PixProArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const withInstance = (args.insLossWeight ?? 0) > 0;
    const heads = (store: ParamStore, prefix: string, c: number, s: number | string): PixProHeads => ({
      projector: new MLP2d(store, prefix, c, args.projectorHidden, args.projectorOut, s),
      instance: withInstance ? new MLP2d(store, `${prefix}_instance`, c, args.projectorHidden, args.projectorOut, s) : null,
    });
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, heads, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    this.shared = new Map(this.online.vars);
    // Online only, built after the pair is tied: the momentum encoder has no PPM and no predictor.
    this.ppm = new PixelPropagation(this.online, 'ppm', args.projectorOut, args, seed);
    this.predictor = withInstance ? new MLP2d(this.online, 'predictor', args.projectorOut, args.projectorHidden, args.projectorOut, seed) : null;
    this.state = { momentum: paramsComponent(this.momentumEncoder) };
  }

  step(batch: MethodBatch, { step, totalSteps, applyGradients }: StepContext): StepResult {
    const [view0, view1] = batch.views as [tf.Tensor4D, tf.Tensor4D];
    // 1. ξ ← m_k·ξ + (1−m_k)·θ over parameters (not BN buffers), m_k on the cosine schedule.
    emaUpdate(this.momentumEncoder.vars, this.shared, cosineMomentum(step, this.args.momentum, totalSteps), 'skip');
    // 2. targets x̂'_v (and z'_v) from the momentum encoder, one forward per view (its own BN statistics); no gradient.
    const targets: [PixProTargets, PixProTargets] = [pixproTargets(this.k, view0), pixproTargets(this.k, view1)];
    // 3. geometric positives A^{01} and A^{10} on the grid of the feature map (7×7 in the paper, 8×8 by default here).
    const [b, h, w] = targets[0].pixel.shape;
    const [geometry0, geometry1] = batch.geometry;
    if (h !== w) throw new BadInputError(`PixPro needs a square feature map, got ${h}×${w}`, 'pretrain.imageSize');
    if (geometry0?.length !== b || geometry1?.length !== b) throw new Error(`PixPro: batch.geometry must hold both views of all ${b} images`);
    const masks: [tf.Tensor3D, tf.Tensor3D] = [pixproMasks(geometry0, geometry1, h, this.args.posRatio), pixproMasks(geometry1, geometry0, h, this.args.posRatio)];
    // 4. online forward (both views, one BN call each) and loss under the tape.
    let parts: Record<string, tf.Scalar> = {};
    const { loss, grads } = namedGradients(() => {
      const maps: [tf.Tensor4D, tf.Tensor4D] = [this.q.backbone.apply(view0, { training: true }), this.q.backbone.apply(view1, { training: true })];
      const out = pixproLoss({ heads: this.q.head, ppm: this.ppm, predictor: this.predictor }, maps, targets, masks, this.args.insLossWeight ?? 0);
      parts = Object.fromEntries(Object.entries(out.parts).map(([k, t]) => [k, tf.keep(t)]));
      return out.loss;
    }, this.online.trainable());
    // 5. optimizer.
    applyGradients(grads);
    const result: StepResult = { loss: loss.dataSync()[0]!, parts: Object.fromEntries(Object.entries(parts).map(([k, t]) => [k, t.dataSync()[0]!])) };
    tf.dispose([loss, ...grads.values(), ...Object.values(parts), ...targets.flatMap((t) => Object.values(t) as tf.Tensor[]), ...masks]);
    return result;
  }

  dispose(): void {
    this.online.dispose();
    this.momentumEncoder.dispose();
  }
}

export const pixpro = defineMethod({
  name: 'pixpro',
  title: 'PixPro: pixel propagation regressed onto a momentum encoder at geometrically matched locations',
  paper: {
    citation: 'Xie, Lin, Zhang, Cao, Lin, Hu. Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual Representation Learning. CVPR 2021',
    url: 'https://arxiv.org/abs/2011.10043',
  },
  code: { repo: 'zdaxie/PixPro', commit: 'e390d6b' },
  args: pixproArgs,
  // 2: the backbone's residual branches start at zero (backboneInit), as contrast/resnet.py's ResNet does.
  version: '2',
  backboneInit: {
    zeroInitResidual: true,
    why:
      "contrast/resnet.py:164-173 (ResNet.__init__, \"zero gamma for batch norm: reference bag of tricks\"): after the " +
      "conv/BN init loop every parameter whose name ends in 'bn3.weight' (Bottleneck) or 'bn2.weight' (BasicBlock) is " +
      'zeroed, i.e. the last BN of each residual branch (stem bn1 and downsample.1 keep γ = 1); the encoder is that class ' +
      '(main_pretrain.py:30 resnet.__dict__[args.arch], models/PixPro.py:113) and encoder_k copies it (PixPro.py:120-122)',
  },
  consumes: { views: VIEW_PRESETS.pixpro, geometry: true },
  // tools/pixpro_base_r50_{100,400}ep.sh: LARS (trust 0.001, BN/bias excluded), base lr 1.0 per 256, momentum 0.9,
  // wd 1e-5, 5 warm-up epochs (of 100 here; 5/400 in the 400-epoch run), cosine.
  optimizer: { kind: 'lars', baseLr: 1.0, momentum: 0.9, weightDecay: 1e-5, warmupFraction: 0.05 },
  smallScale: {
    args: { projectorHidden: 512, projectorOut: 128 },
    why: 'the default C5 has 128 channels, not 2048: a 4096-wide projector would widen it 32× (the paper: 2×); 512 / 128 keeps it small and D = C',
  },
  claims: [
    { metric: 'semseg.mIoU', over: 'mocov2', paper: 'README: VOC07+12 Faster R-CNN C4 AP 58.8 (100 ep) / 60.2 (400 ep) vs MoCo v2 (800 ep) 57.6' },
    { metric: 'unsup-seg.mIoU', over: 'mocov2', paper: 'README: COCO Mask R-CNN FPN 1× AP 40.8 (100 ep) vs MoCo v2 40.4' },
  ],
  validate: (args) => {
    if (!Number.isInteger(args.gamma) && args.clampValue < 0) throw new BadInputError('a fractional γ needs clampValue ≥ 0 (a negative similarity to a fractional power is NaN)', 'args.clampValue');
  },
  create: ({ args, backbone, seed }) => new PixPro(args, backbone, seed),
});
