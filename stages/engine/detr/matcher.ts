/**
 * DETR's Hungarian matcher (facebookresearch/detr@29901c5, models/matcher.py `HungarianMatcher`), with the
 * project's exact Hungarian (`stages/downstream/metrics/hungarian.ts`) in place of scipy's
 * `linear_sum_assignment`.
 *
 * Cost of assigning query q (of image b) to target box j of that image:
 *   C[q, j] = λ_bbox ‖b̂_q − b_j‖₁ − λ_class p̂_q(c_j) − λ_giou GIoU(b̂_q, b_j)
 * with p̂ = softmax over the C + 1 logits, boxes (cx, cy, w, h) in [0, 1], GIoU on their xyxy forms.
 * Each image is matched on its own: min(Q, T_b) pairs, listed by ascending query index (what
 * linear_sum_assignment returns). No gradient flows through the matching.
 *
 * Shape legend: B images, Q queries, K = C + 1 classes with the no-object class last, T = Σ_b T_b targets.
 */
import * as tf from '@tensorflow/tfjs';
import { BadInputError } from '../../../core/errors.js';
import { hungarian } from '../hungarian.js';
import { boxCxcywhToXyxy, generalizedBoxIou } from './box_ops.js';

/** The ground truth of one image: class ids in [0, C) and (cx, cy, w, h) boxes normalised to [0, 1]. */
export interface DetrTarget {
  labels: readonly number[];
  boxes: ReadonlyArray<readonly number[]>;
}

/** Relative weights of the three costs (HungarianMatcher defaults 1, 1, 1; DETR main.py: 1, 5, 2). */
export interface MatcherCosts {
  costClass: number;
  costBbox: number;
  costGiou: number;
}

/** DETR main.py's set_cost_class / set_cost_bbox / set_cost_giou. */
export const DETR_MATCHER_COSTS: MatcherCosts = { costClass: 1, costBbox: 5, costGiou: 2 };

/** One image's assignment: query `src[i]` is matched to target `tgt[i]`; `src` ascending. */
export interface MatchIndices {
  src: number[];
  tgt: number[];
}

/**
 * Check targets as the official code would need them (it indexes the class probabilities with the labels and
 * asserts x1 ≥ x0, y1 ≥ y0 in generalized_box_iou): clear errors naming `targets[b]`.
 */
export function validateTargets(targets: readonly DetrTarget[], numClasses: number, batch: number): void {
  if (targets.length !== batch) throw new BadInputError(`${targets.length} target sets for a batch of ${batch}`, 'targets');
  targets.forEach((t, b) => {
    if (t.labels.length !== t.boxes.length) throw new BadInputError(`${t.labels.length} labels but ${t.boxes.length} boxes`, `targets[${b}]`);
    t.labels.forEach((c, j) => {
      if (!Number.isInteger(c) || c < 0 || c >= numClasses) throw new BadInputError(`label ${c} is not a class id in [0, ${numClasses})`, `targets[${b}].labels[${j}]`);
    });
    t.boxes.forEach((box, j) => {
      if (box.length !== 4 || !box.every(Number.isFinite)) throw new BadInputError(`box must be 4 finite numbers (cx, cy, w, h), got [${box.join(', ')}]`, `targets[${b}].boxes[${j}]`);
      if (box[2]! < 0 || box[3]! < 0) throw new BadInputError(`box has negative width or height: [${box.join(', ')}]`, `targets[${b}].boxes[${j}]`);
    });
  });
}

/**
 * The official `C` before it is split per image: [B·Q, T] (a query is scored against every target of the batch).
 * predLogits [B, Q, K], predBoxes [B, Q, 4] (cx, cy, w, h).
 */
export function matcherCostMatrix(predLogits: tf.Tensor3D, predBoxes: tf.Tensor3D, targets: readonly DetrTarget[], costs: MatcherCosts): tf.Tensor2D {
  const [b, q, k] = predLogits.shape;
  const labels = targets.flatMap((t) => [...t.labels]);
  const boxes = targets.flatMap((t) => t.boxes.map((x) => [...x]));
  return tf.tidy(() => {
    if (labels.length === 0) return tf.zeros([b * q, 0]) as tf.Tensor2D;
    const outProb = tf.softmax(tf.reshape(predLogits, [b * q, k]) as tf.Tensor2D, -1);
    const costClass = tf.neg(tf.gather(outProb, tf.tensor1d(labels, 'int32'), 1));
    return weightedCost(costClass, predBoxes, boxes, costs);
  });
}

/**
 * C = w_bbox·L1(boxes) + w_class·costClass + w_giou·(−GIoU) over every (query, target) pair: [B·Q, T]. The box terms
 * every DETR matcher shares (matcher.py, def_matcher.py); the class term is the caller's (softmax or focal).
 */
export function weightedCost(costClass: tf.Tensor, predBoxes: tf.Tensor3D, boxes: number[][], costs: MatcherCosts): tf.Tensor2D {
  const [b, q] = predBoxes.shape;
  const outBbox = tf.reshape(predBoxes, [b * q, 4]) as tf.Tensor2D;
  const tgtBbox = tf.tensor2d(boxes, [boxes.length, 4]);
  const costBbox = tf.sum(tf.abs(tf.sub(tf.expandDims(outBbox, 1), tf.expandDims(tgtBbox, 0))), 2); // cdist p=1
  const costGiou = tf.neg(generalizedBoxIou(boxCxcywhToXyxy(outBbox) as tf.Tensor2D, boxCxcywhToXyxy(tgtBbox) as tf.Tensor2D));
  return tf.addN([tf.mul(costBbox, costs.costBbox), tf.mul(costClass, costs.costClass), tf.mul(costGiou, costs.costGiou)]) as tf.Tensor2D;
}

/** `HungarianMatcher.forward`: one assignment per image. */
export function hungarianMatcher(predLogits: tf.Tensor3D, predBoxes: tf.Tensor3D, targets: readonly DetrTarget[], costs: MatcherCosts): MatchIndices[] {
  const [b, q, k] = predLogits.shape;
  if (costs.costClass === 0 && costs.costBbox === 0 && costs.costGiou === 0) throw new Error("HungarianMatcher: all costs can't be 0");
  if (predBoxes.shape[0] !== b || predBoxes.shape[1] !== q || predBoxes.shape[2] !== 4) throw new Error(`hungarianMatcher: predBoxes must be [${b}, ${q}, 4], got [${predBoxes.shape}]`);
  validateTargets(targets, k - 1, b);
  return assignPerImage(matcherCostMatrix(predLogits, predBoxes, targets, costs), q, targets);
}

/**
 * The matchers' common tail: the batch's cost matrix C [B·Q, T] split per image (its own targets' columns), each
 * block assigned by the exact Hungarian; query indices ascending. Disposes `cost`.
 */
export function assignPerImage(cost: tf.Tensor2D, q: number, targets: readonly DetrTarget[]): MatchIndices[] {
  const total = targets.reduce((n, t) => n + t.labels.length, 0);
  const flat = cost.dataSync();
  cost.dispose();
  const out: MatchIndices[] = [];
  let offset = 0;
  for (let i = 0; i < targets.length; i++) {
    const tb = targets[i]!.labels.length;
    const rows = Array.from({ length: q }, (_, r) => {
      const row = new Float64Array(tb);
      for (let j = 0; j < tb; j++) row[j] = flat[(i * q + r) * total + offset + j]!;
      return row;
    });
    const src: number[] = [];
    const tgt: number[] = [];
    hungarian(rows).rowToColumn.forEach((col, row) => {
      if (col >= 0) {
        src.push(row);
        tgt.push(col);
      }
    });
    out.push({ src, tgt });
    offset += tb;
  }
  return out;
}
