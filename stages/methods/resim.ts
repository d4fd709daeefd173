/**
 * ReSim — "Region Similarity Representation Learning", Xiao, Reed, Wang, Keutzer, Darrell, ICCV 2021,
 * https://arxiv.org/abs/2103.12902.
 * Authors' code: Tete-Xiao/ReSim@b6a36ee `moco/builder.py` (MoCo.forward: global and region logits, negatives, queue),
 * `moco/models.py` (FPN top-down on C3..C5, fc head), `moco/datasets.py` (sliding windows, `anchor_mapping`),
 * `main_moco.py` (criterion with ignore_index −1, loss sum, recipe), `lib/prroi_pool/` (PrRoIPool, CUDA kernels).
 *
 * Loss:  L = L_moco + L_P4 + L_P3   (weights 1, main_moco.py)
 *   L_moco = −1/B Σ_b log( exp(q_b·k_b/τ) / (exp(q_b·k_b/τ) + Σ_j exp(q_b·queue_j/τ)) )       (MoCo v2, see mocov2.ts)
 *   L_ℓ    = 1/G Σ_g −1/|V_ℓ,g| Σ_{(b,w)∈V_ℓ,g} log( exp(r_bw·s_bw/τ) / (exp(r_bw·s_bw/τ) + Σ_{n∈N_ℓ,g} exp(r_bw·n/τ)) )
 * with, for level ℓ ∈ {P4, P3}:
 *   w        a sliding window of view 0 (the query view): P4 48 px, stride 32, 6 per side; P3 32 px, stride 24, 8 per
 *            side, in a 224-px view, scaled by S/224 here; a window with x1 or y1 ≥ S is not generated
 *   w'       the same region of the original image in view 1 (`anchor_mapping`; the flip is shared, so only crop and
 *            scale matter); (b, w) ∈ V_ℓ iff w' lies in view 1: x0', y0' ≥ 0 and x1', y1' < S (else label −1, ignored)
 *   r_bw     normalize(PrRoIPool₁ₓ₁(P_ℓ(view 0), w)), online: the gradient reaches the FPN and the backbone
 *   s_bw     normalize(PrRoIPool₁ₓ₁(P_ℓ(view 1), w')), momentum encoder, no gradient
 *   N_ℓ,g    every position of normalize(avgpool₃ₓ₃,stride 1,no pad(P_ℓ(view 1))): of the whole batch on P4 (gathered
 *            over GPUs), of GPU g's images only on P3 (not gathered); the positive's own position is not removed
 *   P4, P3   FPN: t = lat5(C5); t = lat4(C4) + up2(t); P4 = out4(t); t = lat3(C3) + up2(t); P3 = out3(t)
 *            (1×1 laterals, 3×3 outputs, biases, no norm, nearest ×2, c2_xavier_fill; no output conv on C5)
 *   q, k     normalize(fc(avgpool(C5))), fc = Linear(C, C) ReLU Linear(C, D) (the model always has it)
 * G = emulated GPUs (`shuffleBnGroups`): each GPU's loss is a mean over its own valid windows and DDP averages the GPUs'
 * gradients; a GPU with no valid window contributes 0 (officially NaN). After the update: queue ← k (FIFO).
 * Momentum encoder ξ ← m·ξ + (1−m)·θ over backbone, FPN and fc, before the key forward; keys with shuffle-BN.
 *
 * Shapes: B batch, G GPUs, S view size (px), n_ℓ windows per image (36, 64), C_3..C_5 stage channels, F FPN channels,
 * h_ℓ×w_ℓ level map, D embedding, K queue length.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import { VIEW_PRESETS } from '../data/augment.js';
import { boxViewToView, type Box, type ViewGeometry } from '../data/geometry.js';
import { paramsComponent, queuesComponent } from '../engine/checkpoint.js';
import { MlpHead } from '../engine/heads.js';
import { Conv2d, type ForwardOptions } from '../engine/layers.js';
import { prroiPool } from '../engine/ops/prroi_pool.js';
import type { RoiBox } from '../engine/ops/roi_align.js';
import { Initializer, type ParamStore } from '../engine/params.js';
import { MemoryQueue } from '../engine/queue.js';
import { defineMethod, type BackboneFactory, type FeatureBackbone, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { enqueueKeys, infoNce, l2Normalize, queueInfoNce } from './shared/contrast.js';
import { buildEncoderPair, encodeShuffled, momentumContrastArgs, momentumStep, validateMomentumContrast, type Encoder } from './shared/momentum-encoder.js';

/** The official windows are laid out in a view of this many pixels (datasets.py `img_size=224.`). */
const REFERENCE_SIZE = 224;

const windowSpec = (size: number, stride: number, perSide: number) =>
  z.tuple([z.number().gt(0), z.number().gt(0), z.number().int().min(1)]).default([size, stride, perSide]);

/** ReSim's arguments: MoCo v2's (README command: `--mlp --moco-t 0.2`, K 65536, m 0.999) plus the region branch. */
export const resimArgs = momentumContrastArgs.extend({
  fpnChannels: z.number().int().min(1).default(256).describe('F, FPN channels of P4 and P3 (models.py `fpn_top_down_dim = 256`)'),
  p4Window: windowSpec(48, 32, 6).describe('P4 windows [size, stride, per side] in a 224-px view (datasets.py C4: anchor_sizes [48], stride 32, range(6)); scaled by imageSize/224'),
  p3Window: windowSpec(32, 24, 8).describe('P3 windows [size, stride, per side] in a 224-px view (datasets.py C3: anchor_sizes [32], stride 24, range(8)); scaled by imageSize/224'),
  negativePool: z.number().int().min(1).default(3).describe('negatives = every position of avg_pool2d(key map, this, stride 1, no padding) (builder.py, 3)'),
});
export type ReSimArgs = z.infer<typeof resimArgs> & { hiddenDim: number };

// ------------------------------------------------------------------------------------------------
// Windows: a fixed grid in view 0, mapped into view 1
// ------------------------------------------------------------------------------------------------

/** The official placeholder for a window that falls outside view 1 (pooled, then ignored). */
const FAKE_WINDOW: Box = [0, 0, 1, 1];

/**
 * The sliding windows of one level in an S-px query view, row-major (y outer): datasets.py's loops with the sizes
 * scaled by S/224; windows reaching x1 ≥ S or y1 ≥ S are skipped, as officially.
 */
export function queryWindows([size, stride, perSide]: readonly [number, number, number], width: number, height = width): Box[] {
  const scale = width / REFERENCE_SIZE;
  const out: Box[] = [];
  for (let i = 0; i < perSide; i++) {
    for (let j = 0; j < perSide; j++) {
      const [y0, x0] = [i * stride * scale, j * stride * scale];
      const [y1, x1] = [y0 + size * scale, x0 + size * scale];
      if (x1 >= width || y1 >= height) continue;
      out.push([x0, y0, x1, y1]);
    }
  }
  return out;
}

/** One level's windows for the batch: `q[b]` in view 0, `k[b]` in view 1 (FAKE_WINDOW where invalid), `valid[b]`. */
export interface LevelWindows {
  q: Box[][];
  k: Box[][];
  valid: boolean[][];
}

/** `anchor_mapping`: each query window through the original image into view 1; valid iff inside [0, W) × [0, H). */
export function mapWindows(windows: readonly Box[], g0: ViewGeometry, g1: ViewGeometry): { k: Box[]; valid: boolean[] } {
  const k: Box[] = [];
  const valid: boolean[] = [];
  for (const w of windows) {
    const m = boxViewToView(g0, g1, w);
    const inside = m[0] >= 0 && m[1] >= 0 && m[2] < g1.width && m[3] < g1.height;
    k.push(inside ? m : [...FAKE_WINDOW]);
    valid.push(inside);
  }
  return { k, valid };
}

export function batchWindows(spec: readonly [number, number, number], g0: readonly ViewGeometry[], g1: readonly ViewGeometry[]): LevelWindows {
  const out: LevelWindows = { q: [], k: [], valid: [] };
  g0.forEach((g, b) => {
    const q = queryWindows(spec, g.width, g.height);
    const { k, valid } = mapWindows(q, g, g1[b]!);
    out.q.push(q);
    out.k.push(k);
    out.valid.push(valid);
  });
  return out;
}

// ------------------------------------------------------------------------------------------------
// Head: FPN on C3..C5 and the global fc
// ------------------------------------------------------------------------------------------------

/**
 * models.py's FPN additions, torch names `fpn_lateral5`, `fpn_lateral4`, `fpn_output4`, `fpn_lateral3`, `fpn_output3`
 * (`.weight`, `.bias`), c2_xavier_fill (kaiming_uniform a=1, zero bias). No norm (`--fpn-bn` off, the default).
 */
export class ReSimFpn {
  readonly lateral5: Conv2d;
  readonly lateral4: Conv2d;
  readonly output4: Conv2d;
  readonly lateral3: Conv2d;
  readonly output3: Conv2d;

  constructor(store: ParamStore, prefix: string, [c3, c4, c5]: readonly number[], channels: number, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`resim-fpn:${prefix}:${seed}`);
    const conv = (name: string, inChannels: number, kernelSize: number) =>
      new Conv2d(scope.child(name), init, { inChannels, outChannels: channels, kernelSize, padding: (kernelSize - 1) / 2, bias: true, init: 'kaiming_uniform_a1' });
    // models.py builds them in this order: lateral5, lateral4, output4, lateral3, output3.
    this.lateral5 = conv('fpn_lateral5', c5!, 1);
    this.lateral4 = conv('fpn_lateral4', c4!, 1);
    this.output4 = conv('fpn_output4', channels, 3);
    this.lateral3 = conv('fpn_lateral3', c3!, 1);
    this.output3 = conv('fpn_output3', channels, 3);
  }

  /** C3, C4, C5 [B, h, w, C_l] → P4, P3 [B, h, w, F]. */
  apply(c3: tf.Tensor4D, c4: tf.Tensor4D, c5: tf.Tensor4D): { p4: tf.Tensor4D; p3: tf.Tensor4D } {
    return tf.tidy(() => {
      // F.interpolate(scale_factor=2, mode='nearest'): src = floor(dst / 2), as resizeNearestNeighbor without half-pixel centres.
      const up = (x: tf.Tensor4D, like: tf.Tensor4D) => tf.image.resizeNearestNeighbor(x, [like.shape[1], like.shape[2]], false, false);
      let top = this.lateral5.apply(c5);
      const l4 = this.lateral4.apply(c4);
      top = tf.add(l4, up(top, l4));
      const p4 = this.output4.apply(top);
      const l3 = this.lateral3.apply(c3);
      top = tf.add(l3, up(top, l3));
      return { p4, p3: this.output3.apply(top) };
    });
  }
}

/** The encoder's heads: `fpn_*` and `fc.0` / `fc.2` (Linear(C5, H) ReLU Linear(H, D), PyTorch's default init). */
export class ReSimHead {
  readonly fpn: ReSimFpn;
  readonly fc: MlpHead;
  constructor(store: ParamStore, prefix: string, stageChannels: readonly number[], args: ReSimArgs, seed: number | string) {
    this.fpn = new ReSimFpn(store, prefix, stageChannels, args.fpnChannels, seed);
    this.fc = new MlpHead(store, `${prefix}.fc`, { inDim: stageChannels[2]!, hiddenDims: [args.hiddenDim], outDim: args.embedDim, batchNorm: false }, seed);
  }
}

// ------------------------------------------------------------------------------------------------
// Region features, negatives, loss
// ------------------------------------------------------------------------------------------------

/** normalize(PrRoIPool₁ₓ₁(map, window)) of every window of every image: map [B, h, w, F] → [B, n, F]. */
export function regionFeatures(map: tf.Tensor4D, windows: readonly Box[][], spatialScale: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, , , f] = map.shape;
    const n = windows[0]?.length ?? 0;
    const rois: RoiBox[] = windows.flatMap((ws, i) => ws.map((w): RoiBox => [i, w[0], w[1], w[2], w[3]]));
    const pooled = prroiPool(map, rois, { outputSize: 1, spatialScale });
    return l2Normalize(tf.reshape(pooled, [b, n, f]) as tf.Tensor3D, 2);
  });
}

/** normalize(avg_pool2d(map, p, stride 1, no padding)) per position: [B, h, w, F] → [B, h−p+1, w−p+1, F]. */
export function pooledNegatives(map: tf.Tensor4D, pool: number): tf.Tensor4D {
  const [, h, w] = map.shape;
  if (h < pool || w < pool) throw new BadInputError(`ReSim's ${pool}×${pool} negative pooling needs a level map of at least ${pool}×${pool}, got ${h}×${w}: use larger views`, 'pretrain.imageSize');
  return tf.tidy(() => l2Normalize(tf.avgPool(map, pool, 1, 'valid'), 3));
}

/**
 * L_ℓ: per emulated GPU g, InfoNCE over its valid windows (rows) with the positive s_bw and the negatives of the whole
 * batch (`gathered`, P4) or of g's images (P3); the mean over GPUs. r, s [B, n, F]; negatives [B, h', w', F].
 */
export function regionLoss(r: tf.Tensor3D, s: tf.Tensor3D, negatives: tf.Tensor4D, valid: readonly boolean[][], temperature: number, groups: number, gathered: boolean): tf.Scalar {
  return tf.tidy(() => {
    const [b, n, f] = r.shape;
    const per = b / groups;
    const rRows = tf.reshape(r, [b * n, f]) as tf.Tensor2D;
    const sRows = tf.reshape(s, [b * n, f]) as tf.Tensor2D;
    const allNegatives = tf.reshape(negatives, [-1, f]) as tf.Tensor2D;
    const terms: tf.Scalar[] = [];
    for (let g = 0; g < groups; g++) {
      const rows: number[] = [];
      for (let i = g * per; i < (g + 1) * per; i++) valid[i]!.forEach((ok, w) => ok && rows.push(i * n + w));
      if (rows.length === 0) continue; // this GPU's mean over nothing: 0 here (NaN officially)
      const idx = tf.tensor1d(rows, 'int32');
      const q = tf.gather(rRows, idx);
      const lPos = tf.sum(tf.mul(q, tf.gather(sRows, idx)), 1, true) as tf.Tensor2D; // [N_g, 1]
      const negs = gathered ? allNegatives : (tf.reshape(tf.slice(negatives, [g * per, 0, 0, 0], [per, -1, -1, -1]), [-1, f]) as tf.Tensor2D);
      const lNeg = tf.matMul(q, negs, false, true) as tf.Tensor2D; // [N_g, |N|]
      terms.push(infoNce(lPos, lNeg, temperature));
    }
    return (terms.length === 0 ? tf.scalar(0) : tf.div(tf.addN(terms), groups)) as tf.Scalar;
  });
}

// ------------------------------------------------------------------------------------------------
// ReSim
// ------------------------------------------------------------------------------------------------

interface ReSimKeys extends Record<string, tf.Tensor> {
  /** k [B, D] */
  global: tf.Tensor2D;
  /** s on P4, P3 [B, n, F] */
  p4: tf.Tensor3D;
  p3: tf.Tensor3D;
  /** normalised 3×3-pooled key maps [B, h', w', F] */
  p4Negatives: tf.Tensor4D;
  p3Negatives: tf.Tensor4D;
}

export class ReSim implements MethodInstance<ReSimArgs> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly queues: { queue: MemoryQueue };
  readonly state;
  readonly q: Encoder<ReSimHead>;
  readonly k: Encoder<ReSimHead>;

  constructor(
    readonly args: ReSimArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const head = (store: ParamStore, prefix: string, _c: number, s: number | string, b: FeatureBackbone) => {
      if (!b.applyStages || !b.stageChannels || b.stageChannels.length < 3) {
        throw new BadInputError('ReSim needs a backbone with stages C3, C4, C5 (applyStages, stageChannels)', 'backbone');
      }
      return new ReSimHead(store, prefix, b.stageChannels.slice(-3), args, s);
    };
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, head, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    this.queues = { queue: new MemoryQueue(args.queueSize, args.embedDim, seed, 'queue') };
    this.state = { momentum: paramsComponent(this.momentumEncoder), queues: queuesComponent([this.queues.queue]) };
  }

  /** Both levels' windows for a batch, from the views' geometry. */
  windows(batch: MethodBatch): { p4: LevelWindows; p3: LevelWindows } {
    const [g0, g1] = [batch.geometry[0], batch.geometry[1]];
    if (!g0 || !g1 || g0.length !== batch.views[0]!.shape[0]) throw new BadInputError('ReSim needs the geometry of both views of every image', 'inputs.geometry');
    return { p4: batchWindows(this.args.p4Window, g0, g1), p3: batchWindows(this.args.p3Window, g0, g1) };
  }

  /** 1/stride of P4 and P3 (C4, C4/2): from the backbone's stride when it has one, else from the map and view widths. */
  private scales(p4: tf.Tensor4D, p3: tf.Tensor4D, viewWidth: number): { p4: number; p3: number } {
    const stride = this.q.backbone.stride;
    return stride ? { p4: 2 / stride, p3: 4 / stride } : { p4: p4.shape[2] / viewWidth, p3: p3.shape[2] / viewWidth };
  }

  /** C3..C5 of a view → P4, P3 and the global embedding normalize(fc(avgpool(C5))). */
  private encode(enc: Encoder<ReSimHead>, x: tf.Tensor4D, opts: ForwardOptions): { global: tf.Tensor2D; p4: tf.Tensor4D; p3: tf.Tensor4D } {
    const [c3, c4, c5] = enc.backbone.applyStages!(x, opts).slice(-3) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    const { p4, p3 } = enc.head.fpn.apply(c3, c4, c5);
    const global = l2Normalize(enc.head.fc.apply(tf.mean(c5, [1, 2]) as tf.Tensor2D, opts), 1);
    return { global, p4, p3 };
  }

  /** Query from view 0, keys from view 1, one direction (builder.py `forward`). */
  step(batch: MethodBatch, { rng, applyGradients }: StepContext): StepResult {
    const a = this.args;
    const [view0, view1] = batch.views;
    const groups = a.shuffleBnGroups;
    const w = this.windows(batch);
    const viewWidth = batch.geometry[0]![0]!.width;
    const queue = this.queues.queue;
    return momentumStep<ReSimKeys>(
      {
        online: this.online,
        momentumEncoder: this.momentumEncoder,
        momentum: a.momentum,
        encodeKeys: () => {
          // k and both key maps are un-shuffled with the same inverse permutation.
          const { global, p4, p3 } = encodeShuffled(view1!, groups, rng, (x, opts) => this.encode(this.k, x, opts));
          const scale = this.scales(p4, p3, viewWidth);
          return {
            global,
            p4: regionFeatures(p4, w.p4.k, scale.p4),
            p3: regionFeatures(p3, w.p3.k, scale.p3),
            p4Negatives: pooledNegatives(p4, a.negativePool),
            p3Negatives: pooledNegatives(p3, a.negativePool),
          };
        },
        loss: (keys) => {
          const { global, p4, p3 } = this.encode(this.q, view0!, { training: true, bnGroups: groups });
          const scale = this.scales(p4, p3, viewWidth);
          const moco = queueInfoNce(global, keys.global, queue.buffer as tf.Tensor2D, a.temperature);
          // P4 negatives gathered over all GPUs; P3 negatives from the query's own GPU (builder.py).
          const lossP4 = regionLoss(regionFeatures(p4, w.p4.q, scale.p4), keys.p4, keys.p4Negatives, w.p4.valid, a.temperature, groups, true);
          const lossP3 = regionLoss(regionFeatures(p3, w.p3.q, scale.p3), keys.p3, keys.p3Negatives, w.p3.valid, a.temperature, groups, false);
          return { loss: tf.addN([moco, lossP4, lossP3]) as tf.Scalar, parts: { moco, p4: lossP4, p3: lossP3 } };
        },
        afterStep: (keys) => enqueueKeys(queue, keys.global),
      },
      applyGradients,
    );
  }

  dispose(): void {
    this.online.dispose();
    this.momentumEncoder.dispose();
    this.queues.queue.dispose();
  }
}

export const resim = defineMethod({
  name: 'resim',
  title: 'ReSim: MoCo v2 plus InfoNCE of sliding-window regions (PrRoIPool on FPN P4 and P3) across the two views',
  paper: { citation: 'Xiao, Reed, Wang, Keutzer, Darrell. Region Similarity Representation Learning. ICCV 2021', url: 'https://arxiv.org/abs/2103.12902' },
  code: { repo: 'Tete-Xiao/ReSim', commit: 'b6a36ee' },
  args: resimArgs,
  // main_moco.py --aug-plus: ONE flip for both views, then independent RandomResizedCrop(224, (0.2, 1)), blur, CJ, gray.
  consumes: { views: VIEW_PRESETS.mocoV2, sharedFlip: true, geometry: true },
  // README command: SGD lr 0.03 at batch 256, momentum 0.9, wd 1e-4, --cos, no warm-up, 200 epochs.
  optimizer: { kind: 'sgd', baseLr: 0.03, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0 },
  smallScale: {
    args: { queueSize: 1024, momentum: 0.99, fpnChannels: 64 },
    optimizer: { baseLr: 0.3 },
    why: "as MoCo v2 (docs/EXPERIMENTS.md §1: K 1024, m 0.99, lr 0.3 @256), so the two differ only in the region branch; 64 FPN channels = the default backbone's C5 width (256 would be 4× wider than the backbone; the paper's 256 is 1/8 of ResNet-50's 2048)",
  },
  claims: [
    { metric: 'semseg.mIoU', over: 'mocov2', paper: 'abstract: vs MoCo v2, +2.7 AP^bb_75 on PASCAL VOC and +1.1 AP^bb_75 on COCO detection, +1.9 AP^mk on Cityscapes instance segmentation' },
  ],
  validate: (args, sizes) => {
    validateMomentumContrast(args, sizes);
    for (const level of ['p4Window', 'p3Window'] as const) {
      if (queryWindows(args[level], sizes.imageSize).length === 0) throw new BadInputError(`no ${level} window fits a ${sizes.imageSize}-px view`, `args.${level}`);
    }
  },
  create: ({ args, backbone, backboneChannels, seed }) => new ReSim({ ...args, hiddenDim: args.hiddenDim ?? backboneChannels }, backbone, seed),
});
