/**
 * MoCo v3 — "An Empirical Study of Training Self-Supervised Vision Transformers", Chen, Xie, He, ICCV 2021,
 * https://arxiv.org/abs/2104.02057.
 * Authors' code: facebookresearch/moco-v3@c349e6e24f40d3fedb22d973f92defa4cedf37a7 — `moco/builder.py` (MoCo, MoCo_ViT,
 * _build_mlp, contrastive_loss, _update_momentum_encoder), `vits.py` (VisionTransformerMoCo: fixed 2-D sin-cos position
 * embedding, `stop_grad_conv1`, its init), `main_moco.py` (AdamW, adjust_learning_rate, adjust_moco_momentum) and
 * CONFIG.md's ViT recipe (`--optimizer=adamw --lr=1.5e-4 --weight-decay=.1 --epochs=300 --warmup-epochs=40
 * --stop-grad-conv1 --moco-m-cos --moco-t=.2`), `moco/loader.py` (the BYOL-style asymmetric views).
 *
 * Objective (symmetric, the batch's own keys as negatives, no queue):
 *
 *   q_v = pred_θ(proj_θ(f_θ(x_v)))              f = ViT [CLS] after the final norm, proj = base_encoder.head   [B, D]
 *   k_v = proj_ξ(f_ξ(x_v))                       momentum encoder, no gradient                                  [B, D]
 *   ctr(q, k) = 2τ · CE( q̂·k̂ᵀ / τ, arange(B) )   q̂, k̂ = q, k / ‖·‖₂; row n's positive is key n                 scalar
 *   L = ctr(q_0, k_1) + ctr(q_1, k_0)
 *
 * and, every step, before the keys: ξ ← m_t·ξ + (1 − m_t)·θ over the base encoder's parameters (ViT + projector, not
 * the predictor, not BN buffers), m_t = 1 − (1 − m)·(cos(π t/T) + 1)/2 (`--moco-m-cos`), rising from m = 0.99 to 1.
 * proj = _build_mlp(3, C, H, D) and pred = _build_mlp(2, D, H, D): Linear(no bias) → BN → ReLU between layers, a BN
 * without affine at the end of both (shared/heads.ts `MocoV3Mlp`). Each view is its own forward (its own BN batch).
 *
 * The ViT (`pretrain.backbone.arch`, the engine's, timm names) with MoCo v3's changes over the engine's MAE
 * conventions: the position embedding's row and column halves swapped (vits.py builds its grid with `meshgrid(w, h)`
 * 'ij', so the first D/2 channels encode the patch ROW; MAE's the column), qkv initialised as three D×D matrices
 * (U(±√(6/2D))), cls token ~ N(0, 10⁻⁶), patch-projection bias 0, and the patch projection frozen at its random init
 * (`--stop-grad-conv1`: no gradient, so AdamW neither updates nor decays it).
 *
 * Shapes: B batch, C ViT width (embed dim), H MLP hidden (`--moco-mlp-dim`), D output (`--moco-dim`).
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { VIEW_PRESETS } from '../data/augment.js';
import { paramsComponent } from '../engine/checkpoint.js';
import { copyWeights, emaUpdate } from '../engine/ema.js';
import { namedGradients } from '../engine/grads.js';
import { Initializer, ParamStore } from '../engine/params.js';
import { cosineMomentum } from '../engine/schedule.js';
import { sincosPositionEmbedding2d, type VisionTransformer, type VitConfig } from '../engine/vit.js';
import { defineMethod, type MethodBatch, type MethodInstance, type StepContext, type StepResult, type VitBuild } from './shared/contract.js';
import { batchInfoNce, l2Normalize } from './shared/contrast.js';
import { MocoV3Mlp, reinitialize } from './shared/heads.js';

export const mocov3Args = z.strictObject({
  temperature: z.number().gt(1e-4).default(0.2).describe('τ of the contrastive loss (`--moco-t=.2`, the ViT recipe in CONFIG.md; the code default 1.0 is the ResNet one)'),
  momentum: z.number().min(0).lt(1).default(0.99).describe('m, the momentum encoder\'s momentum at step 0 (`--moco-m`, default 0.99)'),
  momentumCosine: z.boolean().default(true).describe('raise m to 1 on a half cosine over the run (`--moco-m-cos`, in every ViT recipe of CONFIG.md); false = constant m'),
  dim: z.number().int().min(1).default(256).describe('D, output width of the projector and the predictor (`--moco-dim`, default 256)'),
  mlpDim: z.number().int().min(1).default(4096).describe('H, hidden width of the projector and the predictor (`--moco-mlp-dim`, default 4096)'),
  stopGradConv1: z.boolean().default(true).describe('freeze the random patch projection (`--stop-grad-conv1`, in every ViT recipe of CONFIG.md; the paper\'s "random patch projection", §4.2)'),
});
export type MoCoV3Args = z.infer<typeof mocov3Args>;

/**
 * vits.py `build_2d_sincos_position_embedding`: [1 + g², C], the cls row zero; token (row i, column j) gets
 * [sin(i·ω), cos(i·ω), sin(j·ω), cos(j·ω)], ω_k = 1/10000^(k/(C/4)). The engine's (MAE's) has the column first, so
 * MoCo v3's is the engine's with the two halves of every row swapped.
 */
export function mocov3PositionEmbedding(embedDim: number, gridSize: number): Float32Array {
  const mae = sincosPositionEmbedding2d(embedDim, gridSize, true);
  const half = embedDim / 2;
  const out = new Float32Array(mae.length);
  for (let r = 0; r < mae.length / embedDim; r++) {
    const base = r * embedDim;
    out.set(mae.subarray(base + half, base + embedDim), base);
    out.set(mae.subarray(base, base + half), base + half);
  }
  return out;
}

/** VisionTransformerMoCo's position embedding, init and `stop_grad_conv1` on an engine ViT built under `prefix`. */
export function makeVitMoCo(store: ParamStore, prefix: string, config: VitConfig, seed: number | string, stopGradConv1: boolean): void {
  const name = (local: string) => `${prefix}.${local}`;
  const c = config.embedDim;
  const g = config.imageSize / config.patchSize;
  reinitialize(store.get(name('pos_embed')), tf.tensor3d(mocov3PositionEmbedding(c, g), [1, g * g + 1, c]));
  const init = new Initializer(`vit-moco:${seed}`);
  // vits.py: qkv "treat the weights of Q, K, V separately": U(±√(6 / (3C/3 + C))); every other Linear xavier_uniform
  // with zero bias (the engine's ViT already), cls token N(0, 1e-6), patch projection xavier on [C, 3p²] (the engine's
  // already) with zero bias.
  const bound = Math.sqrt(6 / (c + c));
  for (let i = 0; i < config.depth; i++) reinitialize(store.get(name(`blocks.${i}.attn.qkv.weight`)), init.uniform([c, 3 * c], bound));
  reinitialize(store.get(name('cls_token')), init.normal([1, 1, c], 1e-6));
  reinitialize(store.get(name('patch_embed.proj.bias')), tf.zeros([c]));
  if (stopGradConv1) for (const local of ['patch_embed.proj.weight', 'patch_embed.proj.bias']) store.get(name(local)).trainable = false;
}

/** One encoder: the ViT under `backbone.*` and its projector under `head.*` (the base encoder's `head`). */
interface MoCoV3Encoder {
  store: ParamStore;
  vit: VisionTransformer;
  projector: MocoV3Mlp;
}

/** proj(f(x)): a key, or a query before the predictor: [B, D]. Train-mode BN (the official model is in `train()`). */
function encode(enc: MoCoV3Encoder, x: tf.Tensor4D): tf.Tensor2D {
  return tf.tidy(() => enc.projector.apply(enc.vit.apply(x).cls, { training: true }));
}

/** builder.py `contrastive_loss`: 2τ · CE(normalize(q)·normalize(k)ᵀ/τ, arange(B)), one process (all_gather = identity). */
export function mocov3ContrastiveLoss(q: tf.Tensor2D, k: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => tf.mul(batchInfoNce(l2Normalize(q, 1), l2Normalize(k, 1), temperature), 2 * temperature) as tf.Scalar);
}

export class MoCoV3 implements MethodInstance<MoCoV3Args> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly state;
  /** Base encoder (ViT + projector), the exported `backbone.*` and what the optimizer trains with the predictor. */
  readonly base: MoCoV3Encoder;
  readonly momentumEnc: MoCoV3Encoder;
  readonly predictor: MocoV3Mlp;
  /** The online tensors the momentum encoder averages: the base encoder (not the predictor). */
  private readonly shared: Map<string, tf.Variable>;

  constructor(
    readonly args: MoCoV3Args,
    vit: VitBuild,
    seed: number,
  ) {
    const build = (s: number | string): MoCoV3Encoder => {
      const store = new ParamStore();
      const net = vit.build(store, 'backbone', s);
      makeVitMoCo(store, 'backbone', vit.config, s, args.stopGradConv1);
      return { store, vit: net, projector: new MocoV3Mlp(store, 'head', 3, vit.config.embedDim, args.mlpDim, args.dim, true, s) };
    };
    this.base = build(seed);
    this.momentumEnc = build(`${seed}-momentum`);
    // builder.py: param_m.data.copy_(param_b.data); param_m.requires_grad = False.
    copyWeights(this.momentumEnc.store.vars, this.base.store.vars);
    for (const v of this.momentumEnc.store.vars.values()) v.trainable = false;
    this.online = this.base.store;
    this.momentumEncoder = this.momentumEnc.store;
    this.shared = new Map(this.online.vars);
    // Online only, added after `shared` is taken: the momentum encoder has no predictor.
    this.predictor = new MocoV3Mlp(this.online, 'predictor', 2, args.dim, args.mlpDim, args.dim, true, seed);
    this.state = { momentum: paramsComponent(this.momentumEncoder) };
  }

  /** m_t of this step: `adjust_moco_momentum` (t/T of the run) or the constant m. */
  momentumAt(step: number, totalSteps: number): number {
    return this.args.momentumCosine ? cosineMomentum(step, this.args.momentum, totalSteps) : this.args.momentum;
  }

  step({ views: [x0, x1] }: MethodBatch, { step, totalSteps, applyGradients }: StepContext): StepResult {
    if (!x0 || !x1) throw new Error('MoCo v3: the step needs two views');
    // 1. ξ ← m_t·ξ + (1−m_t)·θ over parameters (not BN buffers; the frozen patch projection is equal on both sides
    //    and stays so). The official update follows the query forward, which reads the same θ.
    emaUpdate(this.momentumEncoder.vars, this.shared, this.momentumAt(step, totalSteps), 'skip');
    // 2. keys, no gradient: one forward per view (its own BN statistics), as `momentum_encoder(x1)`, `(x2)`.
    const k0 = encode(this.momentumEnc, x0);
    const k1 = encode(this.momentumEnc, x1);
    // 3. queries and the symmetric loss under the tape.
    const t = this.args.temperature;
    let parts: tf.Scalar[] = [];
    const { loss, grads } = namedGradients(() => {
      const q0 = this.predictor.apply(encode(this.base, x0), { training: true });
      const q1 = this.predictor.apply(encode(this.base, x1), { training: true });
      const l01 = mocov3ContrastiveLoss(q0, k1, t);
      const l10 = mocov3ContrastiveLoss(q1, k0, t);
      parts = [tf.keep(l01), tf.keep(l10)];
      return tf.add(l01, l10) as tf.Scalar;
    }, this.online.trainable());
    // 4. optimizer (AdamW over every parameter with a gradient: the frozen patch projection has none).
    applyGradients(grads);
    const [view0, view1] = parts.map((p) => p.dataSync()[0]!);
    const result: StepResult = { loss: loss.dataSync()[0]!, parts: { view0: view0!, view1: view1! } };
    tf.dispose([loss, ...grads.values(), ...parts, k0, k1]);
    return result;
  }

  dispose(): void {
    this.online.dispose();
    this.momentumEncoder.dispose();
  }
}

export const mocov3 = defineMethod({
  name: 'mocov3',
  architecture: 'vit',
  title: 'MoCo v3: symmetric in-batch contrast of a ViT against its momentum encoder, with a predictor',
  paper: {
    citation: 'Chen, Xie, He. An Empirical Study of Training Self-Supervised Vision Transformers. ICCV 2021',
    url: 'https://arxiv.org/abs/2104.02057',
  },
  code: { repo: 'facebookresearch/moco-v3', commit: 'c349e6e24f40d3fedb22d973f92defa4cedf37a7' },
  args: mocov3Args,
  // main_moco.py follows BYOL's recipe: RandomResizedCrop(scale (--crop-min 0.08, 1), bilinear), ColorJitter(0.4, 0.4,
  // 0.2, 0.1) p 0.8, grayscale 0.2, blur σ ∈ [0.1, 2] p 1.0 / 0.1, solarize p 0 / 0.2, flip 0.5: VIEW_PRESETS.pixpro is
  // exactly that pair (PixPro uses BYOL's views with crop scale 0.08 too).
  consumes: { views: VIEW_PRESETS.pixpro, geometry: false },
  // CONFIG.md ViT recipe: AdamW (betas / eps PyTorch's) over model.parameters() in one group (every parameter decayed),
  // lr 1.5e-4 × B/256, wd 0.1, 40 of 300 warm-up epochs, then cosine (adjust_learning_rate).
  optimizer: { kind: 'adamw', baseLr: 1.5e-4, momentum: 0.9, weightDecay: 0.1, adamwDecay: 'all', warmupFraction: 40 / 300 },
  smallScale: {
    args: { mlpDim: 512, dim: 128 },
    optimizer: { baseLr: 1.5e-3 },
    why:
      'a 96-wide 4-block ViT (vit-micro-64) instead of ViT-S/B (384 / 768 wide): projector / predictor 512 / 128 instead of 4096 / 256 (the hidden width ' +
      '~5× the encoder width, as 4096 is for ViT-B); lr ×10 (1.5e-3 @256, 1.9e-4 at B=32) for a run of a few thousand steps instead of 300 epochs; ' +
      'τ 0.2, m 0.99 → 1 (cosine), wd 0.1, warm-up 40/300 and the frozen patch projection as official',
  },
  create: ({ args, vit, seed }) => {
    if (!vit) throw new Error('mocov3 trains a Vision Transformer: the run must configure a ViT preset (pretrain.backbone.arch)');
    return new MoCoV3(args, vit, seed);
  },
});
