/**
 * The DETR transformer (facebookresearch/detr@29901c5, models/transformer.py), with the official state_dict names
 * (`encoder.layers.{i}.self_attn.in_proj_weight`, `decoder.layers.{i}.multihead_attn.out_proj.weight`,
 * `decoder.layers.{i}.linear1.weight`, `decoder.norm.weight`, …) and the same switches: post-norm (default) or
 * pre-norm layers (`normalizeBefore`, which adds `encoder.norm`), positional encodings added to queries and keys
 * (never to values) in every attention, no final encoder norm in post-norm, a final decoder norm, and the stack of
 * every decoder layer's normed output (`returnIntermediateDec`, what DETR's auxiliary losses read).
 *
 * Shape legend: B batch, H×W feature map, S = H·W memory tokens, Q object queries, D = dModel, L decoder layers.
 *
 * Encoder layer (post-norm):  x ← LN1(x + MHA(x + pos, x + pos, x)),  x ← LN2(x + FFN(x))
 * Decoder layer (post-norm):  t ← LN1(t + MHA(t + qpos, t + qpos, t; tgtMask))
 *                             t ← LN2(t + MHA(t + qpos, memory + pos, memory; memory padding))
 *                             t ← LN3(t + FFN(t))                      FFN(x) = linear2(dropout(act(linear1(x))))
 * Decoder input: t = 0 (`torch.zeros_like(query_embed)`), the object queries enter as `query_pos` only.
 *
 * Batch-first ([B, L, D]) and NHWC maps here; the official module is sequence-first and NCHW. Initialisation as
 * `Transformer._reset_parameters`: xavier_uniform_ on every parameter with more than one dimension; biases as
 * PyTorch leaves them (MultiheadAttention's zero, Linear's U(±1/√fan_in)); LayerNorm 1 / 0, eps 1e-5.
 */
import * as tf from '@tensorflow/tfjs';
import { LayerNorm, Linear } from '../layers.js';
import { relu } from '../native.js';
import { Initializer, type ParamScope } from '../params.js';
import { MultiheadAttention, dropout, type DropoutContext } from './attention.js';

export interface DetrTransformerConfig {
  /** D, hidden_dim (DETR main.py: 256). */
  dModel: number;
  /** nheads (8). */
  nHead: number;
  /** enc_layers (6). */
  numEncoderLayers: number;
  /** dec_layers (6). */
  numDecoderLayers: number;
  /** dim_feedforward (2048). */
  dimFeedforward: number;
  /** dropout (0.1), on attention weights, residual branches and the FFN hidden layer. */
  dropout: number;
  /** activation ('relu'; the official module also knows 'gelu'). */
  activation: 'relu' | 'gelu';
  /** pre_norm (false). */
  normalizeBefore: boolean;
  /** build_transformer passes True: the decoder returns every layer's output. */
  returnIntermediateDec: boolean;
}

/** DETR's `build_transformer` with main.py's defaults. */
export const DETR_TRANSFORMER_DEFAULTS: DetrTransformerConfig = {
  dModel: 256,
  nHead: 8,
  numEncoderLayers: 6,
  numDecoderLayers: 6,
  dimFeedforward: 2048,
  dropout: 0.1,
  activation: 'relu',
  normalizeBefore: false,
  returnIntermediateDec: true,
};

/** Torch's LayerNorm default eps (the engine's LayerNorm defaults to MAE's 1e-6). */
const LN_EPS = 1e-5;

const activate = (x: tf.Tensor, kind: DetrTransformerConfig['activation']): tf.Tensor => (kind === 'relu' ? relu(x) : tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))));

const withPos = <T extends tf.Tensor>(x: T, pos: tf.Tensor | undefined): T => (pos ? (tf.add(x, pos) as T) : x);

/** xavier_uniform_ on a Linear weight ([in, out] here, fan_in + fan_out either way); the bias is left as drawn. */
function xavierLinear(scope: ParamScope, init: Initializer, inDim: number, outDim: number): Linear {
  const layer = new Linear(scope, init, inDim, outDim);
  const w = init.uniform([inDim, outDim], Math.sqrt(6 / (inDim + outDim)));
  layer.weight.assign(w);
  w.dispose();
  return layer;
}

function attention(scope: ParamScope, init: Initializer, c: DetrTransformerConfig): MultiheadAttention {
  const mha = new MultiheadAttention(scope, init, c.dModel, c.nHead, c.dropout);
  const w = init.uniform([c.dModel, c.dModel], Math.sqrt(6 / (2 * c.dModel)));
  mha.outProj.weight.assign(w);
  w.dispose();
  return mha;
}

export interface EncoderMasks {
  /** `mask` / `src_mask`: [S, S] or [B·H, S, S], bool (true = blocked) or additive float. */
  mask?: tf.Tensor;
  /** `src_key_padding_mask`: [B, S], true at padded tokens. */
  srcKeyPaddingMask?: tf.Tensor2D;
  /** Positional encoding [B, S, D], added to queries and keys. */
  pos?: tf.Tensor3D;
}

export class TransformerEncoderLayer {
  readonly selfAttn: MultiheadAttention;
  readonly linear1: Linear;
  readonly linear2: Linear;
  readonly norm1: LayerNorm;
  readonly norm2: LayerNorm;

  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly config: DetrTransformerConfig,
  ) {
    this.selfAttn = attention(scope.child('self_attn'), init, config);
    this.linear1 = xavierLinear(scope.child('linear1'), init, config.dModel, config.dimFeedforward);
    this.linear2 = xavierLinear(scope.child('linear2'), init, config.dimFeedforward, config.dModel);
    this.norm1 = new LayerNorm(scope.child('norm1'), config.dModel, LN_EPS);
    this.norm2 = new LayerNorm(scope.child('norm2'), config.dModel, LN_EPS);
  }

  private ffn(x: tf.Tensor, ctx: DropoutContext): tf.Tensor {
    return this.linear2.apply(dropout(activate(this.linear1.apply(x), this.config.activation), this.config.dropout, ctx));
  }

  apply(src: tf.Tensor3D, m: EncoderMasks, ctx: DropoutContext): tf.Tensor3D {
    const p = this.config.dropout;
    const masks = { attnMask: m.mask, keyPaddingMask: m.srcKeyPaddingMask };
    if (this.config.normalizeBefore) {
      const s2 = this.norm1.apply(src) as tf.Tensor3D;
      const qk = withPos(s2, m.pos);
      let x = tf.add(src, dropout(this.selfAttn.apply(qk, qk, s2, masks, ctx), p, ctx));
      x = tf.add(x, dropout(this.ffn(this.norm2.apply(x), ctx), p, ctx));
      return x as tf.Tensor3D;
    }
    const qk = withPos(src, m.pos);
    let x = this.norm1.apply(tf.add(src, dropout(this.selfAttn.apply(qk, qk, src, masks, ctx), p, ctx)));
    x = this.norm2.apply(tf.add(x, dropout(this.ffn(x, ctx), p, ctx)));
    return x as tf.Tensor3D;
  }
}

export interface DecoderMasks {
  /** `tgt_mask`: [Q, Q] or [B·H, Q, Q] (UP-DETR: float 0 / −∞ blocks between query groups). */
  tgtMask?: tf.Tensor;
  /** `memory_mask`: [Q, S] or [B·H, Q, S]. */
  memoryMask?: tf.Tensor;
  /** `tgt_key_padding_mask`: [B, Q]. */
  tgtKeyPaddingMask?: tf.Tensor2D;
  /** `memory_key_padding_mask`: [B, S], true at padded pixels. */
  memoryKeyPaddingMask?: tf.Tensor2D;
  /** Memory positional encoding [B, S, D]. */
  pos?: tf.Tensor3D;
  /** Query positional encoding (the object queries): [Q, D] shared, or [B, Q, D] (UP-DETR adds patch features). */
  queryPos?: tf.Tensor;
}

export class TransformerDecoderLayer {
  readonly selfAttn: MultiheadAttention;
  readonly multiheadAttn: MultiheadAttention;
  readonly linear1: Linear;
  readonly linear2: Linear;
  readonly norm1: LayerNorm;
  readonly norm2: LayerNorm;
  readonly norm3: LayerNorm;

  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly config: DetrTransformerConfig,
  ) {
    this.selfAttn = attention(scope.child('self_attn'), init, config);
    this.multiheadAttn = attention(scope.child('multihead_attn'), init, config);
    this.linear1 = xavierLinear(scope.child('linear1'), init, config.dModel, config.dimFeedforward);
    this.linear2 = xavierLinear(scope.child('linear2'), init, config.dimFeedforward, config.dModel);
    this.norm1 = new LayerNorm(scope.child('norm1'), config.dModel, LN_EPS);
    this.norm2 = new LayerNorm(scope.child('norm2'), config.dModel, LN_EPS);
    this.norm3 = new LayerNorm(scope.child('norm3'), config.dModel, LN_EPS);
  }

  private ffn(x: tf.Tensor, ctx: DropoutContext): tf.Tensor {
    return this.linear2.apply(dropout(activate(this.linear1.apply(x), this.config.activation), this.config.dropout, ctx));
  }

  apply(tgt: tf.Tensor3D, memory: tf.Tensor3D, m: DecoderMasks, ctx: DropoutContext): tf.Tensor3D {
    const p = this.config.dropout;
    const selfMasks = { attnMask: m.tgtMask, keyPaddingMask: m.tgtKeyPaddingMask };
    const crossMasks = { attnMask: m.memoryMask, keyPaddingMask: m.memoryKeyPaddingMask };
    const keys = withPos(memory, m.pos);
    if (this.config.normalizeBefore) {
      let t2 = this.norm1.apply(tgt) as tf.Tensor3D;
      const qk = withPos(t2, m.queryPos);
      let t: tf.Tensor = tf.add(tgt, dropout(this.selfAttn.apply(qk, qk, t2, selfMasks, ctx), p, ctx));
      t2 = this.norm2.apply(t) as tf.Tensor3D;
      t = tf.add(t, dropout(this.multiheadAttn.apply(withPos(t2, m.queryPos), keys, memory, crossMasks, ctx), p, ctx));
      t = tf.add(t, dropout(this.ffn(this.norm3.apply(t), ctx), p, ctx));
      return t as tf.Tensor3D;
    }
    const qk = withPos(tgt, m.queryPos);
    let t = this.norm1.apply(tf.add(tgt, dropout(this.selfAttn.apply(qk, qk, tgt, selfMasks, ctx), p, ctx))) as tf.Tensor3D;
    t = this.norm2.apply(tf.add(t, dropout(this.multiheadAttn.apply(withPos(t, m.queryPos), keys, memory, crossMasks, ctx), p, ctx))) as tf.Tensor3D;
    return this.norm3.apply(tf.add(t, dropout(this.ffn(t, ctx), p, ctx))) as tf.Tensor3D;
  }
}

/** `TransformerEncoder`: the layers, then `norm` (pre-norm only). */
export class TransformerEncoder {
  readonly layers: TransformerEncoderLayer[] = [];
  readonly norm: LayerNorm | null;
  constructor(scope: ParamScope, init: Initializer, config: DetrTransformerConfig) {
    for (let i = 0; i < config.numEncoderLayers; i++) this.layers.push(new TransformerEncoderLayer(scope.child('layers').child(i), init, config));
    this.norm = config.normalizeBefore ? new LayerNorm(scope.child('norm'), config.dModel, LN_EPS) : null;
  }

  /** src [B, S, D] → memory [B, S, D]. */
  apply(src: tf.Tensor3D, masks: EncoderMasks, ctx: DropoutContext): tf.Tensor3D {
    let x = src;
    for (const layer of this.layers) x = layer.apply(x, masks, ctx);
    return this.norm ? (this.norm.apply(x) as tf.Tensor3D) : x;
  }
}

/** `TransformerDecoder` with its final `norm`. */
export class TransformerDecoder {
  readonly layers: TransformerDecoderLayer[] = [];
  readonly norm: LayerNorm;
  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly config: DetrTransformerConfig,
  ) {
    for (let i = 0; i < config.numDecoderLayers; i++) this.layers.push(new TransformerDecoderLayer(scope.child('layers').child(i), init, config));
    this.norm = new LayerNorm(scope.child('norm'), config.dModel, LN_EPS);
  }

  /**
   * tgt [B, Q, D], memory [B, S, D] → [L, B, Q, D] with `returnIntermediateDec` (every layer's output through the
   * shared final norm), else [1, B, Q, D] (the last one).
   */
  apply(tgt: tf.Tensor3D, memory: tf.Tensor3D, masks: DecoderMasks, ctx: DropoutContext): tf.Tensor4D {
    let t = tgt;
    const intermediate: tf.Tensor[] = [];
    for (const layer of this.layers) {
      t = layer.apply(t, memory, masks, ctx);
      if (this.config.returnIntermediateDec) intermediate.push(this.norm.apply(t));
    }
    if (this.config.returnIntermediateDec) return tf.stack(intermediate) as tf.Tensor4D;
    return tf.expandDims(this.norm.apply(t), 0) as tf.Tensor4D;
  }
}

export interface DetrTransformerOutput {
  /** Decoder outputs [L, B, Q, D] (L = 1 without `returnIntermediateDec`): the official `hs`. */
  hs: tf.Tensor4D;
  /** Encoder output as a map [B, H, W, D]. */
  memory: tf.Tensor4D;
}

/** `Transformer`: encoder + decoder under one scope (DETR's `transformer.`). */
export class DetrTransformer {
  readonly encoder: TransformerEncoder;
  readonly decoder: TransformerDecoder;

  constructor(
    scope: ParamScope,
    readonly config: DetrTransformerConfig,
    seed: number | string = 0,
  ) {
    if (config.dModel % config.nHead !== 0) throw new Error(`DetrTransformer: dModel ${config.dModel} is not divisible by nHead ${config.nHead}`);
    if (!(config.dropout >= 0 && config.dropout < 1)) throw new Error(`DetrTransformer: dropout must be in [0, 1), got ${config.dropout}`);
    const init = new Initializer(`detr-transformer:${scope.prefix}:${seed}`);
    this.encoder = new TransformerEncoder(scope.child('encoder'), init, config);
    this.decoder = new TransformerDecoder(scope.child('decoder'), init, config);
  }

  /**
   * `Transformer.forward(src, mask, query_embed, pos_embed)`; `decoderMask` is UP-DETR's extra argument (the
   * decoder's `tgt_mask`).
   * src [B, H, W, D] (already projected to D), mask [B, H, W] bool (true = padding), queryEmbed [Q, D] (or
   * [B, Q, D]), posEmbed [B, H, W, D].
   */
  apply(src: tf.Tensor4D, mask: tf.Tensor3D, queryEmbed: tf.Tensor, posEmbed: tf.Tensor4D, ctx: DropoutContext, decoderMask?: tf.Tensor): DetrTransformerOutput {
    const [b, h, w, d] = src.shape;
    if (d !== this.config.dModel) throw new Error(`DetrTransformer: src has ${d} channels, the transformer is ${this.config.dModel} wide`);
    if (mask.dtype !== 'bool') throw new Error(`DetrTransformer: mask must be bool (true = padding), got ${mask.dtype}`);
    const flat = tf.reshape(src, [b, h * w, d]) as tf.Tensor3D;
    const pos = tf.reshape(posEmbed, [b, h * w, d]) as tf.Tensor3D;
    const padding = tf.reshape(mask, [b, h * w]) as tf.Tensor2D;
    const q = queryEmbed.shape[queryEmbed.rank - 2]!;
    const tgt = tf.zeros([b, q, d]) as tf.Tensor3D;
    const memory = this.encoder.apply(flat, { srcKeyPaddingMask: padding, pos }, ctx);
    const hs = this.decoder.apply(tgt, memory, { memoryKeyPaddingMask: padding, pos, queryPos: queryEmbed, tgtMask: decoderMask }, ctx);
    return { hs, memory: tf.reshape(memory, [b, h, w, d]) as tf.Tensor4D };
  }
}
