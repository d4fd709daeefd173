/**
 * LC-loss — "Self-Supervised Learning with Local Contrastive Loss for Detection and Semantic Segmentation", Islam,
 * Lundell, Sawhney, Sinha, Morales, Radke, WACV 2023, https://arxiv.org/abs/2207.04398.
 * Official code: none (commit `none`): no public repository by title, authors or phrases (reference/methods.md §8). What
 * was readable of the paper (WACV version, page 1, §1 and §2): the LC-loss makes "the corresponding pixels of two
 * augmented versions of the same image similar", from KNOWN pixel correspondences (unlike DenseCL), "can be added to any
 * self-supervised learning method, such as BYOL", and the reported model is the BYOL variant. The method section was not
 * readable; every detail below marked [A#] is our reading, listed with its reason on docs/methods/lcloss.md.
 * The base objective is BYOL's (Grill et al., NeurIPS 2020, https://arxiv.org/abs/2006.07733; deepmind-research
 * byol/byol_experiment.py, byol/utils/networks.py, byol/utils/helpers.py).
 *
 *   L = L_BYOL + λ · L_LC            (λ = 0: BYOL alone; the local branch is then not computed)
 *
 * Global (BYOL, eq. 2 of the BYOL paper and its symmetrisation), per view v ∈ {0, 1}, on the last feature map (C5):
 *   z_v = g_θ(avgpool(f_θ(view_v))),  p_v = q_θ(z_v),  z'_v = g_ξ(avgpool(f_ξ(view_v)))  (target, no gradient)
 *   L_BYOL = 1/B Σ_b [ ℓ(p_0b, z'_1b) + ℓ(p_1b, z'_0b) ],   ℓ(p, z) = 2 − 2·cos(p, z)
 *   g, q: BYOL's MLP, Linear(+bias) → BN → ReLU → Linear(no bias) (shared/heads.ts ByolMlpHead).
 * Local (LC-loss, our reading):
 *   u_v = normalize(l_θ(f_θ(view_v)))  [B, S², D] per location,   u'_v = normalize(l_ξ(f_ξ(view_v)))  (target)   [A1]
 *     l = a local projector, BYOL's MLP as 1×1 convs (BN over B·h·w), on C5; no predictor on the local branch [A1]
 *   c_ab(i) = the cell of view b's grid holding the image point at the centre of cell i of view a, or −1 where view b
 *     does not see it (stages/data/geometry.ts `correspondingCells`: crop, scale and flip of both views)          [A2]
 *   LC(a→b) = 1/|V_ab| Σ_{(b,i) ∈ V_ab} −log( exp(u_a,i·u'_b,c(i)/τ) / Σ_{j<S²} exp(u_a,i·u'_b,j/τ) )          [A3]
 *     V_ab = every cell i of every image with c_ab(i) ≥ 0 (all cells of the grid, no subsampling);
 *     positive = the corresponding location in the other view's TARGET map; negatives = every other location of that
 *     same map (same image); an empty V_ab gives 0
 *   L_LC = LC(0→1) + LC(1→0)   (both directions summed, as BYOL symmetrises its term)                          [A4]
 * Target: initialised as a copy of the online network (BYOL); after the optimizer step (BYOL's update order),
 *   ξ ← m_k·ξ + (1−m_k)·θ over the backbone, the projector and the local projector (not the predictor, not BN buffers),
 *   m_k = 1 − (1 − m)·(cos(πk/K) + 1)/2, k the 0-based step, K the total steps (byol/utils/schedules.py target_ema).
 *
 * Shapes: B batch, h×w C5 map (h = w, S² = h·w), C backbone channels, H projector hidden, D projector out.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import { VIEW_PRESETS, type ViewSpec } from '../data/augment.js';
import { correspondingCells, type ViewGeometry } from '../data/geometry.js';
import { paramsComponent } from '../engine/checkpoint.js';
import { emaUpdate } from '../engine/ema.js';
import { namedGradients } from '../engine/grads.js';
import type { ParamStore } from '../engine/params.js';
import { cosineMomentum } from '../engine/schedule.js';
import { defineMethod, type BackboneFactory, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { cosineRegression, l2Normalize } from './shared/contrast.js';
import { ByolMlpHead } from './shared/heads.js';
import { buildEncoderPair, type Encoder } from './shared/momentum-encoder.js';

/** LC-loss's arguments: BYOL's (byol_experiment.py / the BYOL paper, 1000-epoch recipe) plus the local term's. */
export const lclossArgs = z.strictObject({
  lambda: z
    .number()
    .min(0)
    .default(1)
    .describe('λ, weight of the local contrastive term in L = L_BYOL + λ·L_LC (not readable in the paper: 1, our reading); 0 = the base method, BYOL, exactly (the local branch is skipped)'),
  temperature: z.number().gt(1e-4).default(0.2).describe('τ of the local InfoNCE (not readable in the paper: 0.2, the DenseCL / MoCo v2 value, our reading)'),
  momentum: z.number().min(0).lt(1).default(0.996).describe('m, base EMA of the target; m_k rises from m to 1 on a cosine (BYOL `base_target_ema` 0.996, 1000 ep; 0.99 for 300 ep)'),
  projectorHidden: z.number().int().min(1).default(4096).describe('H, hidden width of the projector, the predictor and the local projector (BYOL `mlp_hidden_size` 4096)'),
  projectorOut: z.number().int().min(1).default(256).describe('D, output width of the projector, the predictor and the local projector (BYOL `projection_size` 256)'),
});
export type LcLossArgs = z.infer<typeof lclossArgs>;

/** BYOL's views (the BYOL paper, Table 6): the PixPro preset is BYOL's colour recipe at crop scale (0.08, 1); BYOL resizes bicubic. */
const byolViews = (size: number): ViewSpec[] => VIEW_PRESETS.pixpro(size).map((v) => ({ ...v, interpolation: 'bicubic' as const }));

// ------------------------------------------------------------------------------------------------
// Correspondence and the local contrastive loss
// ------------------------------------------------------------------------------------------------

/**
 * c_ab for a batch: [B·S²] (row-major per image), the cell of view b that sees the centre of cell i of view a, −1 where
 * b does not see it, on a g×g grid over both views (the shared, property-tested `correspondingCells`).
 */
export function lcCorrespondence(geometryA: readonly ViewGeometry[], geometryB: readonly ViewGeometry[], g: number): Int32Array {
  if (geometryA.length !== geometryB.length) throw new Error(`lcCorrespondence: ${geometryA.length} vs ${geometryB.length} geometries`);
  const out = new Int32Array(geometryA.length * g * g);
  geometryA.forEach((ga, b) => out.set(correspondingCells(ga, geometryB[b]!, g), b * g * g));
  return out;
}

/**
 * LC(a→b): u [B, S², D] online (normalised), uPrime [B, S², D] target of the other view (normalised), c_ab [B·S²].
 * Mean over the cells with a correspondence of −log softmax_j(u_i·u'_j / τ)[c(i)]; 0 when no cell has one.
 */
export function localContrast(u: tf.Tensor3D, uPrime: tf.Tensor3D, correspondence: Int32Array, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const [b, s2] = u.shape;
    if (correspondence.length !== b * s2) throw new Error(`localContrast: ${correspondence.length} correspondences for ${b}×${s2} cells`);
    const positive = new Float32Array(b * s2 * s2); // one-hot of c(i) per row, all-zero rows where c(i) = −1
    const valid = new Float32Array(b * s2);
    let count = 0;
    correspondence.forEach((c, row) => {
      if (c < 0) return;
      positive[row * s2 + c] = 1;
      valid[row] = 1;
      count++;
    });
    const logits = tf.div(tf.matMul(u, uPrime, false, true), temperature); // [B, S², S²]
    const positiveLogit = tf.sum(tf.mul(logits, tf.tensor3d(positive, [b, s2, s2])), 2); // [B, S²]
    const perCell = tf.sub(tf.logSumExp(logits, 2), positiveLogit); // [B, S²]
    return tf.div(tf.sum(tf.mul(perCell, tf.tensor2d(valid, [b, s2]))), Math.max(count, 1)) as tf.Scalar;
  });
}

// ------------------------------------------------------------------------------------------------
// Encoders and the loss
// ------------------------------------------------------------------------------------------------

/** The heads one encoder (online or target) carries: `neck.projector.*` (g) and `neck.local_projector.*` (l). */
export interface LcHeads {
  projector: ByolMlpHead;
  local: ByolMlpHead;
}
export type LcEncoder = Encoder<LcHeads>;

/** What the target network gives for one view: z' [B, D] (not normalised) and u' [B, S², D] (normalised). */
export interface LcTargets {
  z: tf.Tensor2D;
  u: tf.Tensor3D;
}

/** Per-location projection, normalised: l(map) [B, h, w, D] → [B, S², D]. */
function localEmbed(local: ByolMlpHead, map: tf.Tensor4D): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, h, w] = map.shape;
    const u = local.applyMap(map, { training: true });
    return l2Normalize(tf.reshape(u, [b, h * w, u.shape[3]]) as tf.Tensor3D, 2);
  });
}

/** z'_v and u'_v of one view from a C5 map of the target network (u' only when the local term is on). */
export function lcTargets(heads: LcHeads, map: tf.Tensor4D, withLocal: boolean): LcTargets {
  const pooled = tf.mean(map, [1, 2]) as tf.Tensor2D;
  const z = heads.projector.apply(pooled, { training: true });
  pooled.dispose();
  return { z, u: withLocal ? localEmbed(heads.local, map) : (tf.zeros([map.shape[0], 0, 0]) as tf.Tensor3D) };
}

/**
 * L = L_BYOL + λ·L_LC from the online C5 maps of both views (what the gradient flows through), the target outputs and
 * the correspondences c_01, c_10. Parts (weighted): `global` = L_BYOL, `local` = λ·L_LC.
 */
export function lclossLoss(
  heads: LcHeads,
  predictor: ByolMlpHead,
  maps: [tf.Tensor4D, tf.Tensor4D],
  targets: [LcTargets, LcTargets],
  correspondences: [Int32Array, Int32Array],
  args: Pick<LcLossArgs, 'lambda' | 'temperature'>,
): { loss: tf.Scalar; parts: Record<string, tf.Scalar> } {
  return tf.tidy(() => {
    // Global: one projector / predictor call per view (BN statistics per view, as BYOL's per-view forwards).
    const p = maps.map((m) => predictor.apply(heads.projector.apply(tf.mean(m, [1, 2]) as tf.Tensor2D, { training: true }), { training: true }));
    const global = tf.mean(tf.add(cosineRegression(p[0]!, targets[1].z), cosineRegression(p[1]!, targets[0].z))) as tf.Scalar;
    if (args.lambda === 0) return { loss: global, parts: { global, local: tf.scalar(0) } };
    const u = maps.map((m) => localEmbed(heads.local, m));
    const lc = tf.add(localContrast(u[0]!, targets[1].u, correspondences[0], args.temperature), localContrast(u[1]!, targets[0].u, correspondences[1], args.temperature));
    const local = tf.mul(lc, args.lambda) as tf.Scalar;
    return { loss: tf.add(global, local) as tf.Scalar, parts: { global, local } };
  });
}

// ------------------------------------------------------------------------------------------------
// LC-loss (on BYOL)
// ------------------------------------------------------------------------------------------------

export class LcLoss implements MethodInstance<LcLossArgs> {
  readonly online: ParamStore;
  readonly target: ParamStore;
  readonly state;
  readonly q: LcEncoder;
  readonly k: LcEncoder;
  readonly predictor: ByolMlpHead;
  /** The online tensors the target averages: backbone, projector, local projector (not the predictor). */
  private readonly shared: Map<string, tf.Variable>;

  constructor(
    readonly args: LcLossArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const heads = (store: ParamStore, prefix: string, c: number, s: number | string): LcHeads => ({
      projector: new ByolMlpHead(store, `${prefix}.projector`, c, args.projectorHidden, args.projectorOut, s),
      local: new ByolMlpHead(store, `${prefix}.local_projector`, c, args.projectorHidden, args.projectorOut, s),
    });
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, heads, seed)); // target = a copy of the online network (BYOL)
    this.online = this.q.store;
    this.target = this.k.store;
    this.shared = new Map(this.online.vars);
    // Online only, added after `shared` is taken: the target has no predictor.
    this.predictor = new ByolMlpHead(this.online, 'predictor', args.projectorOut, args.projectorHidden, args.projectorOut, seed);
    this.state = { target: paramsComponent(this.target) };
  }

  step(batch: MethodBatch, { step, totalSteps, applyGradients }: StepContext): StepResult {
    const [view0, view1] = batch.views as [tf.Tensor4D, tf.Tensor4D];
    const withLocal = this.args.lambda > 0;
    // 1. target outputs of both views (one forward per view), no gradient.
    const targets = [view0, view1].map((v) => {
      const map = tf.tidy(() => this.k.backbone.apply(v, { training: true }));
      const out = lcTargets(this.k.head, map, withLocal);
      map.dispose();
      return out;
    }) as [LcTargets, LcTargets];
    // 2. online forward (per view) and loss under the tape; correspondences once the grid is known.
    let correspondences: [Int32Array, Int32Array] = [new Int32Array(0), new Int32Array(0)];
    let parts: Record<string, tf.Scalar> = {};
    const { loss, grads } = namedGradients(() => {
      const maps: [tf.Tensor4D, tf.Tensor4D] = [this.q.backbone.apply(view0, { training: true }), this.q.backbone.apply(view1, { training: true })];
      if (withLocal) correspondences = this.correspondences(batch.geometry, maps[0]);
      const out = lclossLoss(this.q.head, this.predictor, maps, targets, correspondences, this.args);
      parts = Object.fromEntries(Object.entries(out.parts).map(([k, t]) => [k, tf.keep(t)]));
      return out.loss;
    }, this.online.trainable());
    // 3. optimizer.
    applyGradients(grads);
    const result: StepResult = { loss: loss.dataSync()[0]!, parts: Object.fromEntries(Object.entries(parts).map(([k, t]) => [k, t.dataSync()[0]!])) };
    tf.dispose([loss, ...grads.values(), ...Object.values(parts), ...targets.flatMap((t) => [t.z, t.u])]);
    // 4. ξ ← m_k·ξ + (1−m_k)·θ after the optimizer step (BYOL's update order), parameters only.
    emaUpdate(this.target.vars, this.shared, cosineMomentum(step, this.args.momentum, totalSteps), 'skip');
    return result;
  }

  /** c_01 and c_10 on the C5 grid of this batch. */
  private correspondences(geometry: ViewGeometry[][], map: tf.Tensor4D): [Int32Array, Int32Array] {
    const [b, h, w] = map.shape;
    const [geometry0, geometry1] = geometry;
    if (h !== w) throw new BadInputError(`LC-loss needs a square feature map, got ${h}×${w}`, 'pretrain.imageSize');
    if (geometry0?.length !== b || geometry1?.length !== b) throw new Error(`LC-loss: batch.geometry must hold both views of all ${b} images`);
    return [lcCorrespondence(geometry0, geometry1, h), lcCorrespondence(geometry1, geometry0, h)];
  }

  dispose(): void {
    this.online.dispose();
    this.target.dispose();
  }
}

export const lcloss = defineMethod({
  name: 'lcloss',
  title: 'LC-loss: BYOL plus an InfoNCE between geometrically corresponding C5 locations of the two views (no official code; our reading)',
  paper: {
    citation: 'Islam, Lundell, Sawhney, Sinha, Morales, Radke. Self-Supervised Learning with Local Contrastive Loss for Detection and Semantic Segmentation. WACV 2023',
    url: 'https://arxiv.org/abs/2207.04398',
  },
  code: { repo: 'none (no official code released)', commit: 'none' },
  args: lclossArgs,
  consumes: { views: byolViews, geometry: true },
  // BYOL (the base method; the paper's own schedule was not readable): LARS (BN / bias excluded), base lr 0.2 per 256,
  // momentum 0.9, wd 1.5e-6, 10 warm-up epochs of 1000, cosine.
  optimizer: { kind: 'lars', baseLr: 0.2, momentum: 0.9, weightDecay: 1.5e-6, warmupFraction: 0.01 },
  smallScale: {
    args: { projectorHidden: 512, projectorOut: 128, momentum: 0.99 },
    optimizer: { baseLr: 0.3, weightDecay: 1e-6 },
    why: 'the default C5 has 128 channels, not 2048: projector / predictor / local projector 512 / 128 instead of 4096 / 256; BYOL\'s shorter (300-epoch) recipe for short runs: m 0.99, lr 0.3, wd 1e-6',
  },
  claims: [
    { metric: 'semseg.mIoU', over: 'mocov2', paper: 'WACV p.1: BYOL+LC 77.8 mIoU Cityscapes (+0.6 vs SSL SOTA), 72.1 VOC seg (+1.0); abstract: +0.6 Cityscapes seg over SOTA SSL' },
    { metric: 'unsup-seg.mIoU', over: 'mocov2', paper: 'stand-in for detection: WACV p.1 COCO det 40.6 AP (+1.9 vs SSL SOTA), VOC det 60.1 AP (+1.4); abstract: +1.9 COCO det, +1.4 VOC det' },
  ],
  create: ({ args, backbone, seed }) => new LcLoss(args, backbone, seed),
});
