/**
 * Deformable DETR (Zhu et al., "Deformable DETR: Deformable Transformers for End-to-End Object Detection", ICLR 2021)
 * without the backbone, as DETReg runs it (amirbar/DETReg@a4b6363 models/deformable_transformer.py and
 * models/deformable_detr.py `DeformableDETR`, identical to fundamentalvision/Deformable-DETR@11169a6 for the single-stage
 * model without box refinement, which is what DETReg's configs train: `--with_box_refine` and `--two_stage` are off by
 * default in util/default_args.py and configs/DETReg_top30_in.sh sets neither). Official state_dict names throughout
 * (`transformer.encoder.layers.{i}.self_attn.sampling_offsets.weight`, `transformer.level_embed`,
 * `input_proj.{l}.{0,1}.*`, `query_embed.weight`, `class_embed.0.*`, `bbox_embed.0.layers.{k}.*`: the class and box
 * heads are one module shared by every decoder layer, so `named_parameters` lists them once, under index 0).
 *
 * Shape legend: B images, L feature levels, (H_l, W_l) level l's map, S = Σ_l H_l·W_l flattened tokens, D = d_model,
 * Q object queries, C classes (sigmoid logits, no no-object class), K decoder layers.
 *
 *   x_l = GN(conv1×1(C_{l+3}))  l < L_b (the backbone's C3..C5),   x_l = GN(conv3×3/2(x_{l−1} or C5))  for the extra levels
 *   p_l = sine(mask_l; offset −0.5) + level_embed_l                                     (position + level embedding)
 *   encoder layer:  x ← LN1(x + MSDeformAttn(x + p, r_enc, x)),  x ← LN2(x + FFN(x))       r_enc: every pixel centre,
 *                   normalised by the valid (unpadded) extent of its level and scaled to each level by its valid ratio
 *   [q_pos | t] = query_embed  [Q, 2D],   r = sigmoid(reference_points(q_pos))  [B, Q, 2]
 *   decoder layer:  t ← LN2(t + MHA(t + q_pos, t + q_pos, t)),  t ← LN1(t + MSDeformAttn(t + q_pos, r · valid, memory)),
 *                   t ← LN3(t + FFN(t))                       (no final norm; hs stacks every layer's t)
 *   logits_k = class_embed(hs_k)  [B, Q, C],  boxes_k = sigmoid(bbox_embed(hs_k) + [σ⁻¹(r), 0, 0])  [B, Q, 4] (cx, cy, w, h)
 *
 * Batch-first, NHWC here; the official modules are batch-first for the deformable transformer and NCHW for maps.
 */
import * as tf from '@tensorflow/tfjs';
import { Conv2d, LayerNorm, Linear } from '../layers.js';
import { relu } from '../native.js';
import { Initializer, type ParamScope } from '../params.js';
import { MultiheadAttention, dropout, type DropoutContext } from './attention.js';
import type { DetrOutputs } from './criterion.js';
import { DetrMlp, maskToFeatureSize } from './detr.js';
import { MSDeformAttn, type SpatialShapes } from './ms_deform_attn.js';
import { positionEmbeddingSine } from './position_encoding.js';

export interface DeformableTransformerConfig {
  /** D, hidden_dim (256). */
  dModel: number;
  /** nheads (8): of every MSDeformAttn and of the decoder's self-attention. */
  nHead: number;
  /** enc_layers (6). */
  numEncoderLayers: number;
  /** dec_layers (6). */
  numDecoderLayers: number;
  /** dim_feedforward (DETReg default_args for deformable_detr: 1024). */
  dimFeedforward: number;
  /** dropout (0.1): residual branches, the FFN hidden layer and the decoder self-attention's weights. */
  dropout: number;
  /** num_feature_levels (4). */
  numFeatureLevels: number;
  /** enc_n_points (4). */
  encNPoints: number;
  /** dec_n_points (4). */
  decNPoints: number;
}

/** `build_deforamble_transformer` with DETReg's defaults (util/default_args.py, model deformable_detr). */
export const DEFORMABLE_TRANSFORMER_DEFAULTS: DeformableTransformerConfig = {
  dModel: 256,
  nHead: 8,
  numEncoderLayers: 6,
  numDecoderLayers: 6,
  dimFeedforward: 1024,
  dropout: 0.1,
  numFeatureLevels: 4,
  encNPoints: 4,
  decNPoints: 4,
};

/** torch.nn.LayerNorm's eps. */
const LN_EPS = 1e-5;

/** xavier_uniform_ on a Linear weight (DeformableTransformer._reset_parameters does it to every matrix); bias as drawn. */
function xavierLinear(scope: ParamScope, init: Initializer, inDim: number, outDim: number): Linear {
  const layer = new Linear(scope, init, inDim, outDim);
  const w = init.uniform([inDim, outDim], Math.sqrt(6 / (inDim + outDim)));
  layer.weight.assign(w);
  w.dispose();
  return layer;
}

/** nn.GroupNorm(groups, C) (eps 1e-5, affine) on NHWC maps, the norm of DeformableDETR's input projections. */
export class GroupNorm {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor(
    scope: ParamScope,
    readonly channels: number,
    readonly groups: number,
    readonly eps = 1e-5,
  ) {
    if (channels % groups !== 0) throw new Error(`GroupNorm: ${channels} channels do not split into ${groups} groups`);
    this.weight = scope.add('weight', tf.ones([channels]), { layout: 'same', role: 'norm' });
    this.bias = scope.add('bias', tf.zeros([channels]), { layout: 'same', role: 'norm' });
  }

  apply(x: tf.Tensor4D): tf.Tensor4D {
    const [b, h, w, c] = x.shape;
    return tf.tidy(() => {
      const grouped = tf.reshape(x, [b, h, w, this.groups, c / this.groups]);
      const { mean, variance } = tf.moments(grouped, [1, 2, 4], true);
      const normed = tf.reshape(tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, this.eps))), [b, h, w, c]);
      return tf.add(tf.mul(normed, this.weight), this.bias) as tf.Tensor4D;
    });
  }
}

/** `DeformableTransformerEncoderLayer` (post-norm). */
export class DeformableTransformerEncoderLayer {
  readonly selfAttn: MSDeformAttn;
  readonly norm1: LayerNorm;
  readonly linear1: Linear;
  readonly linear2: Linear;
  readonly norm2: LayerNorm;

  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly config: DeformableTransformerConfig,
    seed: number | string,
  ) {
    const d = config.dModel;
    this.selfAttn = new MSDeformAttn(scope.child('self_attn'), { dModel: d, nLevels: config.numFeatureLevels, nHeads: config.nHead, nPoints: config.encNPoints }, seed);
    this.norm1 = new LayerNorm(scope.child('norm1'), d, LN_EPS);
    this.linear1 = xavierLinear(scope.child('linear1'), init, d, config.dimFeedforward);
    this.linear2 = xavierLinear(scope.child('linear2'), init, config.dimFeedforward, d);
    this.norm2 = new LayerNorm(scope.child('norm2'), d, LN_EPS);
  }

  /** src, pos [B, S, D]; referencePoints [B, S, L, 2]; padding [B, S] bool → [B, S, D]. */
  apply(src: tf.Tensor3D, pos: tf.Tensor3D, referencePoints: tf.Tensor4D, shapes: SpatialShapes, padding: tf.Tensor2D | undefined, ctx: DropoutContext): tf.Tensor3D {
    const p = this.config.dropout;
    const attn = this.selfAttn.apply(tf.add(src, pos) as tf.Tensor3D, referencePoints, src, shapes, padding);
    const x = this.norm1.apply(tf.add(src, dropout(attn, p, ctx)));
    const ffn = this.linear2.apply(dropout(relu(this.linear1.apply(x)), p, ctx));
    return this.norm2.apply(tf.add(x, dropout(ffn, p, ctx))) as tf.Tensor3D;
  }
}

/** `DeformableTransformerDecoderLayer` (post-norm): self-attention, deformable cross-attention, FFN. */
export class DeformableTransformerDecoderLayer {
  readonly crossAttn: MSDeformAttn;
  readonly norm1: LayerNorm;
  readonly selfAttn: MultiheadAttention;
  readonly norm2: LayerNorm;
  readonly linear1: Linear;
  readonly linear2: Linear;
  readonly norm3: LayerNorm;

  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly config: DeformableTransformerConfig,
    seed: number | string,
  ) {
    const d = config.dModel;
    this.crossAttn = new MSDeformAttn(scope.child('cross_attn'), { dModel: d, nLevels: config.numFeatureLevels, nHeads: config.nHead, nPoints: config.decNPoints }, seed);
    this.norm1 = new LayerNorm(scope.child('norm1'), d, LN_EPS);
    this.selfAttn = new MultiheadAttention(scope.child('self_attn'), init, d, config.nHead, config.dropout);
    const w = init.uniform([d, d], Math.sqrt(6 / (2 * d)));
    this.selfAttn.outProj.weight.assign(w);
    w.dispose();
    this.norm2 = new LayerNorm(scope.child('norm2'), d, LN_EPS);
    this.linear1 = xavierLinear(scope.child('linear1'), init, d, config.dimFeedforward);
    this.linear2 = xavierLinear(scope.child('linear2'), init, config.dimFeedforward, d);
    this.norm3 = new LayerNorm(scope.child('norm3'), d, LN_EPS);
  }

  /** tgt, queryPos [B, Q, D]; referencePoints [B, Q, L, 2]; memory [B, S, D]; padding [B, S] → [B, Q, D]. */
  apply(tgt: tf.Tensor3D, queryPos: tf.Tensor3D, referencePoints: tf.Tensor4D, memory: tf.Tensor3D, shapes: SpatialShapes, padding: tf.Tensor2D | undefined, ctx: DropoutContext): tf.Tensor3D {
    const p = this.config.dropout;
    const qk = tf.add(tgt, queryPos) as tf.Tensor3D;
    let t = this.norm2.apply(tf.add(tgt, dropout(this.selfAttn.apply(qk, qk, tgt, {}, ctx), p, ctx))) as tf.Tensor3D;
    const cross = this.crossAttn.apply(tf.add(t, queryPos) as tf.Tensor3D, referencePoints, memory, shapes, padding);
    t = this.norm1.apply(tf.add(t, dropout(cross, p, ctx))) as tf.Tensor3D;
    const ffn = this.linear2.apply(dropout(relu(this.linear1.apply(t)), p, ctx));
    return this.norm3.apply(tf.add(t, dropout(ffn, p, ctx))) as tf.Tensor3D;
  }
}

/**
 * `get_valid_ratio` of every level: (valid width / W, valid height / H) from the first row and column of each padding
 * mask, [B][L][2] (x, y). Masks [B, H_l, W_l] bool, true = padding. Constants (no gradient), read on the host.
 */
export function validRatios(masks: readonly tf.Tensor3D[]): number[][][] {
  const perLevel = masks.map((m) => {
    const [b, h, w] = m.shape;
    const data = m.dataSync();
    return Array.from({ length: b }, (_, i) => {
      let validH = 0;
      let validW = 0;
      for (let y = 0; y < h; y++) if (!data[(i * h + y) * w]) validH++;
      for (let x = 0; x < w; x++) if (!data[i * h * w + x]) validW++;
      return [Math.fround(validW / w), Math.fround(validH / h)];
    });
  });
  const b = masks[0]!.shape[0];
  return Array.from({ length: b }, (_, i) => perLevel.map((level) => level[i]!));
}

/**
 * `DeformableTransformerEncoder.get_reference_points`: pixel centres ((x + 0.5) / (valid_x · W_l), (y + 0.5) / (valid_y · H_l))
 * of every level's tokens, then scaled by every level's valid ratio → [B, S, L, 2]. float32 arithmetic as torch.
 */
export function encoderReferencePoints(shapes: SpatialShapes, ratios: number[][][]): tf.Tensor4D {
  const b = ratios.length;
  const levels = shapes.length;
  const s = shapes.reduce((n, [h, w]) => n + h * w, 0);
  const out = new Float32Array(b * s * levels * 2);
  const f = Math.fround;
  for (let i = 0; i < b; i++) {
    let token = 0;
    shapes.forEach(([h, w], lvl) => {
      const [rx, ry] = ratios[i]![lvl]!;
      // torch.linspace(0.5, H − 0.5, H) in float32, divided by (ratio · H) computed in float32.
      const dy = f(ry! * h);
      const dx = f(rx! * w);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++, token++) {
          const refY = f(f(0.5 + y) / dy);
          const refX = f(f(0.5 + x) / dx);
          for (let l = 0; l < levels; l++) {
            const at = ((i * s + token) * levels + l) * 2;
            out[at] = f(refX * ratios[i]![l]![0]!);
            out[at + 1] = f(refY * ratios[i]![l]![1]!);
          }
        }
      }
    });
  }
  return tf.tensor4d(out, [b, s, levels, 2]);
}

export interface DeformableTransformerOutput {
  /** Every decoder layer's output [K, B, Q, D] (`hs`, return_intermediate_dec=True). */
  hs: tf.Tensor4D;
  /** The decoder's reference points [B, Q, 2] (x, y) in [0, 1] (`init_reference_out`; without box refinement every layer's). */
  reference: tf.Tensor3D;
  /** Encoder output [B, S, D]. */
  memory: tf.Tensor3D;
}

/** `DeformableTransformer` (single stage): encoder, decoder, `level_embed`, `reference_points`. */
export class DeformableTransformer {
  readonly levelEmbed: tf.Variable;
  readonly encoderLayers: DeformableTransformerEncoderLayer[] = [];
  readonly decoderLayers: DeformableTransformerDecoderLayer[] = [];
  readonly referencePoints: Linear;

  constructor(
    scope: ParamScope,
    readonly config: DeformableTransformerConfig,
    seed: number | string = 0,
  ) {
    if (config.dModel % config.nHead !== 0) throw new Error(`DeformableTransformer: dModel ${config.dModel} is not divisible by nHead ${config.nHead}`);
    if (!(config.dropout >= 0 && config.dropout < 1)) throw new Error(`DeformableTransformer: dropout must be in [0, 1), got ${config.dropout}`);
    const init = new Initializer(`deformable-transformer:${scope.prefix}:${seed}`);
    // normal_(level_embed)
    this.levelEmbed = scope.add('level_embed', init.normal([config.numFeatureLevels, config.dModel], 1), { layout: 'same', role: 'token' });
    for (let i = 0; i < config.numEncoderLayers; i++) this.encoderLayers.push(new DeformableTransformerEncoderLayer(scope.child('encoder').child('layers').child(i), init, config, `${seed}:enc${i}`));
    for (let i = 0; i < config.numDecoderLayers; i++) this.decoderLayers.push(new DeformableTransformerDecoderLayer(scope.child('decoder').child('layers').child(i), init, config, `${seed}:dec${i}`));
    // xavier_uniform_(reference_points.weight), constant_(bias, 0)
    this.referencePoints = new Linear(scope.child('reference_points'), init, config.dModel, 2, { init: 'xavier_uniform' });
  }

  /**
   * `DeformableTransformer.forward(srcs, masks, pos_embeds, query_embed)`: srcs [B, H_l, W_l, D] per level, masks
   * [B, H_l, W_l] bool (true = padding), pos [B, H_l, W_l, D], queryEmbed [Q, 2D] (query position | target).
   */
  apply(srcs: readonly tf.Tensor4D[], masks: readonly tf.Tensor3D[], pos: readonly tf.Tensor4D[], queryEmbed: tf.Tensor2D, ctx: DropoutContext): DeformableTransformerOutput {
    const { dModel: d, numFeatureLevels: levels } = this.config;
    if (srcs.length !== levels || masks.length !== levels || pos.length !== levels) throw new Error(`DeformableTransformer: built for ${levels} levels, got ${srcs.length} maps, ${masks.length} masks, ${pos.length} position maps`);
    const b = srcs[0]!.shape[0];
    const shapes: Array<[number, number]> = srcs.map((s) => [s.shape[1], s.shape[2]]);
    const ratios = validRatios(masks);
    const flatten = (t: tf.Tensor, c: number) => tf.reshape(t, [b, -1, c]);
    const srcFlatten = tf.concat(srcs.map((s) => flatten(s, d)), 1) as tf.Tensor3D;
    const maskFlatten = tf.concat(masks.map((m) => tf.reshape(m, [b, -1])), 1) as tf.Tensor2D;
    const lvlPos = tf.concat(pos.map((p, l) => tf.add(flatten(p, d), tf.reshape(tf.slice(this.levelEmbed, [l, 0], [1, d]), [1, 1, d]))), 1) as tf.Tensor3D;
    const encRef = encoderReferencePoints(shapes, ratios);
    let memory = srcFlatten;
    for (const layer of this.encoderLayers) memory = layer.apply(memory, lvlPos, encRef, shapes, maskFlatten, ctx);

    const q = queryEmbed.shape[0];
    const queryPos = tf.broadcastTo(tf.slice(queryEmbed, [0, 0], [q, d]), [b, q, d]) as tf.Tensor3D;
    let tgt = tf.broadcastTo(tf.slice(queryEmbed, [0, d], [q, d]), [b, q, d]) as tf.Tensor3D;
    const reference = tf.sigmoid(this.referencePoints.apply(queryPos)) as tf.Tensor3D; // [B, Q, 2]
    // reference_points[:, :, None] * src_valid_ratios[:, None]  → [B, Q, L, 2]
    const ratioTensor = tf.tensor4d(ratios.flat(2), [b, 1, levels, 2]);
    const refInput = tf.mul(tf.expandDims(reference, 2), ratioTensor) as tf.Tensor4D;
    const hs: tf.Tensor3D[] = [];
    for (const layer of this.decoderLayers) {
      tgt = layer.apply(tgt, queryPos, refInput, memory, shapes, maskFlatten, ctx);
      hs.push(tgt);
    }
    return { hs: tf.stack(hs) as tf.Tensor4D, reference, memory };
  }
}

/** `inverse_sigmoid(x, eps=1e-5)` of util/misc.py: log(max(x, eps) / max(1 − x, eps)) after clamping x to [0, 1]. */
export function inverseSigmoid(x: tf.Tensor, eps = 1e-5): tf.Tensor {
  return tf.tidy(() => {
    const c = tf.clipByValue(x, 0, 1);
    return tf.log(tf.div(tf.maximum(c, eps), tf.maximum(tf.sub(1, c), eps)));
  });
}

export interface DeformableDetrConfig {
  /** Channels of the backbone levels handed to `apply` (ResNet-50 C3..C5: 512, 1024, 2048). */
  backboneChannels: readonly number[];
  /** C: sigmoid classes (DETReg pretraining: 91, main.py's `dataset_file` default 'coco' gives 90 + 1). */
  numClasses: number;
  /** Q, num_queries (300). */
  numQueries: number;
  /** aux_loss (on): also return the earlier decoder layers' predictions. */
  auxLoss: boolean;
  /** GroupNorm groups of the input projections (official: 32). */
  groupNormGroups?: number;
  transformer: DeformableTransformerConfig;
}

export interface DeformableDetrOutput extends DetrOutputs {
  /** Every decoder layer's output [K, B, Q, D] (DETReg's feature_embed reads the last). */
  hs: tf.Tensor4D;
}

/**
 * `DeformableDETR` on given backbone levels (single stage, no box refinement): input projections with the extra
 * stride-2 levels, sine positions per level, the transformer, and the shared class / box heads on every decoder layer.
 * Initialisation as the official: class bias −log((1 − 0.01) / 0.01) (focal prior 0.01), the box MLP's last layer zero
 * with bias (0, 0, −2, −2), input projections xavier_uniform with zero bias, GroupNorm 1 / 0, query_embed N(0, 1).
 */
export class DeformableDetr {
  readonly transformer: DeformableTransformer;
  readonly classEmbed: Linear;
  readonly bboxEmbed: DetrMlp;
  readonly queryEmbed: tf.Variable;
  readonly inputProj: Array<{ conv: Conv2d; norm: GroupNorm }> = [];

  constructor(
    scope: ParamScope,
    readonly config: DeformableDetrConfig,
    seed: number | string = 0,
  ) {
    const t = config.transformer;
    const d = t.dModel;
    if (d % 2 !== 0) throw new Error(`DeformableDetr: hidden width ${d} must be even (half of it encodes y, half x)`);
    const nb = config.backboneChannels.length;
    if (nb < 1 || nb > t.numFeatureLevels) throw new Error(`DeformableDetr: ${nb} backbone levels for ${t.numFeatureLevels} feature levels`);
    const init = new Initializer(`deformable-detr:${scope.prefix}:${seed}`);
    this.transformer = new DeformableTransformer(scope.child('transformer'), t, seed);
    this.classEmbed = new Linear(scope.child('class_embed').child(0), init, d, config.numClasses);
    const prior = Math.fround(-Math.log((1 - 0.01) / 0.01));
    tf.tidy(() => this.classEmbed.bias!.assign(tf.fill([config.numClasses], prior)));
    this.bboxEmbed = new DetrMlp(scope.child('bbox_embed').child(0), init, d, d, 4, 3);
    const last = this.bboxEmbed.layers[2]!;
    tf.tidy(() => {
      last.weight.assign(tf.zerosLike(last.weight));
      last.bias!.assign(tf.tensor1d([0, 0, -2, -2]));
    });
    this.queryEmbed = scope.child('query_embed').add('weight', init.normal([config.numQueries, 2 * d], 1), { layout: 'same', role: 'token' });
    const groups = config.groupNormGroups ?? 32;
    let inChannels = config.backboneChannels[nb - 1]!;
    for (let l = 0; l < t.numFeatureLevels; l++) {
      const s = scope.child('input_proj').child(l);
      const extra = l >= nb;
      const conv = new Conv2d(s.child(0), init, extra ? { inChannels, outChannels: d, kernelSize: 3, stride: 2, padding: 1, bias: true, init: 'xavier_uniform' } : { inChannels: config.backboneChannels[l]!, outChannels: d, kernelSize: 1, padding: 0, bias: true, init: 'xavier_uniform' });
      if (extra) inChannels = d;
      this.inputProj.push({ conv, norm: new GroupNorm(s.child(1), d, groups) });
    }
  }

  /**
   * `DeformableDETR.forward_samples` past the backbone. features: the backbone levels [B, H_l, W_l, C_l] (C3..C5),
   * imageMask [B, H, W] bool (true = padding; NestedTensor.mask), brought to every level by nearest interpolation.
   */
  apply(features: readonly tf.Tensor4D[], imageMask: tf.Tensor3D, ctx: DropoutContext): DeformableDetrOutput {
    const t = this.config.transformer;
    const nb = this.config.backboneChannels.length;
    if (features.length !== nb) throw new Error(`DeformableDetr: expected ${nb} backbone levels, got ${features.length}`);
    const srcs: tf.Tensor4D[] = [];
    for (let l = 0; l < t.numFeatureLevels; l++) {
      const input = l < nb ? features[l]! : l === nb ? features[nb - 1]! : srcs[l - 1]!;
      const { conv, norm } = this.inputProj[l]!;
      srcs.push(norm.apply(conv.apply(input)));
    }
    const masks = srcs.map((s) => maskToFeatureSize(imageMask, s.shape[1], s.shape[2]));
    const pos = masks.map((m) => positionEmbeddingSine(m, { numPosFeats: t.dModel / 2, normalize: true, offset: -0.5 }));
    const { hs, reference } = this.transformer.apply(srcs, masks, pos, this.queryEmbed as tf.Tensor2D, ctx);
    const logits = this.classEmbed.apply(hs) as tf.Tensor4D; // [K, B, Q, C]
    const delta = this.bboxEmbed.apply(hs) as tf.Tensor4D; // [K, B, Q, 4]
    // tmp[..., :2] += inverse_sigmoid(reference)  (the same reference on every layer without box refinement)
    const [k, b, q] = hs.shape;
    const shift = tf.concat([inverseSigmoid(reference), tf.zeros([b, q, 2])], -1);
    const boxes = tf.sigmoid(tf.add(delta, tf.expandDims(shift, 0))) as tf.Tensor4D;
    const at = (x: tf.Tensor4D, l: number): tf.Tensor3D => tf.squeeze(tf.slice(x, [l, 0, 0, 0], [1, -1, -1, -1]), [0]) as tf.Tensor3D;
    const out: DeformableDetrOutput = { predLogits: at(logits, k - 1), predBoxes: at(boxes, k - 1), hs };
    if (this.config.auxLoss) out.auxOutputs = Array.from({ length: k - 1 }, (_, l) => ({ predLogits: at(logits, l), predBoxes: at(boxes, l) }));
    return out;
  }
}
