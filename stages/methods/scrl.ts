/**
 * SCRL — "Spatially Consistent Representation Learning", Roh, Shin, Kim, Kim, CVPR 2021,
 * https://arxiv.org/abs/2103.06122.
 * Authors' code: kakaobrain/scrl@62730fb (62730fb21c70eaeab57b185210d09f5c4ae589bd) `models/box_generator.py`
 * (SCRLBoxGenerator: box pairs), `models/backbone.py` (RoIAlign on C5, projector), `models/heads.py`
 * (TwoLayerLinearHead), `trainer/trainer.py` (SCRLTrainer._forward), `trainer/base.py` (_regression_loss, _criterion,
 * _decay_ema_momentum, _update_target_network_parameters), `augment/getters.py`, `optim/getters.py`,
 * `config/scrl_{200,1000}ep.yaml`.
 *
 * Per image b, with its two views' crops: K box pairs (r¹_bk, r²_bk) covering the SAME part of the original image,
 * drawn in the crops' intersection (SCRLBoxGenerator, below) and written in each view's pixels (scale and flip).
 * Both views go through each encoder together (one batch of 2B, as the official `torch.cat(views)`), and on the C5 map:
 *
 *   h^v_n = RoIAlign_1×1(f_θ(view_v), r^v_n)       spatial scale 1/stride, sampling ratio −1 (adaptive), aligned=False
 *   z^v_n = g_θ(h^v_n),   p^v_n = q_θ(z^v_n)        projector g, predictor q: Linear(+bias) → BN → ReLU → Linear(no bias)
 *   z'^v_n = g_ξ(RoIAlign_1×1(f_ξ(view_v), r^v_n))  target network, no gradient
 *
 * Loss (no global BYOL term in SCRL mode), n over the N boxes of the batch:
 *   L = 1/N Σ_n [ ℓ(p¹_n, z'²_n) + ℓ(p²_n, z'¹_n) ],   ℓ(p, z) = 2 − 2·cos(p, z)
 * EMA after the optimizer step, over the parameters of f and g (not q, not BN buffers):
 *   ξ ← m_k·ξ + (1 − m_k)·θ,   m_k = 1 − (1 − m)·(cos(πk/K) + 1)/2,  k the 0-based step, K the total steps
 *
 * Box pairs (per image; `generateBoxPairs`): I = intersection of the two crops in original pixels (skip the image if
 * empty); s_v = view pixels per original pixel of view v, s = min(s¹, s²) per axis; Ĩ = I scaled by s, rounded
 * (Python's half-to-even `round`); skip the image if minSize ≥ either side of Ĩ. For each of K boxes, up to 50 tries:
 * grid mode draws #divisions d_w ∈ [1, ⌊Ĩ_w/minSize⌋], d_h likewise, a cell (c_x, c_y), a size
 * w ∈ [minSize, Ĩ_w/d_w], h likewise, and an offset inside the cell; the box (in Ĩ) → original pixels (÷ s, + I's
 * corner) → each view (geometry.ts `boxOriginalToView`: scale, crop offset, mirror). A try is kept when its IoU (view 1)
 * with every earlier box of the image is < iouThreshold (the 50th try is kept regardless); the kept boxes are clipped
 * to the view. Every random draw is numpy's `randint(lo, hi)` (hi exclusive, truncated to an integer) and is taken
 * from `ctx.rng.int` in the official order, so tests can inject the official draws.
 *
 * Shapes: B batch, H×W view, h×w C5 map, C backbone channels, N box pairs in the batch (≤ B·K), Hd projector hidden,
 * D projector / predictor output.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import { VIEW_PRESETS } from '../data/augment.js';
import { boxOriginalToView, clipBox, cropIntersection, viewScale, type Box, type ViewGeometry } from '../data/geometry.js';
import { paramsComponent } from '../engine/checkpoint.js';
import { copyWeights, emaUpdate } from '../engine/ema.js';
import { namedGradients } from '../engine/grads.js';
import { roiAlign, type RoiBox } from '../engine/ops/roi_align.js';
import { ParamStore } from '../engine/params.js';
import { cosineMomentum } from '../engine/schedule.js';
import { defineMethod, type BackboneFactory, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { cosineRegression } from './shared/contrast.js';
import { ByolMlpHead } from './shared/heads.js';
import type { Encoder } from './shared/momentum-encoder.js';

/** SCRL's arguments: `network.scrl`, `network.proj_head` and `train.m` of config/scrl_1000ep.yaml. */
export const scrlArgs = z.strictObject({
  momentum: z.number().min(0).lt(1).default(0.996).describe('m, base EMA momentum; m_k rises from m to 1 on a cosine (`train.m: 0.996` in scrl_1000ep.yaml; 0.97 in scrl_200ep.yaml)'),
  boxesPerImage: z.number().int().min(1).default(10).describe('K, box pairs drawn per image (`network.scrl.num_patches_per_image: 10`)'),
  minSize: z
    .number()
    .int()
    .min(1)
    .default(32)
    .describe('smallest box side in view pixels, and the smallest usable scaled intersection (`network.scrl.min_size: 32` at 224 px = one C5 cell at stride 32)'),
  iouThreshold: z.number().gt(0).max(1).default(0.5).describe('a drawn box is redrawn (≤ 50 tries) while its IoU with an earlier box of the image is ≥ this; 1 = no check (`network.scrl.iou_threshold: 0.5`)'),
  gridBased: z.boolean().default(true).describe('grid-level box generation (random divisions, a cell, a box inside it); false = one box anywhere in the intersection (`network.scrl.grid_based_box_gen: True`)'),
  projectorHidden: z.number().int().min(1).default(4096).describe('Hd, hidden width of the projector and the predictor (`network.proj_head.hidden_size: 4096`)'),
  projectorOut: z.number().int().min(1).default(256).describe('D, output width of the projector and the predictor (`network.proj_head.output_size: 256`)'),
  targetInit: z
    .enum(['independent', 'copy'])
    .default('independent')
    .describe('target network at step 0: `independent` = its own random init, as the official trainer (`_initialize_target_network(from_online=False)`); `copy` = the online weights (BYOL\'s reference code)'),
});
export type ScrlArgs = z.infer<typeof scrlArgs>;

// ------------------------------------------------------------------------------------------------
// Box pairs (SCRLBoxGenerator.generate)
// ------------------------------------------------------------------------------------------------

/** The integer draws the generator makes: uniform in [lo, hi). `Rng` is one; tests inject the official draws. */
export interface IntSampler {
  int(lo: number, hi: number): number;
}

export interface BoxGeneratorOptions {
  minSize: number;
  boxesPerImage: number;
  iouThreshold: number;
  gridBased: boolean;
}

/** One box pair: image `image`, the same original region as seen in view 0 and in view 1 (view pixels, pixel-edge frame). */
export interface BoxPair {
  image: number;
  boxes: [Box, Box];
}

/** numpy `randint(lo, hi)`: hi is truncated to an integer (the official code passes floats); lo < hi or it throws. */
function randint(rng: IntSampler, lo: number, hi: number): number {
  const top = Math.trunc(hi);
  if (!(top > lo)) throw new Error(`SCRL box generator: empty draw range [${lo}, ${hi})`);
  return rng.int(lo, top);
}

/** Python's `round` on a float: half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** `bbox_iou` of box_generator.py: [x0, y0, x1, y1] boxes, 0 when they do not overlap. */
export function boxIou(a: Box, b: Box): number {
  const inter = Math.abs(Math.max(Math.min(a[2], b[2]) - Math.max(a[0], b[0]), 0) * Math.max(Math.min(a[3], b[3]) - Math.max(a[1], b[1]), 0));
  if (inter === 0) return 0;
  const areaA = Math.abs((a[2] - a[0]) * (a[3] - a[1]));
  const areaB = Math.abs((b[2] - b[0]) * (b[3] - b[1]));
  return inter / (areaA + areaB - inter);
}

/**
 * Box pairs for a batch, in the official order (image by image, box by box): geometry0[b] / geometry1[b] are the two
 * views of image b. Images whose views do not overlap enough get none. Mapping from the intersection to each view is
 * geometry.ts's `boxOriginalToView` (the official frame is the same pixel-edge frame: x_view = (X − crop_left)·s_v,
 * mirrored as W − x).
 */
export function generateBoxPairs(geometry0: readonly ViewGeometry[], geometry1: readonly ViewGeometry[], o: BoxGeneratorOptions, rng: IntSampler): BoxPair[] {
  if (geometry0.length !== geometry1.length) throw new Error(`SCRL box generator: ${geometry0.length} vs ${geometry1.length} geometries`);
  const pairs: BoxPair[] = [];
  geometry0.forEach((g0, image) => {
    const g1 = geometry1[image]!;
    const inter = cropIntersection(g0, g1); // I, original pixels
    if (!inter) return;
    const s0 = viewScale(g0);
    const s1 = viewScale(g1);
    const sx = Math.min(s0.x, s1.x); // s, the less magnifying view per axis
    const sy = Math.min(s0.y, s1.y);
    const invX = 1 / sx;
    const invY = 1 / sy;
    const intW = roundHalfEven((inter[2] - inter[0]) * sx); // Ĩ
    const intH = roundHalfEven((inter[3] - inter[1]) * sy);
    if (o.minSize >= intW || o.minSize >= intH) return;
    const divWRange = Math.trunc(intW / o.minSize) + 1;
    const divHRange = Math.trunc(intH / o.minSize) + 1;
    const kept0: Box[] = []; // this image's boxes in view 0, clipped (the IoU check reads these)
    for (let i = 0; i < o.boxesPerImage; i++) {
      let v0: Box = [0, 0, 0, 0];
      let v1: Box = [0, 0, 0, 0];
      for (let attempt = 0; attempt < 50; attempt++) {
        let bx: number, by: number, bw: number, bh: number; // the box in Ĩ
        if (o.gridBased) {
          const divW = randint(rng, 1, divWRange);
          const divH = randint(rng, 1, divHRange);
          const gridW = intW / divW;
          const gridH = intH / divH;
          const cellX = randint(rng, 0, divW);
          const cellY = randint(rng, 0, divH);
          bw = randint(rng, o.minSize, gridW + 1);
          bh = randint(rng, o.minSize, gridH + 1);
          bx = randint(rng, 0, gridW - bw + 1) + Math.trunc(cellX * gridW);
          by = randint(rng, 0, gridH - bh + 1) + Math.trunc(cellY * gridH);
        } else {
          bw = randint(rng, o.minSize, intW);
          bh = randint(rng, o.minSize, intH);
          bx = randint(rng, 0, intW - bw);
          by = randint(rng, 0, intH - bh);
        }
        const original: Box = [inter[0] + bx * invX, inter[1] + by * invY, inter[0] + (bx + bw) * invX, inter[1] + (by + bh) * invY];
        v0 = boxOriginalToView(g0, original);
        v1 = boxOriginalToView(g1, original);
        if (i === 0 || o.iouThreshold === 1) break;
        let maxIou = 0;
        for (const earlier of kept0.slice(-i)) {
          maxIou = Math.max(maxIou, boxIou(v0, earlier));
          if (maxIou > o.iouThreshold) break;
        }
        if (maxIou < o.iouThreshold) break;
      }
      const c0 = clipInto(v0, g0);
      kept0.push(c0);
      pairs.push({ image, boxes: [c0, clipInto(v1, g1)] });
    }
  });
  return pairs;
}

/** `clip_box`: clamp to the view (the boxes lie inside both crops, so this only removes rounding). */
function clipInto(box: Box, g: ViewGeometry): Box {
  const clipped = clipBox(box, g.width, g.height);
  if (!clipped) throw new Error(`SCRL box generator: box [${box.join(', ')}] lies outside its ${g.width}×${g.height} view`);
  return clipped;
}

// ------------------------------------------------------------------------------------------------
// Heads and loss
// ------------------------------------------------------------------------------------------------

/**
 * The official TwoLayerLinearHead (Linear with bias → BatchNorm1d → ReLU → Linear without bias) is BYOL's MLP: the
 * shared `ByolMlpHead`, under `PREFIX.net.{0,1,3}` as the official `nn.Sequential` names it.
 */
const twoLayerLinearHead = (store: ParamStore, prefix: string, inDim: number, hidden: number, outDim: number, seed: number | string) =>
  new ByolMlpHead(store, `${prefix}.net`, inDim, hidden, outDim, seed);

export type ScrlEncoder = Encoder<ByolMlpHead>;

/** RoI rows for torchvision's roi_align on the 2B-image batch: view-0 boxes on image b, view-1 boxes on b + B. */
export function scrlRois(pairs: readonly BoxPair[], batch: number): RoiBox[] {
  return [...pairs.map((p): RoiBox => [p.image, ...p.boxes[0]]), ...pairs.map((p): RoiBox => [p.image + batch, ...p.boxes[1]])];
}

/** z = g(RoIAlign_1×1(map, rois)): C5 maps of both views [2B, h, w, C] → [2N, D] (view-0 boxes first). */
export function scrlProject(head: ByolMlpHead, maps: tf.Tensor4D, rois: RoiBox[], spatialScale: number): tf.Tensor2D {
  return tf.tidy(() => {
    const pooled = roiAlign(maps, rois, { outputSize: 1, spatialScale, samplingRatio: -1, aligned: false }); // [2N, 1, 1, C]
    return head.apply(tf.reshape(pooled, [rois.length, maps.shape[3]]) as tf.Tensor2D, { training: true });
  });
}

/** L = mean_n[ℓ(p¹_n, z'²_n) + ℓ(p²_n, z'¹_n)] from p [2N, D] (online, predicted) and z' [2N, D] (target). */
export function scrlLoss(p: tf.Tensor2D, zTarget: tf.Tensor2D): { loss: tf.Scalar; parts: Record<string, tf.Scalar> } {
  return tf.tidy(() => {
    const n = p.shape[0] / 2;
    const [p1, p2] = tf.split(p, 2, 0) as [tf.Tensor2D, tf.Tensor2D];
    const [z1, z2] = tf.split(zTarget, 2, 0) as [tf.Tensor2D, tf.Tensor2D];
    const l12 = tf.div(tf.sum(cosineRegression(p1, z2)), n) as tf.Scalar;
    const l21 = tf.div(tf.sum(cosineRegression(p2, z1)), n) as tf.Scalar;
    return { loss: tf.add(l12, l21) as tf.Scalar, parts: { view0: l12, view1: l21 } };
  });
}

// ------------------------------------------------------------------------------------------------
// SCRL
// ------------------------------------------------------------------------------------------------

export class Scrl implements MethodInstance<ScrlArgs> {
  readonly online: ParamStore;
  readonly target: ParamStore;
  readonly state;
  readonly q: ScrlEncoder;
  readonly k: ScrlEncoder;
  readonly predictor: ByolMlpHead;
  /** The online tensors the target averages: backbone + projector (not the predictor). */
  private readonly shared: Map<string, tf.Variable>;

  constructor(
    readonly args: ScrlArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const build = (s: number | string): ScrlEncoder => {
      const store = new ParamStore();
      const backbone = backboneFactory(store, 'backbone', s);
      return { store, backbone, head: twoLayerLinearHead(store, 'neck', backbone.outChannels, args.projectorHidden, args.projectorOut, s) };
    };
    this.q = build(seed);
    this.k = build(`${seed}-target`);
    if (args.targetInit === 'copy') copyWeights(this.k.store.vars, this.q.store.vars);
    for (const v of this.k.store.vars.values()) if (v.trainable) v.trainable = false; // the target gets no gradient
    this.online = this.q.store;
    this.target = this.k.store;
    this.shared = new Map(this.online.vars);
    // Online only, added after `shared` is taken: the target has no predictor.
    this.predictor = twoLayerLinearHead(this.online, 'predictor', args.projectorOut, args.projectorHidden, args.projectorOut, seed);
    this.state = { target: paramsComponent(this.target) };
  }

  /** 1/stride of the C5 map (the official spatial_scale 1/32), from the backbone or from the map's size. */
  private spatialScale(view: tf.Tensor4D, map: tf.Tensor4D): number {
    return 1 / (this.q.backbone.stride ?? view.shape[2] / map.shape[2]);
  }

  step(batch: MethodBatch, { step, totalSteps, rng, applyGradients }: StepContext): StepResult {
    const [view0, view1] = batch.views as [tf.Tensor4D, tf.Tensor4D];
    const b = view0.shape[0];
    const [geometry0, geometry1] = batch.geometry;
    if (geometry0?.length !== b || geometry1?.length !== b) throw new Error(`SCRL: batch.geometry must hold both views of all ${b} images`);
    // 1. box pairs in the two views' intersections, from ctx.rng.
    const pairs = generateBoxPairs(geometry0, geometry1, this.args, rng);
    const momentum = cosineMomentum(step, this.args.momentum, totalSteps);
    let result: StepResult = { loss: 0, parts: { view0: 0, view1: 0 } };
    if (pairs.length > 0) {
      const rois = scrlRois(pairs, b);
      const views = tf.concat([view0, view1], 0); // [2B, H, W, 3], one encoder batch as `torch.cat(views)`
      // 2. target projections z' [2N, D], no gradient.
      const zTarget = tf.tidy(() => {
        const maps = this.k.backbone.apply(views, { training: true });
        return scrlProject(this.k.head, maps, rois, this.spatialScale(views, maps));
      });
      // 3. online forward and loss under the tape.
      let parts: Record<string, tf.Scalar> = {};
      const { loss, grads } = namedGradients(() => {
        const maps = this.q.backbone.apply(views, { training: true });
        const p = this.predictor.apply(scrlProject(this.q.head, maps, rois, this.spatialScale(views, maps)), { training: true });
        const out = scrlLoss(p, zTarget);
        parts = Object.fromEntries(Object.entries(out.parts).map(([k, t]) => [k, tf.keep(t)]));
        return out.loss;
      }, this.online.trainable());
      // 4. optimizer.
      applyGradients(grads);
      result = { loss: loss.dataSync()[0]!, parts: Object.fromEntries(Object.entries(parts).map(([k, t]) => [k, t.dataSync()[0]!])) };
      tf.dispose([views, zTarget, loss, ...grads.values(), ...Object.values(parts)]);
    }
    // 5. ξ ← m_k·ξ + (1−m_k)·θ after the optimizer step (trainer.py: EMA update follows `scaler.step`), parameters only.
    // With no box pair in the batch the official step has nothing to pool (it would fail); here it only updates ξ.
    emaUpdate(this.target.vars, this.shared, momentum, 'skip');
    return result;
  }

  dispose(): void {
    this.online.dispose();
    this.target.dispose();
  }
}

export const scrl = defineMethod({
  name: 'scrl',
  title: 'SCRL: BYOL regression between RoI-aligned C5 features of the same random boxes in two views',
  paper: {
    citation: 'Roh, Shin, Kim, Kim. Spatially Consistent Representation Learning. CVPR 2021',
    url: 'https://arxiv.org/abs/2103.06122',
  },
  code: { repo: 'kakaobrain/scrl', commit: '62730fb' },
  args: scrlArgs,
  // 2: the heads are the shared ByolMlpHead (same layout and names, another init stream).
  version: '2',
  consumes: { views: VIEW_PRESETS.scrl, geometry: true },
  // config/scrl_1000ep.yaml: LARS over SGD (momentum 0.9), base lr 0.2 per 256, wd 1.5e-6, 10 warm-up epochs of 1000,
  // cosine; params whose names contain 'bn' or 'bias' excluded from decay and trust ratio (optim/getters.py).
  optimizer: { kind: 'lars', baseLr: 0.2, momentum: 0.9, weightDecay: 1.5e-6, warmupFraction: 0.01 },
  smallScale: {
    args: { projectorHidden: 512, projectorOut: 128, minSize: 8, momentum: 0.97 },
    optimizer: { baseLr: 0.45, weightDecay: 1e-6 },
    why:
      'C5 has 128 channels, not 2048: projector / predictor 512 / 128 instead of 4096 / 256; minSize 8 px = one C5 cell at ' +
      'stride 8 (the official 32 px is one cell at stride 32, and 32 px would not fit in a 64-px view); the shorter official ' +
      'recipe (scrl_200ep.yaml: m 0.97, lr 0.45, wd 1e-6) for short runs',
  },
  claims: [
    { metric: 'semseg.mIoU', over: 'mocov2', paper: 'README (no MoCo v2 row): COCO Mask R-CNN FPN 1× mask AP 37.92 (1000 ep) vs BYOL 37.16, box AP 41.40 vs 40.19; paper: localization gains over SOTA SSL (qualitative)' },
    { metric: 'unsup-seg.mIoU', over: 'mocov2', paper: 'README: COCO Faster R-CNN FPN 1× AP 40.92 (1000 ep) vs BYOL 40.10, IN-sup. 38.52; abstract: spatially consistent dense features (qualitative)' },
  ],
  validate: (args, { imageSize }) => {
    if (args.minSize >= imageSize) throw new BadInputError(`minSize ${args.minSize} px must be smaller than the ${imageSize}-px views, or no box pair can ever be drawn`, 'args.minSize');
  },
  create: ({ args, backbone, seed }) => new Scrl(args, backbone, seed),
});
