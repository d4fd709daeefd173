/**
 * Online / momentum encoder pairs and the step skeleton every momentum-encoder method shares (MoCo v2,
 * DenseCL, RegionCL, PixPro, ReSim, SCRL, R2O, …): ξ ← m·ξ + (1−m)·θ, keys without gradient,
 * loss and gradients of the online encoder, optimizer, then state updates (queues).
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../../core/errors.js';
import type { Rng } from '../../../core/rng.js';
import { ParamStore } from '../../engine/params.js';
import { shuffleBatch, type ForwardOptions } from '../../engine/layers.js';
import { copyWeights, emaUpdate } from '../../engine/ema.js';
import { namedGradients } from '../../engine/grads.js';
import type { BackboneFactory, FeatureBackbone, NamedGradients, StepResult } from './contract.js';

/** An online or momentum encoder: backbone + head, sharing one ParamStore. */
export interface Encoder<Head> {
  store: ParamStore;
  backbone: FeatureBackbone;
  head: Head;
}

/**
 * The online and momentum encoders. Both are built, then the momentum one is overwritten with the
 * online weights (`param_k.data.copy_(param_q.data)`), so only the online init matters. The head is
 * built under `neck.*` (the factory also gets the backbone, for heads on several stages: SCFS); a method adds its
 * online-only modules (predictors, PixPro's PPM) to `q.store` afterwards and leaves them out of its momentum update.
 */
export function buildEncoderPair<Head>(
  backboneFactory: BackboneFactory,
  headFactory: (store: ParamStore, prefix: string, inChannels: number, seed: number | string, backbone: FeatureBackbone) => Head,
  seed: number,
): { q: Encoder<Head>; k: Encoder<Head> } {
  const build = (s: number | string): Encoder<Head> => {
    const store = new ParamStore();
    const backbone = backboneFactory(store, 'backbone', s);
    return { store, backbone, head: headFactory(store, 'neck', backbone.outChannels, s, backbone) };
  };
  const q = build(seed);
  const k = build(`${seed}-momentum`);
  copyWeights(k.store.vars, q.store.vars);
  for (const v of k.store.vars.values()) if (v.trainable) v.trainable = false; // keys get no gradient
  return { q, k };
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

/**
 * One momentum-encoder step in the official order: momentum update → `encodeKeys` (no gradient) →
 * `loss` under the tape → `applyGradients` (the optimizer) → `afterStep` (enqueue). `online` names what
 * is differentiated. The momentum update over `parameters()` only (BN buffers follow the momentum
 * encoder's own train-mode forwards), as in MoCo's `_momentum_update_key_encoder`.
 */
export function momentumStep<Keys extends Record<string, tf.Tensor>>(
  parts: {
    online: ParamStore;
    momentumEncoder: ParamStore;
    momentum: number;
    encodeKeys: () => Keys;
    loss: (keys: Keys) => { loss: tf.Scalar; parts: Record<string, tf.Scalar> };
    afterStep?: (keys: Keys) => void;
  },
  applyGradients: (grads: NamedGradients) => void,
): StepResult {
  // 1. ξ ← m·ξ + (1−m)·θ over parameters (not BN buffers), before the key forward (as in builder.py).
  emaUpdate(parts.momentumEncoder.vars, parts.online.vars, parts.momentum, 'skip');
  // 2. keys, no gradient.
  const keys = tf.tidy(parts.encodeKeys);
  // 3. online forward + loss under the tape.
  let partValues: Record<string, tf.Scalar> = {};
  const { loss: value, grads } = namedGradients(() => {
    const out = parts.loss(keys);
    partValues = Object.fromEntries(Object.entries(out.parts).map(([k, t]) => [k, tf.keep(t)]));
    return out.loss;
  }, parts.online.trainable());
  // 4. optimizer.
  applyGradients(grads);
  // 5. state updates that follow the loss (enqueue: the logits used the queue as it was).
  parts.afterStep?.(keys);
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
 * The arguments of MoCo v2 and every method built on it (DenseCL, RegionCL, …), with MoCo v2's values
 * (facebookresearch/moco main_moco.py: `--moco-k 65536 --moco-m 0.999 --moco-t 0.2 --mlp`).
 */
export const momentumContrastArgs = z.strictObject({
  temperature: z.number().gt(1e-4).default(0.2).describe('τ of InfoNCE; 0.2 for MoCo v2 (`--moco-t 0.2`; the code default 0.07 is v1\'s)'),
  queueSize: z.number().int().min(1).default(65536).describe('K, keys kept as negatives (`--moco-k`); a multiple of the batch size; scale it to the dataset'),
  momentum: z.number().min(0).lt(1).default(0.999).describe('m of the momentum encoder (`--moco-m`); short runs need a faster one, e.g. 0.99'),
  embedDim: z.number().int().min(1).default(128).describe('D, embedding size (`--moco-dim`)'),
  hiddenDim: z.number().int().min(1).optional().describe('H, MLP hidden width; default the backbone\'s output channels, as in the paper (2048 for ResNet-50)'),
  shuffleBnGroups: z
    .number()
    .int()
    .min(1)
    .default(2)
    .describe('emulated GPUs for shuffle-BN (queries normalised per group of B/G, keys from a shuffled batch); the paper had 8; 1 = plain BN'),
});
export type MomentumContrastArgs = z.infer<typeof momentumContrastArgs>;

/** The size checks the official code makes by assertion. */
export function validateMomentumContrast(args: MomentumContrastArgs, { batchSize }: { batchSize: number }): void {
  if (args.queueSize % batchSize !== 0) throw new BadInputError(`${args.queueSize} must be a multiple of the batch size ${batchSize}`, 'args.queueSize');
  if (batchSize % args.shuffleBnGroups !== 0) throw new BadInputError(`${args.shuffleBnGroups} groups must divide the batch size ${batchSize}`, 'args.shuffleBnGroups');
}
