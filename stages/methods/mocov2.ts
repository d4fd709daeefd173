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
 * The shared pieces (InfoNCE, the FIFO key queue, the momentum update, the step skeleton) live in
 * ./shared/; this file is MoCo v2 alone.
 */
import * as tf from '@tensorflow/tfjs';
import { VIEW_PRESETS } from '../data/augment.js';
import { queuesComponent, paramsComponent } from '../engine/checkpoint.js';
import { MemoryQueue } from '../engine/queue.js';
import type { ParamStore } from '../engine/params.js';
import { defineMethod, type BackboneFactory, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { enqueueKeys, l2Normalize, queueInfoNce } from './shared/contrast.js';
import { GlobalMlpHead } from './shared/heads.js';
import { buildEncoderPair, encodeShuffled, momentumContrastArgs, momentumStep, validateMomentumContrast, type Encoder, type MomentumContrastArgs } from './shared/momentum-encoder.js';

/** q = normalize(mlp(avgpool(C5))), the embedding of one view by one encoder: [B, D]. */
export function mocov2Embed(head: GlobalMlpHead, featureMap: tf.Tensor4D): tf.Tensor2D {
  return tf.tidy(() => l2Normalize(head.apply(featureMap), 1));
}

/** The MoCo v2 loss from the online encoder's last feature map and the keys k [B, D]. */
export function mocov2Loss(head: GlobalMlpHead, qFeatureMap: tf.Tensor4D, k: tf.Tensor2D, queue: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => queueInfoNce(mocov2Embed(head, qFeatureMap), k, queue, temperature));
}

export type MoCoV2Args = MomentumContrastArgs & { hiddenDim: number };

export class MoCoV2 implements MethodInstance<MoCoV2Args> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly queues: { queue: MemoryQueue };
  readonly state;
  /** Online (query) encoder. */
  readonly q: Encoder<GlobalMlpHead>;
  /** Momentum (key) encoder. */
  readonly k: Encoder<GlobalMlpHead>;

  constructor(
    readonly args: MoCoV2Args,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const head = (store: ParamStore, prefix: string, c: number, s: number | string) => new GlobalMlpHead(store, prefix, c, args.hiddenDim, args.embedDim, s);
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, head, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    this.queues = { queue: new MemoryQueue(args.queueSize, args.embedDim, seed, 'queue') };
    this.state = { momentum: paramsComponent(this.momentumEncoder), queues: queuesComponent([this.queues.queue]) };
  }

  /** Query from view 0, key from view 1, one direction (as builder.py). */
  step({ views: [view0, view1] }: MethodBatch, { rng, applyGradients }: StepContext): StepResult {
    const groups = this.args.shuffleBnGroups;
    const queue = this.queues.queue;
    return momentumStep<{ k: tf.Tensor2D }>(
      {
        online: this.online,
        momentumEncoder: this.momentumEncoder,
        momentum: this.args.momentum,
        encodeKeys: () => encodeShuffled(view1!, groups, rng, (x, opts) => ({ k: mocov2Embed(this.k.head, this.k.backbone.apply(x, opts)) })),
        loss: ({ k }) => {
          const qMap = this.q.backbone.apply(view0!, { training: true, bnGroups: groups });
          return { loss: mocov2Loss(this.q.head, qMap, k, queue.buffer as tf.Tensor2D, this.args.temperature), parts: {} };
        },
        afterStep: ({ k }) => enqueueKeys(queue, k),
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

export const mocov2 = defineMethod({
  name: 'mocov2',
  title: 'MoCo v2: momentum contrast on globally pooled features (the baseline)',
  paper: { citation: 'Chen, Fan, Girshick, He. Improved Baselines with Momentum Contrastive Learning. arXiv 2020', url: 'https://arxiv.org/abs/2003.04297' },
  code: { repo: 'facebookresearch/moco', commit: 'f515ef4' },
  args: momentumContrastArgs,
  consumes: { views: VIEW_PRESETS.mocoV2, geometry: false },
  // main_moco.py: SGD lr 0.03 at batch 256, momentum 0.9, wd 1e-4, --cos, no warm-up.
  optimizer: { kind: 'sgd', baseLr: 0.03, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0 },
  smallScale: {
    args: { queueSize: 1024, momentum: 0.99 },
    optimizer: { baseLr: 0.3 },
    why: 'docs/EXPERIMENTS.md §1: at 0.999 the key encoder barely leaves its init in a few thousand steps; K scaled to ~1 epoch of synthetic-small; lr 0.3 @256 (0.0375 at B=32) as in that experiment',
  },
  validate: validateMomentumContrast,
  create: ({ args, backbone, backboneChannels, seed }) => new MoCoV2({ ...args, hiddenDim: args.hiddenDim ?? backboneChannels }, backbone, seed),
});
