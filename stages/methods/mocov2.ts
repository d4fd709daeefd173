/**
 * MoCo v2 — "Improved Baselines with Momentum Contrastive Learning", Chen, Fan, Girshick, He, 2020,
 * https://arxiv.org/abs/2003.04297 (MoCo v1: https://arxiv.org/abs/1911.05722).
 * Authors' code: facebookresearch/moco@f515ef4 `moco/builder.py` (model + loss), `main_moco.py` (--mlp --moco-t 0.2
 * --aug-plus --cos). The same structure as openselfsup/mmselfsup `NonLinearNeckV1` + `ContrastiveHead`.
 *
 * Loss (InfoNCE, one direction: query from view 0, key from view 1):
 *
 *   L = -1/B Σ_b log( exp(q_b·k_b/τ) / ( exp(q_b·k_b/τ) + Σ_{j<K} exp(q_b·queue_j/τ) ) )
 *
 * where q = normalize(g_θ(f_θ(view0))), k = normalize(g_ξ(f_ξ(view1))) from the momentum encoder
 * ξ ← m·ξ + (1−m)·θ (over all trainable parameters, backbone and MLP), keys carry no gradient, and the
 * queue holds the K most recent keys.
 *
 * Shapes: B batch, h×w last feature map, S² = h·w, C backbone channels, H MLP hidden, D embedding, K queue length.
 *
 * The pieces here (InfoNCE, FIFO key queue, momentum update, the step skeleton) are reused by DenseCL,
 * which is MoCo v2 plus a dense branch.
 */
import * as tf from '@tensorflow/tfjs';
import { BadInputError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import { ParamStore } from '../engine/params.js';
import { shuffleBatch, type ForwardOptions } from '../engine/layers.js';
import { MlpHead } from '../engine/heads.js';
import { MemoryQueue } from '../engine/queue.js';
import { copyWeights, emaUpdate } from '../engine/ema.js';
import { namedGradients } from '../engine/grads.js';

// ------------------------------------------------------------------------------------------------
// What a momentum-contrast method needs from a backbone
// ------------------------------------------------------------------------------------------------

/** A backbone truncated after its last stage (ResNet C5): images → feature map. */
export interface FeatureBackbone {
  /** Channels of the last feature map (2048 for ResNet-50, 512 for ResNet-18). */
  readonly outChannels: number;
  /** [B, H, W, 3] → [B, h, w, C]. `opts.training` = batch-statistics BN, as in `model.train()`. */
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D;
}

/**
 * Builds one backbone into `store` under `prefix` (names like `backbone.layer1.0.conv1.weight`). Called
 * twice: once for the online encoder, once for the momentum encoder.
 */
export type BackboneFactory = (store: ParamStore, prefix: string, seed: number | string) => FeatureBackbone;

// ------------------------------------------------------------------------------------------------
// Building blocks shared with DenseCL
// ------------------------------------------------------------------------------------------------

/** torch.nn.functional.normalize: x / max(‖x‖₂, 1e-12) along `axis`. */
export function l2Normalize<T extends tf.Tensor>(x: T, axis: number): T {
  return tf.tidy(() => tf.div(x, tf.maximum(tf.norm(x, 'euclidean', axis, true), 1e-12)) as T);
}

/**
 * InfoNCE as ContrastiveHead computes it: logits = [l_pos, l_neg] / τ, cross-entropy against label 0,
 * mean over rows. lPos [N, 1], lNeg [N, K] → scalar.
 */
export function infoNce(lPos: tf.Tensor2D, lNeg: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const logits = tf.div(tf.concat([lPos, lNeg], 1), temperature); // [N, 1+K]
    // CE with label 0 = logsumexp(row) − row[0]; tf.logSumExp subtracts the row max first.
    const positive = tf.squeeze(tf.slice(logits, [0, 0], [-1, 1]), [1]); // [N]
    return tf.mean(tf.sub(tf.logSumExp(logits, 1), positive)) as tf.Scalar;
  });
}

/** InfoNCE of queries against their positives and a queue of negatives: q, k [N, D], queue [K, D]. */
export function queueInfoNce(q: tf.Tensor2D, k: tf.Tensor2D, queue: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const lPos = tf.sum(tf.mul(q, k), 1, true) as tf.Tensor2D; // [N, 1]
    const lNeg = tf.matMul(q, queue, false, true) as tf.Tensor2D; // [N, K]
    return infoNce(lPos, lNeg, temperature);
  });
}

/**
 * Overwrite a freshly built variable with another initialiser's values, for the few places where the
 * authors' init differs from the engine layer's default (e.g. DenseCL's kaiming-normal neck Linear layers).
 */
export function reinitialize(variable: tf.Variable, value: tf.Tensor): void {
  variable.assign(value);
  value.dispose();
}

/** Enqueue a batch of keys, refusing the wrap-around the official code rules out (`assert K % B == 0`). */
export function enqueueKeys(queue: MemoryQueue, keys: tf.Tensor2D): void {
  const b = keys.shape[0];
  if (queue.size % b !== 0) throw new BadInputError(`queue size ${queue.size} must be a multiple of the batch size ${b}`, 'queueSize');
  queue.dequeueAndEnqueue(keys);
}

// ------------------------------------------------------------------------------------------------
// MoCo v2 projection head ("--mlp": fc → ReLU → fc on the average-pooled last feature map)
// ------------------------------------------------------------------------------------------------

/**
 * Global MLP head on the average-pooled last feature map, torch names `mlp.0.*` / `mlp.2.*`
 * (nn.Sequential(Linear, ReLU, Linear)); MoCo keeps PyTorch's default nn.Linear init.
 */
export class GlobalMlpHead {
  readonly mlp: MlpHead;
  constructor(store: ParamStore, prefix: string, inChannels: number, hidden: number, out: number, seed: number | string) {
    this.mlp = new MlpHead(store, `${prefix}.mlp`, { inDim: inChannels, hiddenDims: [hidden], outDim: out, batchNorm: false }, seed);
  }

  /** feature map [B, h, w, C] → embedding [B, D] (not normalised). */
  apply(featureMap: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => {
      const pooled = tf.mean(featureMap, [1, 2]) as tf.Tensor2D; // [B, C]  (AdaptiveAvgPool2d(1))
      return this.mlp.apply(pooled, { training: true }); // [B, D]
    });
  }
}

// ------------------------------------------------------------------------------------------------
// Hyperparameters
// ------------------------------------------------------------------------------------------------

export interface MomentumContrastArgs {
  /** τ in InfoNCE. 0.2 for MoCo v2 (`--moco-t 0.2`; the code default 0.07 is v1's). */
  temperature: number;
  /** K, keys kept as negatives. 65536 in the paper; must be a multiple of the batch size. */
  queueSize: number;
  /** m of the momentum encoder. 0.999. */
  momentum: number;
  /** D, embedding size. 128. */
  embedDim: number;
  /** H, MLP hidden size. 2048 (= C for ResNet-50); the paper uses the backbone width. */
  hiddenDim: number;
  /**
   * Emulated GPUs for shuffle-BN: queries are normalised per contiguous group of B/G, keys are encoded
   * from a shuffled batch, also per group, then un-shuffled. 1 = plain BN (the known leak).
   */
  shuffleBnGroups: number;
}

export const MOCOV2_DEFAULTS: MomentumContrastArgs = {
  temperature: 0.2,
  queueSize: 65536,
  momentum: 0.999,
  embedDim: 128,
  hiddenDim: 2048,
  shuffleBnGroups: 1,
};

export function validateMomentumContrastArgs(args: MomentumContrastArgs, batchSize: number): void {
  if (!(args.temperature > 1e-4)) throw new BadInputError(`must be > 1e-4, got ${args.temperature}`, 'temperature');
  if (!(args.momentum >= 0 && args.momentum < 1)) throw new BadInputError(`must be in [0, 1), got ${args.momentum}`, 'momentum');
  if (args.queueSize % batchSize !== 0) {
    throw new BadInputError(`queue size ${args.queueSize} must be a multiple of the batch size ${batchSize}`, 'queueSize');
  }
  if (batchSize % args.shuffleBnGroups !== 0) {
    throw new BadInputError(`${args.shuffleBnGroups} groups must divide the batch size ${batchSize}`, 'shuffleBnGroups');
  }
}

// ------------------------------------------------------------------------------------------------
// The training step shared by MoCo v2 and DenseCL
// ------------------------------------------------------------------------------------------------

/** Gradients keyed by ParamStore name (`backbone.conv1.weight`, `neck.mlp.0.weight`). */
export type NamedGradients = Map<string, tf.Tensor>;

export interface StepResult {
  loss: number;
  /** Loss parts for logging (e.g. DenseCL's single and dense terms, already weighted). */
  parts: Record<string, number>;
}

/** What both methods expose to the pretraining loop. */
export interface MomentumContrastMethod {
  readonly name: 'mocov2' | 'densecl';
  readonly args: MomentumContrastArgs;
  /** Online encoder: `backbone.*` (exported) + `neck.*`. */
  readonly online: ParamStore;
  /** Momentum encoder, same names. */
  readonly momentumEncoder: ParamStore;
  readonly queues: Record<string, MemoryQueue>;
  /**
   * One step in the official order: momentum update → keys (no grad, shuffle-BN) → query loss and its
   * gradients → `applyGradients` (the optimizer) → enqueue keys. Returns the loss before the update.
   */
  trainStep(view0: tf.Tensor4D, view1: tf.Tensor4D, applyGradients: (grads: NamedGradients) => void, rng: Rng): StepResult;
  dispose(): void;
}

/**
 * The skeleton of one momentum-contrast step. `encodeKeys` runs outside the gradient tape (torch.no_grad);
 * `queryLoss` inside it; `enqueue` after the optimizer, which the official code does after computing the
 * logits (the logits used a detached clone of the queue, so the order relative to backward is immaterial).
 */
export function momentumContrastStep<Keys extends Record<string, tf.Tensor>>(
  parts: {
    online: ParamStore;
    momentumEncoder: ParamStore;
    momentum: number;
    encodeKeys: () => Keys;
    queryLoss: (keys: Keys) => { loss: tf.Scalar; parts: Record<string, tf.Scalar> };
    enqueue: (keys: Keys) => void;
  },
  applyGradients: (grads: NamedGradients) => void,
): StepResult {
  // 1. ξ ← m·ξ + (1−m)·θ over parameters (not BN buffers), before the key forward (as in builder.py).
  emaUpdate(parts.momentumEncoder.vars, parts.online.vars, parts.momentum, 'skip');
  // 2. keys, no gradient.
  const keys = tf.tidy(parts.encodeKeys);
  // 3. query forward + loss under the tape.
  let partValues: Record<string, tf.Scalar> = {};
  const { loss: value, grads } = namedGradients(() => {
    const out = parts.queryLoss(keys);
    partValues = Object.fromEntries(Object.entries(out.parts).map(([k, t]) => [k, tf.keep(t)]));
    return out.loss;
  }, parts.online.trainable());
  // 4. optimizer.
  applyGradients(grads);
  // 5. enqueue.
  parts.enqueue(keys);
  const result: StepResult = {
    loss: value.dataSync()[0]!,
    parts: Object.fromEntries(Object.entries(partValues).map(([k, t]) => [k, t.dataSync()[0]!])),
  };
  value.dispose();
  tf.dispose([...grads.values()]);
  tf.dispose(Object.values(partValues));
  tf.dispose(Object.values(keys));
  return result;
}

/**
 * Encode keys as MoCo's shuffle-BN does across G GPUs: permute the batch, normalise each group of B/G
 * with its own statistics, and undo the permutation on every output.
 */
export function encodeShuffled<T extends Record<string, tf.Tensor>>(x: tf.Tensor4D, groups: number, rng: Rng, encode: (x: tf.Tensor4D, opts: ForwardOptions) => T): T {
  if (groups <= 1) return encode(x, { training: true, bnGroups: 1 });
  const { perm, inverse } = shuffleBatch(x.shape[0], rng);
  const out = encode(tf.gather(x, perm), { training: true, bnGroups: groups });
  const restored = Object.fromEntries(Object.entries(out).map(([k, t]) => [k, tf.gather(t, inverse)])) as T;
  tf.dispose([perm, inverse]);
  return restored;
}

// ------------------------------------------------------------------------------------------------
// MoCo v2
// ------------------------------------------------------------------------------------------------

/** Keys of a MoCo v2 step: k [B, D], L2-normalised. */
export type MoCoV2Keys = { k: tf.Tensor2D };

/** q = normalize(mlp(avgpool(C5))), the embedding of one view by one encoder. */
export function mocov2Embed(head: GlobalMlpHead, featureMap: tf.Tensor4D): tf.Tensor2D {
  return tf.tidy(() => l2Normalize(head.apply(featureMap), 1)); // [B, D]
}

/** The MoCo v2 loss from the online encoder's last feature map and the keys. */
export function mocov2Loss(head: GlobalMlpHead, qFeatureMap: tf.Tensor4D, keys: MoCoV2Keys, queue: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => queueInfoNce(mocov2Embed(head, qFeatureMap), keys.k, queue, temperature));
}

/** An online or momentum encoder: backbone + head, sharing one ParamStore. */
export interface Encoder<Head> {
  store: ParamStore;
  backbone: FeatureBackbone;
  head: Head;
}

/**
 * The online and momentum encoders. Both are built, then the momentum one is overwritten with the
 * online weights (`param_k.data.copy_(param_q.data)`), so only the online init matters.
 */
export function buildEncoderPair<Head>(
  backboneFactory: BackboneFactory,
  headFactory: (store: ParamStore, prefix: string, inChannels: number, seed: number | string) => Head,
  seed: number,
): { q: Encoder<Head>; k: Encoder<Head> } {
  const build = (s: number | string): Encoder<Head> => {
    const store = new ParamStore();
    const backbone = backboneFactory(store, 'backbone', s);
    return { store, backbone, head: headFactory(store, 'neck', backbone.outChannels, s) };
  };
  const q = build(seed);
  const k = build(`${seed}-momentum`);
  copyWeights(k.store.vars, q.store.vars);
  for (const v of k.store.vars.values()) if (v.trainable) v.trainable = false; // keys get no gradient
  return { q, k };
}

export class MoCoV2 implements MomentumContrastMethod {
  readonly name = 'mocov2' as const;
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly queues: { queue: MemoryQueue };
  /** Online (query) encoder. */
  readonly q: Encoder<GlobalMlpHead>;
  /** Momentum (key) encoder. */
  readonly k: Encoder<GlobalMlpHead>;

  constructor(
    readonly args: MomentumContrastArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const head = (store: ParamStore, prefix: string, c: number, s: number | string) => new GlobalMlpHead(store, prefix, c, args.hiddenDim, args.embedDim, s);
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, head, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    this.queues = { queue: new MemoryQueue(args.queueSize, args.embedDim, seed, 'queue') };
  }

  trainStep(view0: tf.Tensor4D, view1: tf.Tensor4D, applyGradients: (grads: NamedGradients) => void, rng: Rng): StepResult {
    const groups = this.args.shuffleBnGroups;
    const queue = this.queues.queue;
    return momentumContrastStep<MoCoV2Keys>(
      {
        online: this.online,
        momentumEncoder: this.momentumEncoder,
        momentum: this.args.momentum,
        encodeKeys: () => encodeShuffled(view1, groups, rng, (x, opts) => ({ k: mocov2Embed(this.k.head, this.k.backbone.apply(x, opts)) })),
        queryLoss: (keys) => {
          const qMap = this.q.backbone.apply(view0, { training: true, bnGroups: groups });
          const loss = mocov2Loss(this.q.head, qMap, keys, queue.buffer as tf.Tensor2D, this.args.temperature);
          return { loss, parts: {} };
        },
        enqueue: (keys) => enqueueKeys(queue, keys.k),
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
