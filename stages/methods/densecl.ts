/**
 * DenseCL — "Dense Contrastive Learning for Self-Supervised Visual Pre-Training", Wang, Zhang, Shen, Kong, Li,
 * CVPR 2021, https://arxiv.org/abs/2011.09157.
 * Authors' code: WXinlong/DenseCL@b64bbb6 `openselfsup/models/densecl.py` (forward_train), `openselfsup/models/necks.py`
 * (DenseCLNeck), `openselfsup/models/heads/contrastive_head.py`, `configs/selfsup/densecl/densecl_imagenet_200ep.py`.
 *
 * Loss:  L = (1−λ)·L_q + λ·L_r,  λ = 0.5
 *   L_q  = MoCo v2's InfoNCE on the global embeddings q, k against queue (see mocov2.ts).
 *   L_r  = −1/(B·S²) Σ_b Σ_s log( exp(r_bs·t_b,c(s)/τ) / ( exp(r_bs·t_b,c(s)/τ) + Σ_{j<K} exp(r_bs·queue2_j/τ) ) )
 * where r = per-location normalised dense projections of view 0, t the same from the momentum encoder on view 1,
 * and the correspondence c(s) = argmax_s' cos(f_q[b,s], f_k[b,s']) is computed on the BACKBONE feature maps
 * f (before the neck), not on the projections, and carries no gradient. queue2 stores one vector per image:
 * the average-pooled dense projection k2 of each key, not individual pixel vectors.
 *
 * Shapes: B batch, h×w last feature map, S² = h·w, C backbone channels, H hidden, D embedding, K queue length.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { VIEW_PRESETS } from '../data/augment.js';
import { paramsComponent, queuesComponent } from '../engine/checkpoint.js';
import { Initializer, type ParamStore } from '../engine/params.js';
import { DenseProjectionHead, MlpHead } from '../engine/heads.js';
import { MemoryQueue } from '../engine/queue.js';
import { defineMethod, type BackboneFactory, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { enqueueKeys, l2Normalize, queueInfoNce } from './shared/contrast.js';
import { reinitialize } from './shared/heads.js';
import { buildEncoderPair, encodeShuffled, momentumContrastArgs, momentumStep, validateMomentumContrast, type Encoder, type MomentumContrastArgs } from './shared/momentum-encoder.js';

/** DenseCL's arguments: MoCo v2's plus λ (configs/selfsup/densecl/densecl_imagenet_200ep.py). */
export const denseclArgs = momentumContrastArgs.extend({
  lossLambda: z.number().min(0).max(1).default(0.5).describe('λ, weight of the dense loss: L = (1−λ)·L_global + λ·L_dense (`loss_lambda`)'),
});
export type DenseCLArgs = MomentumContrastArgs & { hiddenDim: number; lossLambda: number };

// ------------------------------------------------------------------------------------------------
// DenseCLNeck: global branch fc-relu-fc, dense branch conv1x1-relu-conv1x1, in parallel
// ------------------------------------------------------------------------------------------------

/** The neck's three outputs (`[avgpooled_x, x, avgpooled_x2]` in the official code), not normalised. */
export interface DenseNeckOutput {
  /** Global embedding from the average-pooled feature map, [B, D]. */
  global: tf.Tensor2D;
  /** Dense projections, one per location, [B, S², D]. */
  grid: tf.Tensor3D;
  /** Average pool of the dense projections, [B, D] (feeds only queue2). */
  pooledGrid: tf.Tensor2D;
}

/** torch names: `mlp.0.*`, `mlp.2.*` (Linear) and `mlp2.0.*`, `mlp2.2.*` (Conv2d 1×1). */
export class DenseCLNeck {
  readonly mlp: MlpHead;
  readonly mlp2: DenseProjectionHead;

  constructor(store: ParamStore, prefix: string, inChannels: number, hidden: number, out: number, seed: number | string) {
    this.mlp = new MlpHead(store, `${prefix}.mlp`, { inDim: inChannels, hiddenDims: [hidden], outDim: out, batchNorm: false }, seed);
    this.mlp2 = new DenseProjectionHead(store, `${prefix}.mlp2`, { inChannels, hiddenChannels: hidden, outChannels: out }, seed);
    // DenseCL.init_weights calls neck.init_weights(init_linear='kaiming'): every nn.Linear gets
    // kaiming_normal(fan_in, relu) with zero bias. (The 1×1 convs keep PyTorch's default Conv2d init,
    // which DenseProjectionHead already uses.)
    const init = new Initializer(`densecl-neck:${prefix}:${seed}`);
    for (const layer of ['0', '2']) {
      const weight = store.get(`${prefix}.mlp.${layer}.weight`);
      const [fanIn, fanOut] = weight.shape as [number, number]; // stored [in, out]
      reinitialize(weight, init.normal([fanIn, fanOut], Math.sqrt(2 / fanIn)));
      reinitialize(store.get(`${prefix}.mlp.${layer}.bias`), tf.zeros([fanOut]));
    }
  }

  apply(featureMap: tf.Tensor4D): DenseNeckOutput {
    return tf.tidy(() => {
      const [b, h, w] = featureMap.shape;
      const pooled = tf.mean(featureMap, [1, 2]) as tf.Tensor2D; // [B, C]
      const global = this.mlp.apply(pooled, { training: true }); // [B, D]
      const gridMap = this.mlp2.apply(featureMap); // [B, h, w, D]
      const d = gridMap.shape[3];
      const grid = tf.reshape(gridMap, [b, h * w, d]) as tf.Tensor3D; // [B, S², D]
      const pooledGrid = tf.mean(gridMap, [1, 2]) as tf.Tensor2D; // [B, D]
      return { global, grid, pooledGrid };
    });
  }
}

// ------------------------------------------------------------------------------------------------
// Embeddings of one view, all L2-normalised as in forward_train
// ------------------------------------------------------------------------------------------------

export interface DenseEmbeddings extends Record<string, tf.Tensor> {
  /** q / k: global embedding [B, D]. */
  global: tf.Tensor2D;
  /** q_grid / k_grid: dense projections [B, S², D], normalised per location. */
  grid: tf.Tensor3D;
  /** q2 / k2: pooled dense projection [B, D]. */
  pooledGrid: tf.Tensor2D;
  /** q_b / k_b: backbone features [B, S², C], normalised per location (only used for matching). */
  backbone: tf.Tensor3D;
}

export function denseclEmbed(neck: DenseCLNeck, featureMap: tf.Tensor4D): DenseEmbeddings {
  return tf.tidy(() => {
    const [b, h, w, c] = featureMap.shape;
    const out = neck.apply(featureMap);
    return {
      global: l2Normalize(out.global, 1),
      grid: l2Normalize(out.grid, 2),
      pooledGrid: l2Normalize(out.pooledGrid, 1),
      backbone: l2Normalize(tf.reshape(featureMap, [b, h * w, c]) as tf.Tensor3D, 2),
    };
  });
}

// ------------------------------------------------------------------------------------------------
// Dense correspondence and loss
// ------------------------------------------------------------------------------------------------

/**
 * c(s) = argmax over key locations of the cosine similarity of backbone features: [B, S²] int32.
 * The result is a new constant tensor, detached from the gradient tape: argmax has no gradient, and tfjs
 * would otherwise try to back-propagate into gather's integer indices (and fail) whenever the query
 * features depend on trainable variables.
 */
export function matchByBackboneSimilarity(qBackbone: tf.Tensor3D, kBackbone: tf.Tensor3D): tf.Tensor2D {
  const indices = tf.tidy(() => tf.argMax(tf.matMul(qBackbone, kBackbone, false, true), 2)); // [B, S²(q)] over S²(k)
  const detached = tf.tensor2d(indices.dataSync() as Int32Array, indices.shape as [number, number], 'int32');
  indices.dispose();
  return detached;
}

export interface DenseCLLossParts {
  /** (1−λ)·L_global + λ·L_dense */
  loss: tf.Scalar;
  /** (1−λ)·L_global (`loss_contra_single`) */
  single: tf.Scalar;
  /** λ·L_dense (`loss_contra_dense`) */
  dense: tf.Scalar;
}

/**
 * Both InfoNCE terms from the normalised query and key embeddings. The key side is constant (no grad);
 * `queue` holds global keys and `queue2` pooled dense keys, both [K, D].
 */
export function denseclLoss(q: DenseEmbeddings, k: DenseEmbeddings, queue: tf.Tensor2D, queue2: tf.Tensor2D, temperature: number, lossLambda: number): DenseCLLossParts {
  return tf.tidy(() => {
    // global: l_pos = q·k, l_neg = q·queue
    const single = queueInfoNce(q.global, k.global, queue, temperature);
    // match regions: for every query location, the key location with the most similar backbone feature
    const match = matchByBackboneSimilarity(q.backbone, k.backbone); // [B, S²]
    const matchedKeyGrid = tf.gather(k.grid, match, 1, 1) as tf.Tensor3D; // [B, S², D]
    // dense: every location of every image is one row; negatives are the image-level queue2
    const [b, s2, d] = q.grid.shape;
    const qRows = tf.reshape(q.grid, [b * s2, d]) as tf.Tensor2D; // [B·S², D]
    const kRows = tf.reshape(matchedKeyGrid, [b * s2, d]) as tf.Tensor2D; // [B·S², D]
    const dense = queueInfoNce(qRows, kRows, queue2, temperature);
    const weightedSingle = tf.mul(single, 1 - lossLambda) as tf.Scalar;
    const weightedDense = tf.mul(dense, lossLambda) as tf.Scalar;
    return { loss: tf.add(weightedSingle, weightedDense) as tf.Scalar, single: weightedSingle, dense: weightedDense };
  });
}

// ------------------------------------------------------------------------------------------------
// DenseCL
// ------------------------------------------------------------------------------------------------

export class DenseCL implements MethodInstance<DenseCLArgs> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly queues: { queue: MemoryQueue; queue2: MemoryQueue };
  readonly state;
  /** Online (query) encoder. */
  readonly q: Encoder<DenseCLNeck>;
  /** Momentum (key) encoder. */
  readonly k: Encoder<DenseCLNeck>;

  constructor(
    readonly args: DenseCLArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const neck = (store: ParamStore, prefix: string, c: number, s: number | string) => new DenseCLNeck(store, prefix, c, args.hiddenDim, args.embedDim, s);
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, neck, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    this.queues = {
      queue: new MemoryQueue(args.queueSize, args.embedDim, seed, 'queue'),
      queue2: new MemoryQueue(args.queueSize, args.embedDim, seed, 'queue2'),
    };
    this.state = { momentum: paramsComponent(this.momentumEncoder), queues: queuesComponent([this.queues.queue, this.queues.queue2]) };
  }

  /** Query from view 0, key from view 1, one direction (forward_train). */
  step({ views: [view0, view1] }: MethodBatch, { rng, applyGradients }: StepContext): StepResult {
    const { shuffleBnGroups: groups, temperature, lossLambda } = this.args;
    const { queue, queue2 } = this.queues;
    return momentumStep<DenseEmbeddings>(
      {
        online: this.online,
        momentumEncoder: this.momentumEncoder,
        momentum: this.args.momentum,
        // k, k_grid, k2 and k_b are all un-shuffled with the same inverse permutation.
        encodeKeys: () => encodeShuffled(view1!, groups, rng, (x, opts) => denseclEmbed(this.k.head, this.k.backbone.apply(x, opts))),
        loss: (keys) => {
          const qMap = this.q.backbone.apply(view0!, { training: true, bnGroups: groups });
          const out = denseclLoss(denseclEmbed(this.q.head, qMap), keys, queue.buffer as tf.Tensor2D, queue2.buffer as tf.Tensor2D, temperature, lossLambda);
          return { loss: out.loss, parts: { single: out.single, dense: out.dense } };
        },
        afterStep: (keys) => {
          enqueueKeys(queue, keys.global);
          enqueueKeys(queue2, keys.pooledGrid);
        },
      },
      applyGradients,
    );
  }

  dispose(): void {
    this.online.dispose();
    this.momentumEncoder.dispose();
    this.queues.queue.dispose();
    this.queues.queue2.dispose();
  }
}

export const densecl = defineMethod({
  name: 'densecl',
  title: 'DenseCL: MoCo v2 plus a dense InfoNCE over backbone-feature correspondences',
  paper: { citation: 'Wang, Zhang, Shen, Kong, Li. Dense Contrastive Learning for Self-Supervised Visual Pre-Training. CVPR 2021', url: 'https://arxiv.org/abs/2011.09157' },
  code: { repo: 'WXinlong/DenseCL', commit: 'b64bbb6' },
  args: denseclArgs,
  consumes: { views: VIEW_PRESETS.mocoV2, geometry: false },
  // densecl_imagenet_200ep.py: SGD lr 0.03 at batch 256, momentum 0.9, wd 1e-4, cosine, no warm-up.
  optimizer: { kind: 'sgd', baseLr: 0.03, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0 },
  smallScale: {
    args: { queueSize: 1024, momentum: 0.99 },
    optimizer: { baseLr: 0.3 },
    why: 'as MoCo v2 (docs/EXPERIMENTS.md §1), so the two differ only in the dense branch',
  },
  claims: [
    { metric: 'semseg.mIoU', over: 'mocov2', paper: '+3.0 mIoU VOC semantic segmentation (abstract); README IN-200ep VOC seg 69.4 vs 67.5' },
    { metric: 'unsup-seg.mIoU', over: 'mocov2', paper: 'dense features localise better: +2.0 AP VOC detection, +1.1 AP COCO detection (abstract)' },
  ],
  validate: validateMomentumContrast,
  create: ({ args, backbone, backboneChannels, seed }) => new DenseCL({ ...args, hiddenDim: args.hiddenDim ?? backboneChannels }, backbone, seed),
});
