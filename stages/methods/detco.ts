/**
 * DetCo — "DetCo: Unsupervised Contrastive Learning for Object Detection", Xie, Ding, Wang, Zhan, Xu, Sun, Li, Luo,
 * ICCV 2021, https://arxiv.org/abs/2102.04803.
 * Authors' repository: xieenze/DetCo@adf4947 — it released the detectron2 transfer configs, the weights and the paper's
 * pipeline figure (`imgs/pipeline.png` = Fig. 2), NOT the pretext code ("Pretext Task Pretrain: Coming Soon", README;
 * issue #1). This module is therefore a transcription of the paper; docs/methods/detco.md marks, point by point, what
 * comes from the paper (abstract, Fig. 2) and what is inferred.
 *
 * Built on MoCo v2. Image x gives two global views x1, x2 and two local patch sets x3, x4: each a 3×3 jigsaw of its own
 * augmented crop (Fig. 2: T1..T4 on x; the patches of x4 appear out of order). The query encoder (f_θ, heads) sees x1
 * and x3, the momentum encoder (f_ξ, ξ ← m·ξ + (1−m)·θ) sees x2 and x4. At every backbone level l ∈ {Res2..Res5}
 * (multi-level supervision, abstract (1) and Fig. 2), with its own heads g_l (global) and h_l (local):
 *
 *   q_g^l = n(g_l(avgpool C_l(x1)))                          k_g^l = n(g_l^ξ(avgpool C_l^ξ(x2)))          [B, D]
 *   q_l^l = n(h_l([avgpool C_l(x3_s)]_{s=1..9}))             k_l^l = n(h_l^ξ([avgpool C_l^ξ(x4_s)]_s))   [B, D]
 *
 * n = L2 normalisation, [·]_s the concatenation of the 9 patches' pooled features in jigsaw order (9·C_l wide). With
 * InfoNCE(q, k, Q) = −1/B Σ_b log(exp(q_b·k_b/τ) / (exp(q_b·k_b/τ) + Σ_j exp(q_b·Q_j/τ))) and two queues per level,
 * Q_g^l (global keys k_g^l) and Q_l^l (local keys k_l^l) (Fig. 2: "Queue_g/l"):
 *
 *   L = Σ_l w_l · ( InfoNCE(q_g^l, k_g^l, Q_g^l)     global ↔ global   (Fig. 2 L_g2g)
 *                 + InfoNCE(q_l^l, k_g^l, Q_g^l)     local → global    (Fig. 2 L_l2g: Queue_g feeds it)
 *                 + InfoNCE(q_l^l, k_l^l, Q_l^l) )   local ↔ local     (Fig. 2 L_l2l)
 *
 * w = (0.1, 0.4, 0.7, 1.0) for Res2..Res5 (recalled from the paper's text; see the card). One direction (queries x1/x3,
 * keys x2/x4) as MoCo v2. After the optimizer step, k_g^l is enqueued in Q_g^l and k_l^l in Q_l^l.
 *
 * Shapes: B batch, G = 3 jigsaw grid (G² = 9 patches), P patch side, S global view side, C_l channels of level l,
 * H_l head hidden width, D embedding, K queue length.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import { VIEW_PRESETS, type ViewSpec } from '../data/augment.js';
import { paramsComponent, queuesComponent } from '../engine/checkpoint.js';
import { shuffleBatch, type ForwardOptions } from '../engine/layers.js';
import type { ParamStore } from '../engine/params.js';
import { MemoryQueue } from '../engine/queue.js';
import { defineMethod, type BackboneFactory, type FeatureBackbone, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { enqueueKeys, l2Normalize, queueInfoNce } from './shared/contrast.js';
import { GlobalMlpHead } from './shared/heads.js';
import { buildEncoderPair, momentumContrastArgs, momentumStep, validateMomentumContrast, type Encoder } from './shared/momentum-encoder.js';

/** The jigsaw grid: 3×3 patches per local view. */
export const JIGSAW_GRID = 3;

/**
 * Side P of a local patch for global views of `imageSize` pixels: 64/224 of it (64-px patches beside 224-px global
 * views), rounded to a multiple of 8 (the small-image stem's C5 stride, so every patch has a whole C5 cell), at least 8.
 * 224 → 64, 64 → 16, 32 → 8. The patch sets are consumed as views of G·P pixels and cut in the step.
 */
export function localPatchSize(imageSize: number): number {
  return Math.max(8, Math.round((imageSize * 64) / 224 / 8) * 8);
}

/**
 * The four views: x1, x2 global (MoCo v2 `--aug-plus` at `imageSize`), x3, x4 the sources of the two patch sets (the
 * same recipe at G·P pixels, cut into G×G patches of P pixels in the step).
 */
export function detcoViews(imageSize: number): ViewSpec[] {
  return [...VIEW_PRESETS.mocoV2(imageSize), ...VIEW_PRESETS.mocoV2(JIGSAW_GRID * localPatchSize(imageSize))];
}

export const detcoArgs = momentumContrastArgs.extend({
  hiddenDim: z
    .number()
    .int()
    .min(1)
    .optional()
    .describe('H, hidden width of every head (global and local); default each level\'s channels C_l (inferred from MoCo v2\'s hidden = input width; the paper gives no width)'),
  levelWeights: z
    .array(z.number().min(0))
    .length(4)
    .default([0.1, 0.4, 0.7, 1.0])
    .describe('w_l, loss weight of Res2, Res3, Res4, Res5 (0.1/0.4/0.7/1.0, recalled from the paper\'s multi-level supervision; not in its abstract or figure)'),
  shufflePatches: z
    .boolean()
    .default(true)
    .describe('concatenate each image\'s 9 patches in a random order, drawn per image and per patch set ("jigsaw"; inferred from Fig. 2, where the patches of x4 are out of order, and PIRL\'s jigsaw)'),
});
export type DetCoArgs = z.infer<typeof detcoArgs>;

// ------------------------------------------------------------------------------------------------
// Jigsaw patches
// ------------------------------------------------------------------------------------------------

/** One permutation of the G² cells per image (the identity when not shuffled): `order[b][s]` = the cell at slot s. */
export function drawPatchOrders(rng: Rng, batch: number, shuffle: boolean): number[][] {
  const cells = JIGSAW_GRID * JIGSAW_GRID;
  return Array.from({ length: batch }, () => {
    const order = Array.from({ length: cells }, (_, c) => c);
    return shuffle ? rng.shuffle(order) : order;
  });
}

/**
 * A patch-set source view [B, G·P, G·P, 3] cut into its G×G cells (row-major: cell c = row·G + column), put in each
 * image's slot order and stacked vertically: [B, G²·P, P, 3], rows s·P..(s+1)·P of image b = cell `order[b][s]`. Kept
 * per image (not [B·G², P, P, 3]) so that shuffle-BN moves whole images, as a per-GPU batch of images would.
 */
export function jigsawStrip(view: tf.Tensor4D, order: readonly (readonly number[])[]): tf.Tensor4D {
  const [b, h, w, ch] = view.shape;
  const g = JIGSAW_GRID;
  if (h !== w || h % g !== 0) throw new Error(`DetCo: a patch-set view must be square with a side divisible by ${g}, got ${h}×${w}`);
  if (order.length !== b) throw new Error(`DetCo: ${order.length} patch orders for ${b} images`);
  const p = h / g;
  return tf.tidy(() => {
    const cells = tf.reshape(tf.transpose(tf.reshape(view, [b, g, p, g, p, ch]), [0, 1, 3, 2, 4, 5]), [b * g * g, p, p, ch]); // [B·G², P, P, 3]
    const index = tf.tensor1d(order.flatMap((o, i) => o.map((c) => i * g * g + c)), 'int32');
    return tf.reshape(tf.gather(cells, index), [b, g * g * p, p, ch]) as tf.Tensor4D; // [B, G²·P, P, 3]
  });
}

/** [n, G²·P, P, 3] strips → [n·G², P, P, 3] patches, image-major (row i·G² + s = slot s of image i). */
function patchBatch(strip: tf.Tensor4D): tf.Tensor4D {
  const [n, hs, p, ch] = strip.shape;
  return tf.reshape(strip, [n * (hs / p), p, p, ch]);
}

// ------------------------------------------------------------------------------------------------
// Heads (one global and one local MLP per level)
// ------------------------------------------------------------------------------------------------

/**
 * Per level l (`res2`..`res5`): `global` = MoCo v2's head Linear(C_l, H_l) → ReLU → Linear(H_l, D) on the
 * average-pooled C_l map; `local` = the same on the concatenated pooled features of the 9 patches, Linear(9·C_l, H_l)
 * first. Torch names `neck.res<l>.{global,local}.mlp.{0,2}.*`; PyTorch's default Linear init.
 */
export class DetCoHead {
  readonly levels: ReadonlyArray<{ name: string; global: GlobalMlpHead; local: GlobalMlpHead }>;

  constructor(store: ParamStore, prefix: string, stageChannels: readonly number[], hidden: readonly number[], embedDim: number, seed: number | string) {
    const g2 = JIGSAW_GRID * JIGSAW_GRID;
    this.levels = stageChannels.map((c, l) => {
      const name = `res${l + 2}`;
      return {
        name,
        global: new GlobalMlpHead(store, `${prefix}.${name}.global`, c, hidden[l]!, embedDim, seed),
        local: new GlobalMlpHead(store, `${prefix}.${name}.local`, g2 * c, hidden[l]!, embedDim, seed),
      };
    });
  }

  /** Global view's C2..C5 → q_g^l = n(g_l(avgpool C_l)), [B, D] per level. */
  globalEmbeddings(stages: readonly tf.Tensor4D[]): tf.Tensor2D[] {
    return stages.map((c, l) => l2Normalize(this.levels[l]!.global.apply(c), 1));
  }

  /** The patches' C2..C5 ([B·G², h, w, C_l], image-major) → q_l^l = n(h_l([avgpool C_l(x_s)]_s)), [B, D] per level. */
  localEmbeddings(stages: readonly tf.Tensor4D[]): tf.Tensor2D[] {
    const g2 = JIGSAW_GRID * JIGSAW_GRID;
    return stages.map((c, l) =>
      tf.tidy(() => {
        const pooled = tf.mean(c, [1, 2]); // [B·G², C_l]
        const concatenated = tf.reshape(pooled, [-1, g2 * c.shape[3]]) as tf.Tensor2D; // [B, G²·C_l], slot-major
        return l2Normalize(this.levels[l]!.local.applyPooled(concatenated), 1);
      }),
    );
  }
}

/** Every level's global and local embeddings of one encoder. */
export interface DetCoEmbeddings {
  global: tf.Tensor2D[];
  local: tf.Tensor2D[];
}

/**
 * L = Σ_l w_l (InfoNCE(q_g, k_g, Q_g) + InfoNCE(q_l, k_g, Q_g) + InfoNCE(q_l, k_l, Q_l)); queues given as [K, D] rows.
 * Parts: `res<l>.g2g`, `res<l>.l2g`, `res<l>.l2l`, each already multiplied by w_l (they add up to L).
 */
export function detcoLoss(
  q: DetCoEmbeddings,
  k: DetCoEmbeddings,
  queues: { global: readonly tf.Tensor2D[]; local: readonly tf.Tensor2D[] },
  weights: readonly number[],
  temperature: number,
): { loss: tf.Scalar; parts: Record<string, tf.Scalar> } {
  const parts: Record<string, tf.Scalar> = {};
  weights.forEach((w, l) => {
    const level = `res${l + 2}`;
    parts[`${level}.g2g`] = tf.tidy(() => tf.mul(w, queueInfoNce(q.global[l]!, k.global[l]!, queues.global[l]!, temperature)));
    parts[`${level}.l2g`] = tf.tidy(() => tf.mul(w, queueInfoNce(q.local[l]!, k.global[l]!, queues.global[l]!, temperature)));
    parts[`${level}.l2l`] = tf.tidy(() => tf.mul(w, queueInfoNce(q.local[l]!, k.local[l]!, queues.local[l]!, temperature)));
  });
  return { loss: tf.addN(Object.values(parts)) as tf.Scalar, parts };
}

// ------------------------------------------------------------------------------------------------
// DetCo
// ------------------------------------------------------------------------------------------------

export class DetCo implements MethodInstance<DetCoArgs> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  /** Per level: Q_g^l (`queue_g_res<l>`) and Q_l^l (`queue_l_res<l>`). */
  readonly queues: { global: MemoryQueue[]; local: MemoryQueue[] };
  readonly state;
  readonly q: Encoder<DetCoHead>;
  readonly k: Encoder<DetCoHead>;
  /** Where each step's patch orders come from (the parity test injects the reference's draws). */
  patchOrders: (rng: Rng, batch: number) => number[][];

  constructor(
    readonly args: DetCoArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const head = (store: ParamStore, prefix: string, _c: number, s: number | string, b: FeatureBackbone) => {
      const channels = b.stageChannels;
      if (!channels || !b.applyStages) throw new BadInputError('DetCo supervises every backbone stage: the backbone must expose them (applyStages, stageChannels)', 'pretrain.backbone');
      if (channels.length !== args.levelWeights.length) {
        throw new BadInputError(`${args.levelWeights.length} level weights for a backbone with ${channels.length} stages`, 'args.levelWeights');
      }
      return new DetCoHead(store, prefix, channels, channels.map((c) => args.hiddenDim ?? c), args.embedDim, s);
    };
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, head, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    const levels = this.q.head.levels.map((l) => l.name);
    this.queues = {
      global: levels.map((n) => new MemoryQueue(args.queueSize, args.embedDim, seed, `queue_g_${n}`)),
      local: levels.map((n) => new MemoryQueue(args.queueSize, args.embedDim, seed, `queue_l_${n}`)),
    };
    this.state = { momentum: paramsComponent(this.momentumEncoder), queues: queuesComponent([...this.queues.global, ...this.queues.local]) };
    this.patchOrders = (rng, batch) => drawPatchOrders(rng, batch, args.shufflePatches);
  }

  /** One encoder on a global view and on a patch strip: every level's q_g / k_g and q_l / k_l. */
  private embed(enc: Encoder<DetCoHead>, global: tf.Tensor4D, strip: tf.Tensor4D, opts: ForwardOptions): DetCoEmbeddings {
    return {
      global: enc.head.globalEmbeddings(enc.backbone.applyStages!(global, opts)),
      local: enc.head.localEmbeddings(enc.backbone.applyStages!(patchBatch(strip), opts)),
    };
  }

  /**
   * Keys without gradient. Shuffle-BN over G emulated GPUs as MoCo: one permutation of the images, used for the global
   * view and for the patch strips (each image's 9 patches stay on its GPU), BN per group, outputs un-permuted.
   */
  private encodeKeys(view: tf.Tensor4D, strip: tf.Tensor4D, rng: Rng): Record<string, tf.Tensor2D> {
    const groups = this.args.shuffleBnGroups;
    const opts: ForwardOptions = { training: true, bnGroups: groups };
    const flat = (e: DetCoEmbeddings) => Object.fromEntries([...e.global.map((t, l) => [`g${l}`, t]), ...e.local.map((t, l) => [`l${l}`, t])]) as Record<string, tf.Tensor2D>;
    if (groups <= 1) return flat(this.embed(this.k, view, strip, { training: true, bnGroups: 1 }));
    const { perm, inverse } = shuffleBatch(view.shape[0], rng);
    const out = flat(this.embed(this.k, tf.gather(view, perm), tf.gather(strip, perm), opts));
    const restored = Object.fromEntries(Object.entries(out).map(([name, t]) => [name, tf.gather(t, inverse) as tf.Tensor2D]));
    tf.dispose([perm, inverse]);
    return restored;
  }

  /** x1, x2 global; x3, x4 patch-set sources. Queries from x1 and x3, keys from x2 and x4. */
  step({ views }: MethodBatch, { rng, applyGradients }: StepContext): StepResult {
    if (views.length !== 4) throw new Error(`DetCo consumes 4 views (2 global, 2 patch-set sources), got ${views.length}`);
    const [x1, x2, x3, x4] = views as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    const b = x1.shape[0];
    const levels = this.args.levelWeights.length;
    const orderQ = this.patchOrders(rng, b);
    const orderK = this.patchOrders(rng, b);
    const stripQ = jigsawStrip(x3, orderQ); // [B, 9P, P, 3]
    const stripK = jigsawStrip(x4, orderK);
    const queueRows = (qs: MemoryQueue[]) => qs.map((q) => q.buffer as tf.Tensor2D);
    const result = momentumStep<Record<string, tf.Tensor2D>>(
      {
        online: this.online,
        momentumEncoder: this.momentumEncoder,
        momentum: this.args.momentum,
        encodeKeys: () => this.encodeKeys(x2, stripK, rng),
        loss: (keys) => {
          const q = this.embed(this.q, x1, stripQ, { training: true, bnGroups: this.args.shuffleBnGroups });
          const k: DetCoEmbeddings = {
            global: Array.from({ length: levels }, (_, l) => keys[`g${l}`]!),
            local: Array.from({ length: levels }, (_, l) => keys[`l${l}`]!),
          };
          return detcoLoss(q, k, { global: queueRows(this.queues.global), local: queueRows(this.queues.local) }, this.args.levelWeights, this.args.temperature);
        },
        afterStep: (keys) => {
          this.queues.global.forEach((queue, l) => enqueueKeys(queue, keys[`g${l}`]!));
          this.queues.local.forEach((queue, l) => enqueueKeys(queue, keys[`l${l}`]!));
        },
      },
      applyGradients,
    );
    tf.dispose([stripQ, stripK]);
    return result;
  }

  dispose(): void {
    this.online.dispose();
    this.momentumEncoder.dispose();
    for (const q of [...this.queues.global, ...this.queues.local]) q.dispose();
  }
}

export const detco = defineMethod({
  name: 'detco',
  title: 'DetCo: MoCo v2 with contrast at every backbone level between global views and 3×3 jigsaw patch sets',
  paper: {
    citation: 'Xie, Ding, Wang, Zhan, Xu, Sun, Li, Luo. DetCo: Unsupervised Contrastive Learning for Object Detection. ICCV 2021',
    url: 'https://arxiv.org/abs/2102.04803',
  },
  code: { repo: 'xieenze/DetCo', commit: 'adf4947' },
  args: detcoArgs,
  // Fig. 2: global images x1, x2 (T1, T2) and local patch sets x3, x4 (T3, T4) of the same image.
  consumes: { views: (imageSize) => detcoViews(imageSize), geometry: false },
  // Built on MoCo v2 (main_moco.py: SGD lr 0.03 @256, momentum 0.9, wd 1e-4, cosine, no warm-up); inferred, the
  // pretext recipe was not released.
  optimizer: { kind: 'sgd', baseLr: 0.03, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0 },
  smallScale: {
    args: { queueSize: 1024, momentum: 0.99 },
    optimizer: { baseLr: 0.3 },
    why:
      'MoCo v2\'s small-scale settings, so the claim check compares like with like: K 1024 (~1/4 epoch of synthetic-small) for each of the 8 queues instead of 65536, m 0.99 ' +
      '(at 0.999 the key encoder barely leaves its init in a few thousand steps, docs/EXPERIMENTS.md §1), lr 0.3 @256; views at 64 px with 16-px patches ' +
      '(64/224 of the image, as 64-px patches beside 224-px views), so one step costs 1.5-2x MoCo v2\'s on CPU',
  },
  claims: [
    { metric: 'semseg.mIoU', over: 'mocov2', paper: 'Table 7 (README imgs/other_res2.png): Cityscapes semantic segmentation 76.5 vs MoCo v2 75.7 mIoU (200 ep); VOC detection 57.8 vs 57.0 AP (Table 6)' },
    { metric: 'unsup-seg.mIoU', over: 'mocov2', paper: 'dense evidence (no unsupervised-segmentation number): COCO Mask R-CNN C4 1x 39.4 vs 38.9 AP^bb, Cityscapes instance seg 34.7 vs 33.9 AP^mk (Tables 4, 7)' },
    { metric: 'linear.top1', over: 'mocov2', paper: 'Table 8: ImageNet linear top-1 68.6 vs MoCo v2 67.5 (200 ep); abstract: 6.9 / 5.0 points above InsLoc / DenseCL' },
    { metric: 'knn.top1', over: 'mocov2', paper: 'same evidence as linear (no k-NN number): Table 8 linear 68.6 vs 67.5, VOC07 SVM 85.1 vs 84.1' },
  ],
  validate: (args, sizes) => {
    validateMomentumContrast(args, sizes);
    if (args.levelWeights.every((w) => w === 0)) throw new BadInputError('every level weight is 0: nothing would be learned', 'args.levelWeights');
  },
  create: ({ args, backbone, seed }) => new DetCo(args, backbone, seed),
});
