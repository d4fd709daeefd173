/**
 * FCOS losses over a batch of flattened locations:
 *  - classification: sigmoid focal loss (alpha 0.25, gamma 2; RetinaNet) summed over every
 *    location and class, divided by the number of positive locations (at least 1);
 *  - box: GIoU loss of predicted vs target ltrb at positive locations, weighted by the target
 *    centerness and divided by the sum of those weights (FCOS-imprv), so boxes of locations near
 *    the object's centre, which the detector will keep, count most;
 *  - centerness: binary cross-entropy with logits at positive locations, mean over positives.
 * GIoU is computed in ltrb form: both boxes share the location, so the intersection is
 * (min l + min r) x (min t + min b) and the enclosing box (max l + max r) x (max t + max b).
 */
import { tf } from '../../../core/tf.js';

export interface BatchTargets {
  /** [B, N] class per location, -1 = background. */
  labels: tf.Tensor2D;
  /** [B, N, 4] target ltrb in stride units (anything at background locations). */
  ltrb: tf.Tensor3D;
  /** [B, N] target centerness (0 at background). */
  centerness: tf.Tensor2D;
}

export interface FocalOptions {
  alpha: number;
  gamma: number;
}

export interface FcosLosses {
  total: tf.Scalar;
  classification: tf.Scalar;
  box: tf.Scalar;
  centerness: tf.Scalar;
}

/** Elementwise binary cross-entropy with logits, stable for large |x|: max(x,0) - x t + log(1 + e^-|x|). */
export function bceWithLogits(logits: tf.Tensor, targets: tf.Tensor): tf.Tensor {
  return tf.add(tf.sub(tf.relu(logits), tf.mul(logits, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(logits)))));
}

/** Elementwise sigmoid focal loss: alpha_t (1 - p_t)^gamma BCE(x, t). */
export function sigmoidFocalLoss(logits: tf.Tensor, targets: tf.Tensor, o: FocalOptions): tf.Tensor {
  const p = tf.sigmoid(logits);
  const pt = tf.add(tf.mul(p, targets), tf.mul(tf.sub(1, p), tf.sub(1, targets)));
  const alphaT = tf.add(tf.mul(targets, o.alpha), tf.mul(tf.sub(1, targets), 1 - o.alpha));
  return tf.mul(tf.mul(alphaT, tf.pow(tf.sub(1, pt), o.gamma)), bceWithLogits(logits, targets));
}

/** 1 - GIoU of two boxes given as ltrb distances from the same point, over the last axis. */
export function giouLossLtrb(pred: tf.Tensor, target: tf.Tensor): tf.Tensor {
  const [pl, pt, pr, pb] = tf.unstack(pred, -1);
  const [tl, tt, tr, tb] = tf.unstack(target, -1);
  const predArea = tf.mul(tf.add(pl!, pr!), tf.add(pt!, pb!));
  const targetArea = tf.mul(tf.add(tl!, tr!), tf.add(tt!, tb!));
  const inter = tf.mul(tf.add(tf.minimum(pl!, tl!), tf.minimum(pr!, tr!)), tf.add(tf.minimum(pt!, tt!), tf.minimum(pb!, tb!)));
  const union = tf.sub(tf.add(predArea, targetArea), inter);
  const enclosing = tf.mul(tf.add(tf.maximum(pl!, tl!), tf.maximum(pr!, tr!)), tf.add(tf.maximum(pt!, tt!), tf.maximum(pb!, tb!)));
  // eps only guards 0/0; positives always have a target of positive area, so union > 0 there.
  const iou = tf.div(inter, tf.add(union, 1e-7));
  const giou = tf.sub(iou, tf.div(tf.sub(enclosing, union), tf.add(enclosing, 1e-7)));
  return tf.sub(1, giou);
}

export function fcosLosses(out: { classLogits: tf.Tensor3D; ltrb: tf.Tensor3D; centernessLogits: tf.Tensor2D }, t: BatchTargets, focal: FocalOptions): FcosLosses {
  const numClasses = out.classLogits.shape[2];
  const positive = tf.greaterEqual(t.labels, 0);
  const posF = tf.cast(positive, 'float32');
  const numPositive = tf.maximum(tf.sum(posF), 1);
  // labels == class index per class (not tf.oneHot, which refuses depth 1, i.e. single-class datasets);
  // background (-1) matches no class, so its class target is all zeros.
  const classTargets = tf.cast(tf.equal(tf.expandDims(tf.cast(t.labels, 'int32'), -1), tf.range(0, numClasses, 1, 'int32')), 'float32');
  const classification = tf.div(tf.sum(sigmoidFocalLoss(out.classLogits, classTargets, focal)), numPositive) as tf.Scalar;

  // Background targets are replaced by a unit box so GIoU stays finite there (their weight is 0).
  const safeTarget = tf.where(tf.expandDims(positive, -1).tile([1, 1, 4]), t.ltrb, tf.onesLike(t.ltrb));
  const weights = tf.mul(t.centerness, posF);
  const box = tf.div(tf.sum(tf.mul(giouLossLtrb(out.ltrb, safeTarget), weights)), tf.maximum(tf.sum(weights), 1e-6)) as tf.Scalar;

  const centerness = tf.div(tf.sum(tf.mul(bceWithLogits(out.centernessLogits, t.centerness), posF)), numPositive) as tf.Scalar;
  return { total: tf.addN([classification, box, centerness]) as tf.Scalar, classification, box, centerness };
}
