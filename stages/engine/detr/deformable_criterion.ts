/**
 * Deformable DETR's matcher and set criterion (fundamentalvision/Deformable-DETR@11169a6 models/matcher.py and
 * models/deformable_detr.py `SetCriterion`; the same in amirbar/DETReg@a4b6363 models/def_matcher.py and
 * models/deformable_detr.py, models/segmentation.py `sigmoid_focal_loss`): sigmoid classes, no no-object logit.
 *
 * Matching cost of query q (image b) and target j of that image (p = sigmoid(logits), α = 0.25, γ = 2, fixed in the
 * matcher):
 *   C[q, j] = λ_bbox ‖b̂_q − b_j‖₁ + λ_class (pos_q(c_j) − neg_q(c_j)) − λ_giou GIoU(b̂_q, b_j)
 *   pos = α (1 − p)^γ (−log(p + 1e-8)),   neg = (1 − α) p^γ (−log(1 − p + 1e-8))
 * Losses after the matching σ̂ of a layer (N_boxes = max(Σ_b T_b, 1)):
 *   loss_ce   = Q · Σ_{b,c} mean_q FL(x_bqc, y_bqc) / N_boxes      y = one-hot of the matched label, 0 for unmatched queries
 *   FL(x, y)  = α_t (1 − p_t)^γ BCE(x, y),  p_t = p y + (1 − p)(1 − y),  α_t = α y + (1 − α)(1 − y)   (focal_alpha, γ = 2)
 *   loss_bbox = Σ_matched ‖b̂ − b‖₁ / N_boxes,   loss_giou = Σ_matched (1 − GIoU) / N_boxes     (criterion.ts lossBoxes)
 * With auxiliary outputs every earlier decoder layer is matched on its own and adds `_i` copies (the loop is DETR's,
 * criterion.ts `setCriterionOverLayers`; logged: the last layer's class_error);
 *   total = Σ_k weight_dict[k] loss_k   (DETReg: loss_ce 2, loss_bbox 5, loss_giou 2 and the same for every `_i`).
 *
 * Shape legend: B images, Q queries, C classes, T = Σ_b T_b targets.
 */
import * as tf from '@tensorflow/tfjs';
import { setCriterionOverLayers, type DetrOutputs, type SetCriterionResult } from './criterion.js';
import { assignPerImage, validateTargets, weightedCost, type DetrTarget, type MatchIndices, type MatcherCosts } from './matcher.js';

/** The α and γ that def_matcher.py hard-codes in the class cost. */
const MATCHER_ALPHA = 0.25;
const MATCHER_GAMMA = 2;

/** The focal-cost matrix before it is split per image: [B·Q, T]. predLogits [B, Q, C], predBoxes [B, Q, 4]. */
export function focalMatcherCostMatrix(predLogits: tf.Tensor3D, predBoxes: tf.Tensor3D, targets: readonly DetrTarget[], costs: MatcherCosts): tf.Tensor2D {
  const [b, q, c] = predLogits.shape;
  const labels = targets.flatMap((t) => [...t.labels]);
  const boxes = targets.flatMap((t) => t.boxes.map((x) => [...x]));
  return tf.tidy(() => {
    if (labels.length === 0) return tf.zeros([b * q, 0]) as tf.Tensor2D;
    const prob = tf.sigmoid(tf.reshape(predLogits, [b * q, c]));
    const neg = tf.mul(tf.mul(tf.pow(prob, MATCHER_GAMMA), 1 - MATCHER_ALPHA), tf.neg(tf.log(tf.add(tf.sub(1, prob), 1e-8))));
    const pos = tf.mul(tf.mul(tf.pow(tf.sub(1, prob), MATCHER_GAMMA), MATCHER_ALPHA), tf.neg(tf.log(tf.add(prob, 1e-8))));
    const ids = tf.tensor1d(labels, 'int32');
    const costClass = tf.sub(tf.gather(pos, ids, 1), tf.gather(neg, ids, 1));
    return weightedCost(costClass, predBoxes, boxes, costs);
  });
}

/** `HungarianMatcher.forward` of def_matcher.py: one assignment per image, query indices ascending. No gradient. */
export function focalHungarianMatcher(predLogits: tf.Tensor3D, predBoxes: tf.Tensor3D, targets: readonly DetrTarget[], costs: MatcherCosts): MatchIndices[] {
  const [b, q, c] = predLogits.shape;
  if (costs.costClass === 0 && costs.costBbox === 0 && costs.costGiou === 0) throw new Error('HungarianMatcher: all costs cant be 0');
  if (predBoxes.shape[0] !== b || predBoxes.shape[1] !== q || predBoxes.shape[2] !== 4) throw new Error(`focalHungarianMatcher: predBoxes must be [${b}, ${q}, 4], got [${predBoxes.shape}]`);
  validateTargets(targets, c, b);
  return assignPerImage(focalMatcherCostMatrix(predLogits, predBoxes, targets, costs), q, targets);
}

/**
 * `sigmoid_focal_loss(inputs, targets, num_boxes, alpha, gamma)`: loss.mean(1).sum() / num_boxes over [B, Q, C]
 * (the mean over queries, summed over images and classes). BCE with logits as torch: max(x, 0) − x y + log(1 + e^−|x|).
 */
export function sigmoidFocalLoss(logits: tf.Tensor3D, targets: tf.Tensor3D, numBoxes: number, alpha = 0.25, gamma = 2): tf.Scalar {
  return tf.tidy(() => {
    const prob = tf.sigmoid(logits);
    const ce = tf.add(tf.sub(tf.relu(logits), tf.mul(logits, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(logits)))));
    const pt = tf.add(tf.mul(prob, targets), tf.mul(tf.sub(1, prob), tf.sub(1, targets)));
    const modulator = gamma === 2 ? tf.square(tf.sub(1, pt)) : tf.pow(tf.sub(1, pt), gamma);
    let loss = tf.mul(ce, modulator);
    if (alpha >= 0) loss = tf.mul(tf.add(tf.mul(targets, alpha), tf.mul(tf.sub(1, targets), 1 - alpha)), loss);
    return tf.div(tf.sum(tf.mean(loss, 1)), numBoxes) as tf.Scalar;
  });
}

export interface DeformableCriterionConfig {
  /** C: the logits' classes (labels are in [0, C)). */
  numClasses: number;
  /** focal_alpha (0.25). */
  focalAlpha: number;
  /** set_cost_class / set_cost_bbox / set_cost_giou (DETReg deformable defaults: 2, 5, 2). */
  costs: MatcherCosts;
  /** cls_loss_coef (2), bbox_loss_coef (5), giou_loss_coef (2). */
  weights: { ce: number; bbox: number; giou: number };
}

/** DETReg's defaults (util/default_args.py, model deformable_detr) for `numClasses` classes. */
export function deformableCriterionDefaults(numClasses: number): DeformableCriterionConfig {
  return { numClasses, focalAlpha: 0.25, costs: { costClass: 2, costBbox: 5, costGiou: 2 }, weights: { ce: 2, bbox: 5, giou: 2 } };
}

/** The same fields as DETR's (`logs`: the last layer's class_error only: cardinality is not computed). */
export type DeformableCriterionResult = SetCriterionResult;

/** `loss_labels`: the focal loss against the one-hot of the matched labels (unmatched: all zeros), × Q. */
function lossLabels(logits: tf.Tensor3D, targets: readonly DetrTarget[], match: MatchIndices[], numBoxes: number, alpha: number): tf.Scalar {
  const [b, q, c] = logits.shape;
  const onehot = new Float32Array(b * q * c);
  match.forEach((m, i) => m.src.forEach((s, j) => (onehot[(i * q + s) * c + targets[i]!.labels[m.tgt[j]!]!] = 1)));
  return tf.tidy(() => tf.mul(sigmoidFocalLoss(logits, tf.tensor3d(onehot, [b, q, c]), numBoxes, alpha, 2), q) as tf.Scalar);
}

/**
 * `SetCriterion.forward` with losses ['labels', 'boxes'] (cardinality is a log only and not computed), plus the
 * weighted sum. Call inside the function handed to `namedGradients`.
 */
export function deformableSetCriterion(outputs: DetrOutputs, targets: readonly DetrTarget[], config: DeformableCriterionConfig): DeformableCriterionResult {
  const c = outputs.predLogits.shape[2];
  if (c !== config.numClasses) throw new Error(`deformableSetCriterion: logits have ${c} classes, expected ${config.numClasses}`);
  return setCriterionOverLayers(outputs, targets, config.weights, {
    match: (pred) => focalHungarianMatcher(pred.predLogits, pred.predBoxes, targets, config.costs),
    lossLabels: (logits, match, numBoxes) => lossLabels(logits, targets, match, numBoxes, config.focalAlpha),
  });
}
