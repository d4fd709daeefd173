/**
 * `torch.nn.MultiheadAttention` (PyTorch 1.13 `F.multi_head_attention_forward`) with its state_dict names, as the
 * DETR transformer uses it (facebookresearch/detr@29901c5, models/transformer.py), and dropout with a seeded mask.
 *
 * Shape legend: B batch, Lq queries, Lk keys, D model width, H heads, d = D / H per head.
 *
 *   [q | k | v] = [query Wq + bq | key Wk + bk | value Wv + bv]     (in_proj_weight = [Wq; Wk; Wv], [3D, D])
 *   A_h = softmax(q_h k_hᵀ / √d + M)                                   M: attn_mask and key_padding_mask as 0 / −∞
 *   out = concat_h(dropout(A_h) v_h) Wo + bo                           (out_proj)
 *
 * Batch-first here ([B, L, D]); the official modules are sequence-first ([L, B, D]).
 * Masks follow PyTorch: a bool mask is True where attention is NOT allowed (→ −∞); a float mask is added to the
 * logits (UP-DETR's decoder mask is a float 0 / −∞ matrix). A query whose keys are all masked gives NaN, as in
 * PyTorch.
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../../../core/rng.js';
import { Linear } from '../layers.js';
import type { Initializer, ParamScope } from '../params.js';

/** Training switch and the stream that seeds dropout masks (required when training with a dropout rate > 0). */
export interface DropoutContext {
  training: boolean;
  rng?: Rng;
}

/** nn.Dropout: in training, zero each element with probability `rate` and scale the rest by 1 / (1 − rate). */
export function dropout<T extends tf.Tensor>(x: T, rate: number, ctx: DropoutContext): T {
  if (!ctx.training || rate === 0) return x;
  if (!ctx.rng) throw new Error(`dropout(${rate}) in training needs DropoutContext.rng (seeded masks keep resumed runs identical)`);
  return tf.dropout(x, rate, undefined, ctx.rng.int(0, 2 ** 31 - 1)) as T;
}

/** A bool mask (true = masked) → 0 / −∞ float; a float mask is returned as it is. */
export function additiveMask(mask: tf.Tensor): tf.Tensor {
  if (mask.dtype !== 'bool') return mask;
  return tf.tidy(() => tf.where(mask, tf.fill(mask.shape, -Infinity), tf.zeros(mask.shape)));
}

export interface AttentionMasks {
  /** [Lq, Lk] or [B·H, Lq, Lk] (PyTorch's `attn_mask`), bool or additive float. */
  attnMask?: tf.Tensor;
  /** [B, Lk] bool, true at padded keys (PyTorch's `key_padding_mask`). */
  keyPaddingMask?: tf.Tensor2D;
}

export class MultiheadAttention {
  /** [D, 3D] (x @ W layout; PyTorch's in_proj_weight is [3D, D]). */
  readonly inProjWeight: tf.Variable;
  readonly inProjBias: tf.Variable;
  readonly outProj: Linear;

  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly dim: number,
    readonly heads: number,
    readonly dropoutRate = 0,
  ) {
    if (dim % heads !== 0) throw new Error(`MultiheadAttention: embed dim ${dim} is not divisible by ${heads} heads`);
    // PyTorch's _reset_parameters: xavier_uniform_ on [3D, D] (fan_in D, fan_out 3D), zero in_proj_bias and
    // out_proj.bias; out_proj.weight keeps Linear's default init (DETR re-initialises it with xavier_uniform_).
    this.inProjWeight = scope.add('in_proj_weight', init.uniform([dim, 3 * dim], Math.sqrt(6 / (4 * dim))), { layout: 'io', role: 'weight' });
    this.inProjBias = scope.add('in_proj_bias', tf.zeros([3 * dim]), { layout: 'same', role: 'bias' });
    this.outProj = new Linear(scope.child('out_proj'), init, dim, dim);
    const zero = tf.zeros([dim]);
    this.outProj.bias!.assign(zero);
    zero.dispose();
  }

  /** query [B, Lq, D], key [B, Lk, D], value [B, Lk, D] → [B, Lq, D]. */
  apply(query: tf.Tensor3D, key: tf.Tensor3D, value: tf.Tensor3D, masks: AttentionMasks, ctx: DropoutContext): tf.Tensor3D {
    const [b, lq, d] = query.shape;
    const lk = key.shape[1];
    const h = this.heads;
    const hd = d / h;
    if (d !== this.dim || key.shape[2] !== d || value.shape[2] !== d || key.shape[0] !== b || value.shape[0] !== b || value.shape[1] !== lk) {
      throw new Error(`MultiheadAttention: query [${query.shape}], key [${key.shape}], value [${value.shape}] do not fit width ${this.dim}`);
    }
    const project = (x: tf.Tensor3D, part: number): tf.Tensor4D => {
      const w = tf.slice(this.inProjWeight, [0, part * d], [d, d]) as tf.Tensor2D;
      const bias = tf.slice(this.inProjBias, [part * d], [d]);
      const y = tf.add(tf.matMul(tf.reshape(x, [-1, d]) as tf.Tensor2D, w), bias);
      return tf.transpose(tf.reshape(y, [b, x.shape[1], h, hd]), [0, 2, 1, 3]) as tf.Tensor4D; // [B, H, L, d]
    };
    // PyTorch scales q before the product.
    const q = tf.mul(project(query, 0), 1 / Math.sqrt(hd)) as tf.Tensor4D;
    const k = project(key, 1);
    const v = project(value, 2);
    let logits: tf.Tensor = tf.matMul(q, k, false, true); // [B, H, Lq, Lk]
    if (masks.attnMask) {
      const m = additiveMask(masks.attnMask);
      if (m.rank === 2) logits = tf.add(logits, m);
      else if (m.rank === 3) logits = tf.add(logits, tf.reshape(m, [b, h, lq, lk]));
      else throw new Error(`MultiheadAttention: attnMask must be [Lq, Lk] or [B*H, Lq, Lk], got [${m.shape}]`);
    }
    if (masks.keyPaddingMask) {
      if (masks.keyPaddingMask.shape[0] !== b || masks.keyPaddingMask.shape[1] !== lk) throw new Error(`MultiheadAttention: keyPaddingMask must be [${b}, ${lk}], got [${masks.keyPaddingMask.shape}]`);
      logits = tf.add(logits, tf.reshape(additiveMask(masks.keyPaddingMask), [b, 1, 1, lk]));
    }
    const attn = dropout(tf.softmax(logits, -1), this.dropoutRate, ctx);
    const out = tf.reshape(tf.transpose(tf.matMul(attn, v), [0, 2, 1, 3]), [b, lq, d]);
    return this.outProj.apply(out) as tf.Tensor3D;
  }
}
