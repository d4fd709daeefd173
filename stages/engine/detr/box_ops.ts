/**
 * Box utilities of DETR (facebookresearch/detr@29901c5, util/box_ops.py), as differentiable tfjs ops.
 *
 * Boxes are `[..., 4]`: (cx, cy, w, h) or (x0, y0, x1, y1), normalised to [0, 1] in DETR.
 * `generalizedBoxIou` is the pairwise [N, M] matrix the matcher uses; `generalizedBoxIouPaired` is its diagonal
 * for N aligned pairs (what `SetCriterion.loss_boxes` takes with `torch.diag`), computed without the N x N matrix
 * (same value and same gradient: the off-diagonal entries do not reach the loss).
 *
 * GIoU (Rezatofighi et al. 2019): GIoU = IoU − (|C| − |A ∪ B|) / |C|, C the smallest enclosing box.
 */
import * as tf from '@tensorflow/tfjs';

/** (cx, cy, w, h) → (x0, y0, x1, y1) (`box_cxcywh_to_xyxy`). */
export function boxCxcywhToXyxy(boxes: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const [cx, cy, w, h] = tf.split(boxes, 4, -1) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    const hw = tf.mul(w, 0.5);
    const hh = tf.mul(h, 0.5);
    return tf.concat([tf.sub(cx, hw), tf.sub(cy, hh), tf.add(cx, hw), tf.add(cy, hh)], -1);
  });
}

/** (x0, y0, x1, y1) → (cx, cy, w, h) (`box_xyxy_to_cxcywh`). */
export function boxXyxyToCxcywh(boxes: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const [x0, y0, x1, y1] = tf.split(boxes, 4, -1) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    return tf.concat([tf.div(tf.add(x0, x1), 2), tf.div(tf.add(y0, y1), 2), tf.sub(x1, x0), tf.sub(y1, y0)], -1);
  });
}

/** (x1 − x0)(y1 − y0) of [..., 4] xyxy boxes → [...]. */
function boxArea(boxes: tf.Tensor): tf.Tensor {
  const [x0, y0, x1, y1] = tf.unstack(boxes, -1) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
  return tf.mul(tf.sub(x1, x0), tf.sub(y1, y0));
}

/** IoU and union of xyxy boxes a [..., 4] and b [..., 4] of the same shape (`box_iou` on a[:, None] and b). */
function iouAndUnion(a: tf.Tensor, b: tf.Tensor): { iou: tf.Tensor; union: tf.Tensor } {
  const lt = tf.maximum(tf.slice(a, sliceBegin(a, 0), sliceSize(a)), tf.slice(b, sliceBegin(b, 0), sliceSize(b)));
  const rb = tf.minimum(tf.slice(a, sliceBegin(a, 2), sliceSize(a)), tf.slice(b, sliceBegin(b, 2), sliceSize(b)));
  const wh = tf.relu(tf.sub(rb, lt)); // clamp(min=0)
  const [iw, ih] = tf.unstack(wh, -1) as [tf.Tensor, tf.Tensor];
  const inter = tf.mul(iw, ih);
  const union = tf.sub(tf.add(boxArea(a), boxArea(b)), inter);
  return { iou: tf.div(inter, union), union };
}

const sliceBegin = (t: tf.Tensor, start: number): number[] => [...new Array<number>(t.rank - 1).fill(0), start];
const sliceSize = (t: tf.Tensor): number[] => [...new Array<number>(t.rank - 1).fill(-1), 2];

/** GIoU of xyxy boxes a and b of the same shape. */
function giou(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const { iou, union } = iouAndUnion(a, b);
  const lt = tf.minimum(tf.slice(a, sliceBegin(a, 0), sliceSize(a)), tf.slice(b, sliceBegin(b, 0), sliceSize(b)));
  const rb = tf.maximum(tf.slice(a, sliceBegin(a, 2), sliceSize(a)), tf.slice(b, sliceBegin(b, 2), sliceSize(b)));
  const wh = tf.relu(tf.sub(rb, lt));
  const [cw, ch] = tf.unstack(wh, -1) as [tf.Tensor, tf.Tensor];
  const area = tf.mul(cw, ch);
  return tf.sub(iou, tf.div(tf.sub(area, union), area));
}

/** Pairwise IoU [N, M] of xyxy boxes [N, 4] and [M, 4] (`box_iou`, first output). */
export function boxIou(boxes1: tf.Tensor2D, boxes2: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => iouAndUnion(...pairwise(boxes1, boxes2)).iou as tf.Tensor2D);
}

/**
 * [N, 4] and [M, 4] → both [N, M, 4]. Broadcast explicitly: tfjs's Maximum / Minimum gradients do not sum over
 * broadcast dimensions (they fail with "gradient of input 'a' has shape [N,M,2] … [N,1,2]").
 */
function pairwise(boxes1: tf.Tensor2D, boxes2: tf.Tensor2D): [tf.Tensor, tf.Tensor] {
  const shape = [boxes1.shape[0], boxes2.shape[0], 4];
  return [tf.broadcastTo(tf.expandDims(boxes1, 1), shape), tf.broadcastTo(tf.expandDims(boxes2, 0), shape)];
}

/**
 * Pairwise generalized IoU [N, M] of xyxy boxes [N, 4] and [M, 4] (`generalized_box_iou`). The official code
 * asserts x1 ≥ x0 and y1 ≥ y0 (degenerate boxes give inf/nan); callers validate their targets, and predicted
 * boxes from `boxCxcywhToXyxy(sigmoid(·))` satisfy it by construction.
 */
export function generalizedBoxIou(boxes1: tf.Tensor2D, boxes2: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => giou(...pairwise(boxes1, boxes2)) as tf.Tensor2D);
}

/** GIoU of aligned pairs: [N, 4] and [N, 4] xyxy → [N] (= diag of `generalizedBoxIou`). */
export function generalizedBoxIouPaired(boxes1: tf.Tensor2D, boxes2: tf.Tensor2D): tf.Tensor1D {
  if (boxes1.shape[0] !== boxes2.shape[0]) throw new Error(`generalizedBoxIouPaired: ${boxes1.shape[0]} boxes vs ${boxes2.shape[0]}`);
  return tf.tidy(() => giou(boxes1, boxes2) as tf.Tensor1D);
}
