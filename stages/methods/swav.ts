/**
 * SwAV — "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", Caron, Misra, Mairal, Goyal,
 * Bojanowski, Joulin, NeurIPS 2020, https://arxiv.org/abs/2006.09882.
 * Authors' code: facebookresearch/swav@06b1b7c `main_swav.py` (`train`: prototype normalisation, queue, swapped
 * loss, prototype freeze; `distributed_sinkhorn`), `src/resnet50.py` (`ResNet.forward`: crops grouped by resolution;
 * `forward_head`: projection head, L2 normalisation, prototypes), `src/multicropdataset.py` (multi-crop views),
 * `scripts/swav_800ep_pretrain.sh` and `scripts/swav_200ep_bs256_pretrain.sh` (the released recipes).
 *
 * Image b gives V = 2 + N crops x_vb (2 global, N local of a smaller size). With f the backbone + global average pool,
 * h the projection head (Linear C→H, BN, ReLU, Linear H→D) and the K prototypes c_k (columns of `prototypes`):
 *   z_vb = h(f(x_vb)) / ‖h(f(x_vb))‖                       embedding                        [V·B, D]
 *   s_vbk = z_vb · c_k                                      scores (`output`)                [V·B, K]
 * For every assign crop a ∈ A (default the two global crops), without gradient:
 *   Q_a = Sinkhorn([queue_a · Cᵀ ; s_a], ε, 3 iterations), last B rows    codes q            [B, K]
 * (engine/sinkhorn.ts; the queue rows only while a queue is in use). Swapped prediction loss, every crop predicting
 * the codes of every assign crop but itself:
 *   L = 1/|A| Σ_{a∈A} 1/(V−1) Σ_{v≠a} −1/B Σ_b Σ_k q_abk · log softmax_k(s_vb / T)
 * Prototypes: every column c_k re-normalised to unit length (no gradient) at the start of each step; their gradient
 * dropped (no update at all, not even weight decay) for the first `freezePrototypesSteps` steps.
 * Queue (optional): per assign crop a FIFO of the last L embeddings z_a, newest first, all zero when it starts
 * (after `queueStartFraction` of the run), in the codes only once full (its last row non-zero), filled every step.
 *
 * Shapes: B batch, V crops (2 global + N local), C backbone channels, H projection hidden width, D feature dim,
 * K prototypes, A assign crops, L queue length.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import { VIEW_PRESETS } from '../data/augment.js';
import type { CheckpointComponent } from '../engine/checkpoint.js';
import { namedGradients } from '../engine/grads.js';
import { BatchNorm, Linear, type ForwardOptions } from '../engine/layers.js';
import { relu } from '../engine/native.js';
import { Initializer, ParamStore, uniqueVariableName } from '../engine/params.js';
import { sinkhornKnopp } from '../engine/sinkhorn.js';
import { defineMethod, type BackboneFactory, type FeatureBackbone, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { l2Normalize } from './shared/contrast.js';

/**
 * Side of the local crops for global crops of `imageSize` pixels: 96/224 of it (`--size_crops 224 96`), rounded to a
 * multiple of 8 (the output stride of the small-image stem, so every local crop tiles its C5 map exactly; 96 at 224),
 * at least 8. 64 px → 24, 32 px → 16.
 */
export function localCropSize(imageSize: number): number {
  return Math.max(8, Math.round((imageSize * 96) / 224 / 8) * 8);
}

/** SwAV's arguments: main_swav.py's flags, defaults from scripts/swav_800ep_pretrain.sh (the headline run) unless said. */
export const swavArgs = z.strictObject({
  temperature: z.number().gt(0).default(0.1).describe('T, softmax temperature of the swapped prediction (`--temperature 0.1`, all released scripts)'),
  epsilon: z.number().gt(0).default(0.05).describe('ε, entropic regularisation of the Sinkhorn-Knopp codes (`--epsilon 0.05`, all released scripts)'),
  sinkhornIterations: z.number().int().min(1).default(3).describe('Sinkhorn-Knopp iterations (`--sinkhorn_iterations 3`, all released scripts)'),
  featDim: z.number().int().min(1).default(128).describe('D, output width of the projection head (`--feat_dim 128`)'),
  nmbPrototypes: z.number().int().min(1).default(3000).describe('K, number of prototypes (`--nmb_prototypes 3000`)'),
  hiddenMlp: z.number().int().min(1).optional().describe("H, hidden width of the projection head; default the backbone's width C (`--hidden_mlp 2048` = ResNet-50's C)"),
  cropsForAssign: z
    .array(z.number().int().min(0))
    .min(1)
    .default([0, 1])
    .describe('A, indices of the crops whose codes are computed (`--crops_for_assign 0 1`: the two global crops)'),
  freezePrototypesSteps: z
    .number()
    .int()
    .min(0)
    .default(313)
    .describe('steps at the start during which the prototypes get no gradient (`--freeze_prototypes_niters 313` = 1 epoch at B 4096; 5005 in the B 256 script)'),
  queueLength: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe('L, embeddings kept per assign crop, 0 = no queue (`--queue_length 0` in the 800-epoch script, 3840 in the B 256 script); rounded down to a multiple of the batch as main() does'),
  localCrops: z.number().int().min(0).default(6).describe('local (small) crops per image beside the 2 global ones (`--nmb_crops 2 6`)'),
  queueStartFraction: z
    .number()
    .min(0)
    .max(1)
    .default(0.075)
    .describe('fraction of the run after which the queue starts (`--epoch_queue_starts 15` of `--epochs 200` in the B 256 script, the one with a queue)'),
});
export type SwAVArgs = z.infer<typeof swavArgs>;

// ------------------------------------------------------------------------------------------------
// Projection head and prototypes (src/resnet50.py forward_head)
// ------------------------------------------------------------------------------------------------

/**
 * `projection_head` = Sequential(Linear(C, H), BatchNorm1d(H), ReLU, Linear(H, D)), then L2 normalisation, then
 * `prototypes` = Linear(D, K, bias=False); torch names `projection_head.{0,1,3}.*`, `prototypes.weight`. PyTorch's
 * default init for all of them (the official init loop touches only Conv2d and BatchNorm2d/GroupNorm).
 */
export class SwAVHead {
  readonly fc0: Linear;
  readonly bn1: BatchNorm;
  readonly fc3: Linear;
  /** Weight [D, K] (engine layout; torch's [K, D]): column k is prototype c_k. */
  readonly prototypes: Linear;

  constructor(store: ParamStore, prefix: string, inDim: number, hidden: number, featDim: number, nmbPrototypes: number, seed: number | string) {
    const scope = store.scope(prefix);
    const head = scope.child('projection_head');
    const init = new Initializer(`swav-head:${prefix}:${seed}`);
    this.fc0 = new Linear(head.child(0), init, inDim, hidden);
    this.bn1 = new BatchNorm(head.child(1), hidden);
    this.fc3 = new Linear(head.child(3), init, hidden, featDim);
    this.prototypes = new Linear(scope.child('prototypes'), init, featDim, nmbPrototypes, { bias: false });
  }

  /** Pooled backbone features [N, C] → z [N, D], unit rows. BN with the statistics of all N rows (all crops together). */
  embed(pooled: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D {
    return tf.tidy(() => l2Normalize(this.fc3.apply(relu(this.bn1.apply(this.fc0.apply(pooled), opts))) as tf.Tensor2D, 1));
  }

  /** z [N, D] → s = z·C [N, K]. */
  scores(z: tf.Tensor2D): tf.Tensor2D {
    return this.prototypes.apply(z) as tf.Tensor2D;
  }

  /** c_k ← c_k / ‖c_k‖ in place, no gradient (`train`: "normalize the prototypes"). */
  normalizePrototypes(): void {
    const w = this.prototypes.weight;
    const next = l2Normalize(w as tf.Tensor2D, 0);
    w.assign(next);
    next.dispose();
  }
}

// ------------------------------------------------------------------------------------------------
// Multi-crop forward (src/resnet50.py ResNet.forward)
// ------------------------------------------------------------------------------------------------

/** [start, end) runs of consecutive crops with the same resolution (`unique_consecutive` of the crop sizes). */
export function resolutionGroups(views: readonly tf.Tensor4D[]): Array<[number, number]> {
  const groups: Array<[number, number]> = [];
  views.forEach((v, i) => {
    const last = groups[groups.length - 1];
    const prev = i > 0 ? views[i - 1]! : null;
    if (last && prev && prev.shape[1] === v.shape[1] && prev.shape[2] === v.shape[2]) last[1] = i + 1;
    else groups.push([i, i + 1]);
  });
  return groups;
}

/**
 * All crops through the backbone, one forward per resolution group (so each group's BatchNorm statistics are its
 * own, as the official forward), average-pooled, concatenated in crop order, and through the head in ONE call (its
 * BN1d sees every crop). Returns z [V·B, D] and s [V·B, K]; row v·B + b is crop v of image b.
 */
export function multiCropForward(backbone: FeatureBackbone, head: SwAVHead, views: readonly tf.Tensor4D[], opts: ForwardOptions): { z: tf.Tensor2D; scores: tf.Tensor2D } {
  return tf.tidy(() => {
    const pooled = resolutionGroups(views).map(([start, end]) => {
      const map = backbone.apply(end - start === 1 ? views[start]! : tf.concat(views.slice(start, end), 0), opts); // [n·B, h, w, C]
      return tf.mean(map, [1, 2]) as tf.Tensor2D; // avgpool + flatten [n·B, C]
    });
    const z = head.embed(pooled.length === 1 ? pooled[0]! : tf.concat(pooled, 0), opts); // [V·B, D]
    return { z, scores: head.scores(z) };
  });
}

// ------------------------------------------------------------------------------------------------
// Codes (no gradient) and the swapped prediction loss
// ------------------------------------------------------------------------------------------------

/**
 * `with torch.no_grad()` over a value read off the taped forward: `fn(x)` runs as one untaped op (tfjs records
 * nothing inside a customGrad forward) whose gradient is zero, so nothing is back-propagated through Sinkhorn.
 */
function noGrad<T extends tf.Tensor>(x: tf.Tensor, fn: (x: tf.Tensor) => T): T {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const input = args[0] as tf.Tensor;
    return { value: fn(input), gradFunc: (dy: tf.Tensor | tf.Tensor[]) => tf.zerosLike(input) };
  }) as (x: tf.Tensor) => T;
  return op(x);
}

/**
 * Q_a for every assign crop a = `cropsForAssign[i]`: Sinkhorn on the crop's scores s_a [B, K], below the queue's
 * scores `queueScores[i]` [L, K] when given (the queue in use), keeping the last B rows. Constant (no gradient).
 */
export function swavCodes(scores: tf.Tensor2D, batchSize: number, cropsForAssign: readonly number[], queueScores: ReadonlyArray<tf.Tensor2D | null>, opts: { epsilon: number; sinkhornIterations: number }): tf.Tensor2D[] {
  return cropsForAssign.map((a, i) =>
    noGrad(scores, (s) =>
      tf.tidy(() => {
        const out = tf.slice(s, [a * batchSize, 0], [batchSize, -1]) as tf.Tensor2D; // s_a [B, K]
        const queued = queueScores[i];
        const rows = queued ? (tf.concat([queued, out], 0) as tf.Tensor2D) : out; // [L + B, K]
        const q = sinkhornKnopp(rows, { epsilon: opts.epsilon, iterations: opts.sinkhornIterations });
        return tf.slice(q, [rows.shape[0] - batchSize, 0], [batchSize, -1]) as tf.Tensor2D; // Q_a [B, K]
      }),
    ),
  );
}

/**
 * L = 1/|A| Σ_a 1/(V−1) Σ_{v≠a} −mean_b Σ_k q_abk · log softmax(s_vb / T): scores [V·B, K], codes[i] for crop
 * `cropsForAssign[i]`. Returns the total and each assign crop's term (already divided by |A|).
 */
export function swappedPredictionLoss(scores: tf.Tensor2D, codes: readonly tf.Tensor2D[], cropsForAssign: readonly number[], batchSize: number, temperature: number): { loss: tf.Scalar; perAssign: tf.Scalar[] } {
  return tf.tidy(() => {
    const [rows, k] = scores.shape;
    const v = rows / batchSize;
    const logP = tf.reshape(tf.logSoftmax(tf.div(scores, temperature)), [v, batchSize, k]); // [V, B, K]
    const perAssign = cropsForAssign.map((a, i) => {
      const ce = tf.neg(tf.mean(tf.sum(tf.mul(tf.expandDims(codes[i]!, 0), logP), 2), 1)); // −mean_b Σ_k q·log p, per crop v [V]
      const others = tf.tensor1d(Array.from({ length: v }, (_, u) => (u === a ? 0 : 1))); // v ≠ a
      return tf.div(tf.sum(tf.mul(ce, others)), (v - 1) * cropsForAssign.length) as tf.Scalar;
    });
    const loss = (perAssign.length === 1 ? perAssign[0]! : tf.addN(perAssign)) as tf.Scalar;
    return { loss, perAssign };
  });
}

// ------------------------------------------------------------------------------------------------
// The queue (main_swav.py: `queue`, [len(crops_for_assign), queue_length, feat_dim])
// ------------------------------------------------------------------------------------------------

/**
 * One FIFO per assign crop, newest first: each step shifts the rows down by B and writes the crop's embeddings on
 * top (`queue[i, bs:] = queue[i, :-bs]; queue[i, :bs] = embedding`). Zero until the queue starts; a slot is read
 * only once its last row is non-zero (full), or once an earlier slot of the same step was (`use_the_queue`).
 */
export class SwAVQueue {
  readonly buffer: tf.Variable;

  constructor(
    readonly slots: number,
    readonly length: number,
    readonly dim: number,
  ) {
    const zeros = tf.zeros([slots, length, dim]);
    this.buffer = tf.variable(zeros, false, uniqueVariableName('swav.queue'));
    zeros.dispose();
  }

  /** Which slots feed the codes this step (one small read of the last rows). */
  inUse(): boolean[] {
    const nonZero = tf.tidy(() => tf.any(tf.notEqual(tf.slice(this.buffer, [0, this.length - 1, 0], [this.slots, 1, this.dim]), 0), [1, 2]).dataSync());
    let use = false;
    return Array.from({ length: this.slots }, (_, i) => (use = use || nonZero[i] === 1));
  }

  /** Scores of slot i's embeddings on the (normalised) prototypes: [L, K], constant. */
  scores(i: number, prototypes: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => tf.matMul(tf.squeeze(tf.slice(this.buffer, [i, 0, 0], [1, this.length, this.dim]), [0]) as tf.Tensor2D, prototypes));
  }

  /** Push each slot's [B, D] embeddings (detached copies) in front, dropping the oldest B rows. */
  push(embeddings: readonly tf.Tensor2D[]): void {
    const next = tf.tidy(() => {
      const b = embeddings[0]!.shape[0];
      const kept = tf.slice(this.buffer, [0, 0, 0], [this.slots, this.length - b, this.dim]); // [A, L−B, D]
      return tf.concat([tf.stack([...embeddings]), kept], 1); // [A, L, D]
    });
    this.buffer.assign(next);
    next.dispose();
  }

  component(): CheckpointComponent {
    return { tensors: new Map([['queue', this.buffer]]) };
  }

  dispose(): void {
    this.buffer.dispose();
  }
}

// ------------------------------------------------------------------------------------------------
// SwAV
// ------------------------------------------------------------------------------------------------

export class SwAV implements MethodInstance<SwAVArgs & { hiddenMlp: number }> {
  readonly online = new ParamStore();
  readonly backbone: FeatureBackbone;
  readonly head: SwAVHead;
  /** Null without a queue (`queueLength` 0, or below one batch). */
  readonly queue: SwAVQueue | null;
  /** First step that uses the queue (`epoch >= epoch_queue_starts`). */
  readonly queueStartStep: number;
  readonly state: Record<string, CheckpointComponent>;

  constructor(
    readonly args: SwAVArgs & { hiddenMlp: number },
    backboneFactory: BackboneFactory,
    seed: number,
    readonly batchSize: number,
    totalSteps: number,
  ) {
    this.backbone = backboneFactory(this.online, 'backbone', seed);
    this.head = new SwAVHead(this.online, 'neck', this.backbone.outChannels, args.hiddenMlp, args.featDim, args.nmbPrototypes, seed);
    const length = args.queueLength - (args.queueLength % batchSize); // main(): divisible by the (global) batch
    this.queue = length > 0 ? new SwAVQueue(args.cropsForAssign.length, length, args.featDim) : null;
    this.queueStartStep = Math.round(args.queueStartFraction * totalSteps);
    this.state = this.queue ? { queue: this.queue.component() } : {};
  }

  /** Queue scores per assign slot for this step, null where the queue is not (yet) read. The caller disposes them. */
  queueScores(step: number): Array<tf.Tensor2D | null> {
    const slots = this.args.cropsForAssign.length;
    if (!this.queue || step < this.queueStartStep) return Array.from({ length: slots }, () => null);
    const use = this.queue.inUse();
    return use.map((u, i) => (u ? this.queue!.scores(i, this.head.prototypes.weight as tf.Tensor2D) : null));
  }

  step({ views }: MethodBatch, { step, applyGradients }: StepContext): StepResult {
    const { cropsForAssign, temperature } = this.args;
    const b = views[0]!.shape[0];
    if (views.length < 2) throw new Error(`SwAV needs at least 2 crops per image, got ${views.length}`);
    if (cropsForAssign.some((a) => a >= views.length)) throw new BadInputError(`cropsForAssign [${cropsForAssign.join(', ')}] names a crop beyond the ${views.length} views`, 'args.cropsForAssign');
    if (this.queue && b !== this.batchSize) throw new Error(`SwAV: the queue was sized for batch ${this.batchSize}, got ${b}`);
    // 1. normalise the prototypes (no gradient), before the forward.
    this.head.normalizePrototypes();
    // 2. the queue's scores on the normalised prototypes, for the slots in use (constant).
    const queueScores = this.queueScores(step);
    // 3. multi-crop forward, codes (no gradient), swapped prediction loss, under the tape.
    let z: tf.Tensor2D | null = null;
    let perAssign: tf.Scalar[] = [];
    const { loss, grads } = namedGradients(() => {
      const out = multiCropForward(this.backbone, this.head, views, { training: true });
      const codes = swavCodes(out.scores, b, cropsForAssign, queueScores, this.args);
      const l = swappedPredictionLoss(out.scores, codes, cropsForAssign, b, temperature);
      z = tf.keep(out.z);
      perAssign = l.perAssign.map((t) => tf.keep(t));
      return l.loss;
    }, this.online.trainable());
    // 4. fill the queue with this step's embeddings of the assign crops (it read the old ones above).
    if (this.queue && step >= this.queueStartStep) {
      const pushed = cropsForAssign.map((a) => tf.slice(z!, [a * b, 0], [b, -1]) as tf.Tensor2D);
      this.queue.push(pushed);
      tf.dispose(pushed);
    }
    // 5. cancel the prototypes' gradient early in the run (p.grad = None: the optimizer skips them), then step.
    const prototypes = 'neck.prototypes.weight';
    if (step < this.args.freezePrototypesSteps) {
      grads.get(prototypes)?.dispose();
      grads.delete(prototypes);
    }
    applyGradients(grads);
    const result: StepResult = {
      loss: loss.dataSync()[0]!,
      parts: Object.fromEntries(perAssign.map((t, i) => [`assign${cropsForAssign[i]}`, t.dataSync()[0]!])),
    };
    tf.dispose([loss, z!, ...perAssign, ...grads.values(), ...queueScores.filter((s): s is tf.Tensor2D => s !== null)]);
    return result;
  }

  dispose(): void {
    this.online.dispose();
    this.queue?.dispose();
  }
}

export const swav = defineMethod({
  name: 'swav',
  title: 'SwAV: swapped prediction of Sinkhorn-Knopp cluster codes over prototypes, multi-crop',
  paper: {
    citation: 'Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. Unsupervised Learning of Visual Features by Contrasting Cluster Assignments. NeurIPS 2020',
    url: 'https://arxiv.org/abs/2006.09882',
  },
  code: { repo: 'facebookresearch/swav', commit: '06b1b7c' },
  args: swavArgs,
  // src/multicropdataset.py with `--nmb_crops 2 6 --size_crops 224 96 --min_scale_crops 0.14 0.05 --max_scale_crops 1. 0.14`.
  consumes: { views: (imageSize, args) => VIEW_PRESETS.multiCrop(imageSize, localCropSize(imageSize), args.localCrops), geometry: false },
  // scripts/swav_800ep_pretrain.sh: LARC (trust 0.001, clip False) over SGD momentum 0.9, lr 4.8 at B 4096 = 0.3 per
  // 256, wd 1e-6, 10 warm-up epochs of 800, cosine (to 0.0048).
  optimizer: { kind: 'lars', baseLr: 0.3, momentum: 0.9, weightDecay: 1e-6, warmupFraction: 10 / 800 },
  smallScale: {
    args: { nmbPrototypes: 300, queueLength: 512, freezePrototypesSteps: 125 },
    optimizer: { baseLr: 0.6 },
    why:
      'the small-batch recipe (scripts/swav_200ep_bs256_pretrain.sh: lr 0.6 @256, a queue from 15/200 of the run, prototypes frozen for 1 epoch) scaled to batch 32 on synthetic-small (4000 images): ' +
      'queue 512 = 16 batches (3840 = 15 batches there), freeze 125 steps = 1 epoch, K 300 for 8 classes (3000 for 1000 on ImageNet) so B + L = 544 rows per Sinkhorn exceed K',
  },
  claims: [
    { metric: 'linear.top1', over: 'mocov2', paper: 'README / paper Table 1: IN-1k linear top-1 75.3 (800 ep, B 4096, 2x224+6x96) vs MoCo v2 71.1; 72.7 at 200 ep, B 256' },
    { metric: 'knn.top1', over: 'mocov2', paper: 'same evidence as linear (the paper reports no k-NN number): a better global representation, IN-1k linear 75.3 vs MoCo v2 71.1' },
  ],
  validate: (args, { batchSize }) => {
    const crops = 2 + args.localCrops;
    if (args.cropsForAssign.some((a) => a >= crops)) throw new BadInputError(`cropsForAssign [${args.cropsForAssign.join(', ')}] names a crop beyond the ${crops} crops (2 global + ${args.localCrops} local)`, 'args.cropsForAssign');
    if (new Set(args.cropsForAssign).size !== args.cropsForAssign.length) throw new BadInputError('cropsForAssign lists a crop twice', 'args.cropsForAssign');
    if (args.queueLength > 0 && args.queueLength < batchSize) throw new BadInputError(`queueLength ${args.queueLength} is below one batch (${batchSize}): rounded down to a multiple of the batch it would be 0`, 'args.queueLength');
  },
  create: ({ args, backbone, backboneChannels, seed, batchSize, totalSteps }) => new SwAV({ ...args, hiddenMlp: args.hiddenMlp ?? backboneChannels }, backbone, seed, batchSize, totalSteps),
});
