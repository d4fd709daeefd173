/**
 * Pair DETR: Iranmanesh, Chen, Lien, "Pair DETR: Contrastive Learning Speeds Up DETR Training", arXiv 2210.16476
 * (https://arxiv.org/abs/2210.16476). No official code exists (mts-ai/pairdetr is an unrelated face-body detector);
 * docs/methods/pairdetr.md says which parts below are read from the paper and which are inferred.
 *
 * A box is a pair of keypoints, its centre and its top-left corner, found by two decoders on one encoder memory
 * [abstract; Fig. 1]; both decoders' output queries are classified jointly and associated in pairs, the association
 * trained with a contrastive loss and no extra architecture [abstract]:
 *
 *   memory = Enc(input_proj(f) + pos)                                   DETR's encoder, shared
 *   h^c = Dec_c(q^c, memory),  h^t = Dec_t(q^t, memory)                 [L, B, Q, D]  centre / top-left decoder
 *   logits^c = cls(h^c),  logits^t = cls(h^t)                          [L, B, Q, C + 1]  one classifier ("joint")
 *   b^c = σ(MLP_c(h^c)) = (cx, cy, w, h)                               the centre decoder's box, DETR's form
 *   k^t = σ(MLP_t(h^t)) = (x0, y0, w, h)                               the top-left decoder's corner and extent,
 *   b^t = (x0 + w/2, y0 + h/2, w, h)                                    as a (cx, cy, w, h) box for the set losses
 *
 * Training: each decoder is matched and scored on its own by DETR's Hungarian matcher and SetCriterion (auxiliary
 * layers included), and the two queries matched to the same object form the positive pair of an InfoNCE loss whose
 * negatives are the other decoder's other queries of that image:
 *   z = h_L / ‖h_L‖ (last decoder layer);  object j of image b:  i = σ^c(j),  k = σ^t(j)
 *   ℓ^{c→t}_j = −log softmax_q(z^c_i · z^t_q / τ)[k],   ℓ^{t→c}_j = −log softmax_q(z^t_k · z^c_q / τ)[i]
 *   L_pair = Σ_j ½ (ℓ^{c→t}_j + ℓ^{t→c}_j) / max(N, 1)                N objects matched in both decoders
 *   L = L_set(c) + L_set(t) + λ_pair · L_pair
 * Inference: centre query i takes the top-left query most similar to it, t(i) = argmax_q z^c_i · z^t_q; the class
 * probabilities are ½ (softmax(logits^c_i) + softmax(logits^t_{t(i)})); the box is the keypoint pair:
 *   (x0, y0, x1, y1) = (x0_t, y0_t, max(2 cx_i − x0_t, x0_t), max(2 cy_i − y0_t, y0_t)).
 *
 * Names: the centre branch is the engine's `DetrHead` under DETR's own names (`transformer.*`, `class_embed`,
 * `bbox_embed`, `query_embed`, `input_proj`), built with the same seed as the `detr` task's, so both start from the
 * same weights; the top-left branch adds `decoder_tl.*`, `bbox_embed_tl.*` and `query_embed_tl.weight`.
 *
 * Shape legend: B images, H×W feature map of Cb channels, D hidden width, Q queries per decoder, C classes,
 * L decoder layers, N objects matched in both decoders.
 */
import * as tf from '@tensorflow/tfjs';
import type { DropoutContext } from '../../engine/detr/attention.js';
import { setCriterion, type DetrOutputs, type DetrPredictions, type SetCriterionConfig } from '../../engine/detr/criterion.js';
import { DetrHead, DetrMlp, type DetrHeadConfig } from '../../engine/detr/detr.js';
import type { DetrTarget, MatchIndices } from '../../engine/detr/matcher.js';
import { positionEmbeddingSine } from '../../engine/detr/position_encoding.js';
import { TransformerDecoder } from '../../engine/detr/transformer.js';
import { Initializer, type ParamScope } from '../../engine/params.js';
import { l2Norm } from '../../engine/ops/norm.js';
import type { Xyxy } from '../detection/boxes.js';
import type { Detection } from '../detection/postprocess.js';

export interface PairDetrOutputs {
  /** The centre decoder: DETR's predictions, boxes (cx, cy, w, h). */
  center: DetrOutputs;
  /** The top-left decoder: its (x0, y0, w, h) as (cx, cy, w, h) boxes, for the matcher and SetCriterion. */
  topLeft: DetrOutputs;
  /** The top-left decoder's last layer as it predicts it: (x0, y0, w, h) [B, Q, 4]. */
  corners: tf.Tensor3D;
  /** Decoder outputs [L, B, Q, D] of the centre and the top-left decoder. */
  hsCenter: tf.Tensor4D;
  hsTopLeft: tf.Tensor4D;
}

export class PairDetrHead {
  /** The centre branch with the shared encoder, input projection and classifier: DETR itself. */
  readonly detr: DetrHead;
  readonly decoderTl: TransformerDecoder;
  readonly bboxEmbedTl: DetrMlp;
  readonly queryEmbedTl: tf.Variable;

  constructor(
    scope: ParamScope,
    readonly config: DetrHeadConfig,
    seed: number | string = 0,
  ) {
    this.detr = new DetrHead(scope, config, seed);
    const d = config.transformer.dModel;
    const init = new Initializer(`pair-detr-top-left:${scope.prefix}:${seed}`);
    this.decoderTl = new TransformerDecoder(scope.child('decoder_tl'), init, config.transformer);
    this.bboxEmbedTl = new DetrMlp(scope.child('bbox_embed_tl'), init, d, d, 4, 3);
    this.queryEmbedTl = scope.child('query_embed_tl').add('weight', init.normal([config.numQueries, d], 1), { layout: 'same', role: 'token' });
  }

  /** features [B, H, W, Cb], mask [B, H, W] bool (true = padding) at the feature map's size. */
  apply(features: tf.Tensor4D, mask: tf.Tensor3D, ctx: DropoutContext): PairDetrOutputs {
    const { transformer, inputProj, classEmbed, bboxEmbed, queryEmbed } = this.detr;
    const d = this.config.transformer.dModel;
    // models/transformer.py Transformer.forward, with a second decoder reading the same memory.
    const src = inputProj.apply(features) as tf.Tensor4D;
    const [b, h, w] = src.shape;
    const pos = tf.reshape(positionEmbeddingSine(mask, { numPosFeats: d / 2, normalize: true }), [b, h * w, d]) as tf.Tensor3D;
    const padding = tf.reshape(mask, [b, h * w]) as tf.Tensor2D;
    const memory = transformer.encoder.apply(tf.reshape(src, [b, h * w, d]) as tf.Tensor3D, { srcKeyPaddingMask: padding, pos }, ctx);
    const tgt = tf.zeros([b, this.config.numQueries, d]) as tf.Tensor3D;
    const hsCenter = transformer.decoder.apply(tgt, memory, { memoryKeyPaddingMask: padding, pos, queryPos: queryEmbed }, ctx); // [L, B, Q, D]
    const hsTopLeft = this.decoderTl.apply(tgt, memory, { memoryKeyPaddingMask: padding, pos, queryPos: this.queryEmbedTl }, ctx); // [L, B, Q, D]
    const boxesC = tf.sigmoid(bboxEmbed.apply(hsCenter)) as tf.Tensor4D; // (cx, cy, w, h)
    const cornersAll = tf.sigmoid(this.bboxEmbedTl.apply(hsTopLeft)) as tf.Tensor4D; // (x0, y0, w, h)
    const [x0y0, wh] = tf.split(cornersAll, [2, 2], -1);
    const boxesT = tf.concat([tf.add(x0y0, tf.mul(wh, 0.5)), wh], -1) as tf.Tensor4D;
    const center = this.layers(classEmbed.apply(hsCenter) as tf.Tensor4D, boxesC);
    const topLeft = this.layers(classEmbed.apply(hsTopLeft) as tf.Tensor4D, boxesT);
    return { center, topLeft, corners: lastLayer(cornersAll), hsCenter, hsTopLeft };
  }

  private layers(logits: tf.Tensor4D, boxes: tf.Tensor4D): DetrOutputs {
    const n = logits.shape[0];
    const at = (t: tf.Tensor4D, l: number): tf.Tensor3D => tf.squeeze(tf.slice(t, [l, 0, 0, 0], [1, -1, -1, -1]), [0]) as tf.Tensor3D;
    const out: DetrOutputs = { predLogits: at(logits, n - 1), predBoxes: at(boxes, n - 1) };
    if (this.config.auxLoss) out.auxOutputs = Array.from({ length: n - 1 }, (_, l): DetrPredictions => ({ predLogits: at(logits, l), predBoxes: at(boxes, l) }));
    return out;
  }
}

const lastLayer = (t: tf.Tensor4D): tf.Tensor3D => tf.squeeze(tf.slice(t, [t.shape[0] - 1, 0, 0, 0], [1, -1, -1, -1]), [0]) as tf.Tensor3D;

/** z = h / max(‖h‖, 1e-12) along the last axis (F.normalize). */
export function l2normalize<T extends tf.Tensor>(h: T): T {
  return tf.tidy(() => tf.div(h, tf.maximum(l2Norm(h, -1, true), 1e-12)) as T);
}

/** The (image, centre query, top-left query) of every object matched in both decoders, by image then object. */
export function positivePairs(center: readonly MatchIndices[], topLeft: readonly MatchIndices[]): Array<{ image: number; i: number; k: number }> {
  return center.flatMap((mc, image) => {
    const mt = topLeft[image]!;
    const queryOf = new Map(mt.tgt.map((j, n) => [j, mt.src[n]!]));
    return mc.tgt
      .map((j, n) => ({ j, i: mc.src[n]! }))
      .filter(({ j }) => queryOf.has(j))
      .sort((a, b) => a.j - b.j)
      .map(({ j, i }) => ({ image, i, k: queryOf.get(j)! }));
  });
}

/**
 * L_pair (see the header): hC, hT [B, Q, D] (the last decoder layer of each decoder), pairs from `positivePairs`.
 * Zero (no gradient) when no object is matched in both decoders.
 */
export function pairAssociationLoss(hC: tf.Tensor3D, hT: tf.Tensor3D, pairs: ReadonlyArray<{ image: number; i: number; k: number }>, temperature: number): tf.Scalar {
  if (!(temperature > 0)) throw new Error(`pairAssociationLoss: temperature must be > 0, got ${temperature}`);
  if (pairs.length === 0) return tf.scalar(0);
  const [b, q] = hC.shape;
  return tf.tidy(() => {
    const sim = tf.div(tf.matMul(l2normalize(hC), l2normalize(hT), false, true), temperature); // [B, Q(c), Q(t)]
    const logCT = tf.reshape(tf.logSoftmax(sim, -1), [b * q * q]); // softmax over the top-left queries
    const logTC = tf.reshape(tf.logSoftmax(tf.transpose(sim, [0, 2, 1]), -1), [b * q * q]); // over the centre queries
    const ct = tf.gather(logCT, tf.tensor1d(pairs.map(({ image, i, k }) => (image * q + i) * q + k), 'int32'));
    const tc = tf.gather(logTC, tf.tensor1d(pairs.map(({ image, i, k }) => (image * q + k) * q + i), 'int32'));
    return tf.div(tf.mul(tf.add(tf.sum(ct), tf.sum(tc)), -0.5), pairs.length) as tf.Scalar;
  });
}

export interface PairDetrCriterionConfig extends SetCriterionConfig {
  /** λ_pair, the weight of L_pair. */
  pairLossCoef: number;
  /** τ of L_pair. */
  temperature: number;
}

export interface PairDetrCriterionResult {
  total: tf.Scalar;
  /** The centre decoder's SetCriterion terms (`loss_ce`, `loss_bbox_0`, ...), the top-left decoder's (`tl.loss_ce`, ...) and `loss_pair`. */
  losses: Record<string, tf.Scalar>;
  /** The weighted SetCriterion sums of the two decoders. */
  centerTotal: tf.Scalar;
  topLeftTotal: tf.Scalar;
  /** The objects' positive pairs (last layers' matchings). */
  pairs: Array<{ image: number; i: number; k: number }>;
}

/** L = L_set(c) + L_set(t) + λ_pair · L_pair; call inside the function handed to `namedGradients`. */
export function pairDetrCriterion(out: PairDetrOutputs, targets: readonly DetrTarget[], config: PairDetrCriterionConfig): PairDetrCriterionResult {
  const c = setCriterion(out.center, targets, config);
  const t = setCriterion(out.topLeft, targets, config);
  const pairs = positivePairs(c.indices[0]!, t.indices[0]!);
  const pair = tf.tidy(() => pairAssociationLoss(lastLayer(out.hsCenter), lastLayer(out.hsTopLeft), pairs, config.temperature));
  const total = tf.tidy(() => tf.addN([c.total, t.total, tf.mul(pair, config.pairLossCoef)]) as tf.Scalar);
  const losses: Record<string, tf.Scalar> = { ...c.losses, ...Object.fromEntries(Object.entries(t.losses).map(([k, v]) => [`tl.${k}`, v])), loss_pair: pair };
  return { total, losses, centerTotal: c.total, topLeftTotal: t.total, pairs };
}

/** What inference reads from the last layers, as plain arrays. */
export interface PairDetrInferenceInput {
  /** [B, Q, C + 1] logits of the centre and the top-left decoder. */
  logitsC: Float32Array;
  logitsT: Float32Array;
  /** [B, Q, 4] the centre decoder's (cx, cy, w, h) and the top-left decoder's (x0, y0, w, h). */
  boxesC: Float32Array;
  corners: Float32Array;
  /** [B, Q, Q] z^c · z^t. */
  similarity: Float32Array;
}

/** The last layer's arrays for `pairDetrPostprocess` (owns nothing it returns). */
export function pairDetrInferenceArrays(out: PairDetrOutputs): PairDetrInferenceInput {
  const similarity = tf.tidy(() => tf.matMul(l2normalize(lastLayer(out.hsCenter)), l2normalize(lastLayer(out.hsTopLeft)), false, true));
  const read = (t: tf.Tensor) => t.dataSync() as Float32Array;
  const r = { logitsC: read(out.center.predLogits), logitsT: read(out.topLeft.predLogits), boxesC: read(out.center.predBoxes), corners: read(out.corners), similarity: read(similarity) };
  similarity.dispose();
  return r;
}

/** Inference (header): one detection per centre query, with its top-left partner `partner`. */
export function pairDetrPostprocess(x: PairDetrInferenceInput, queries: number, classes: number, size: number): Array<Array<Detection & { partner: number }>> {
  const k = classes + 1;
  const images = x.logitsC.length / (queries * k);
  const softmax = (logits: Float32Array, base: number): number[] => {
    let max = -Infinity;
    for (let c = 0; c < k; c++) max = Math.max(max, logits[base + c]!);
    const e = Array.from({ length: k }, (_, c) => Math.exp(logits[base + c]! - max));
    const sum = e.reduce((a, v) => a + v, 0);
    return e.map((v) => v / sum);
  };
  return Array.from({ length: images }, (_, b) =>
    Array.from({ length: queries }, (_, i) => {
      let partner = 0;
      for (let q = 1; q < queries; q++) if (x.similarity[(b * queries + i) * queries + q]! > x.similarity[(b * queries + i) * queries + partner]!) partner = q;
      const pc = softmax(x.logitsC, (b * queries + i) * k);
      const pt = softmax(x.logitsT, (b * queries + partner) * k);
      const joint = pc.map((p, c) => (p + pt[c]!) / 2);
      let label = 0;
      for (let c = 1; c < classes; c++) if (joint[c]! > joint[label]!) label = c;
      const [cx, cy] = x.boxesC.subarray((b * queries + i) * 4, (b * queries + i) * 4 + 2);
      const [x0, y0] = x.corners.subarray((b * queries + partner) * 4, (b * queries + partner) * 4 + 2);
      const box: Xyxy = [x0! * size, y0! * size, Math.max(2 * cx! - x0!, x0!) * size, Math.max(2 * cy! - y0!, y0!) * size];
      return { box, label, score: joint[label]!, partner };
    }),
  );
}
