/**
 * DETR's set criterion (facebookresearch/detr@29901c5, models/detr.py `SetCriterion` with losses
 * ['labels', 'boxes', 'cardinality'] as `build` sets them, and the `weight_dict` sum that engine.py minimises).
 *
 * After the Hungarian matching σ̂ of the last decoder layer (matcher.ts):
 *   loss_ce    = Σ_{b,q} w(c_bq) · (−log p̂_bq(c_bq)) / Σ_{b,q} w(c_bq)     c_bq = matched class, else ∅ (= C);
 *                                                                           w(∅) = eos_coef, w(c) = 1 otherwise
 *   loss_bbox  = Σ_{matched} ‖b̂ − b‖₁ / N_boxes
 *   loss_giou  = Σ_{matched} (1 − GIoU(b̂, b)) / N_boxes                    N_boxes = max(Σ_b T_b, 1)
 * Logged, not differentiated: class_error (100 − top-1 accuracy of the matched queries), cardinality_error
 * (mean |#{q : argmax ≠ ∅} − T_b|). With auxiliary outputs, every earlier decoder layer is matched on its own and
 * adds the same terms suffixed `_i` (class_error only for the last layer).
 *   total = Σ_k weight_dict[k] · loss_k,  weight_dict = {loss_ce: 1, loss_bbox: 5, loss_giou: 2} and the `_i` copies.
 * The per-layer loop (`setCriterionOverLayers`) is Deformable DETR's too (deformable_criterion.ts), with its own matcher
 * and classification loss.
 *
 * Shape legend: B images, Q queries, K = C + 1 classes (no-object last), L decoder layers.
 */
import * as tf from '@tensorflow/tfjs';
import { boxCxcywhToXyxy, generalizedBoxIouPaired } from './box_ops.js';
import { DETR_MATCHER_COSTS, hungarianMatcher, type DetrTarget, type MatchIndices, type MatcherCosts } from './matcher.js';

/** One decoder layer's predictions. */
export interface DetrPredictions {
  /** [B, Q, C + 1] class logits, no-object last. */
  predLogits: tf.Tensor3D;
  /** [B, Q, 4] (cx, cy, w, h) in [0, 1] (after the sigmoid). */
  predBoxes: tf.Tensor3D;
}

/** The model output: the last layer, and the earlier ones when auxiliary losses are on. */
export interface DetrOutputs extends DetrPredictions {
  auxOutputs?: DetrPredictions[];
}

export interface SetCriterionConfig {
  /** C, the number of object classes (the no-object class is C). */
  numClasses: number;
  /** eos_coef: relative weight of the no-object class in loss_ce (DETR main.py: 0.1). */
  eosCoef: number;
  /** Matching costs (DETR main.py: class 1, bbox 5, giou 2). */
  costs: MatcherCosts;
  /** loss_ce weight (1), bbox_loss_coef (5), giou_loss_coef (2). */
  weights: { ce: number; bbox: number; giou: number };
}

/** DETR main.py's defaults for `numClasses` classes. */
export function detrCriterionDefaults(numClasses: number): SetCriterionConfig {
  return { numClasses, eosCoef: 0.1, costs: { ...DETR_MATCHER_COSTS }, weights: { ce: 1, bbox: 5, giou: 2 } };
}

export interface SetCriterionResult {
  /** Weighted sum of every differentiable term (what the optimizer minimises). */
  total: tf.Scalar;
  /** loss_ce, loss_bbox, loss_giou and their `_i` copies, as scalars (owned by the caller; a plain object, so tf.tidy keeps them). */
  losses: Record<string, tf.Scalar>;
  /** class_error of the last layer and the criterion's own per-layer logs (DETR: cardinality_error, `cardinality_error_i`), plain numbers. */
  logs: Record<string, number>;
  /** The matching of each layer, last layer first, then aux layer 0, 1, …. */
  indices: MatchIndices[][];
}

/** What a DETR-family criterion does differently per decoder layer: its matcher and its classification loss. */
export interface LayerCriterion {
  /** The layer's Hungarian matching (no gradient). */
  match(pred: DetrPredictions): MatchIndices[];
  /** loss_ce of the layer against its matching (DETR: softmax CE with eos_coef; Deformable DETR: sigmoid focal). */
  lossLabels(logits: tf.Tensor3D, match: MatchIndices[], numBoxes: number): tf.Scalar;
  /** Logs of every layer besides the last layer's class_error, written into `logs` under `suffix` (DETR: cardinality_error). */
  log?(logits: tf.Tensor3D, suffix: string, logs: Record<string, number>): void;
}

/**
 * The loop every DETR-family `SetCriterion.forward` runs: the last layer (suffix ''), then each auxiliary layer i
 * (suffix `_i`) matched on its own, adding loss_ce (the caller's), loss_bbox and loss_giou (`lossBoxes`), the last
 * layer's class_error, then total = Σ_k weights[k] · loss_k in that order. N_boxes = max(Σ_b T_b, 1).
 */
export function setCriterionOverLayers(outputs: DetrOutputs, targets: readonly DetrTarget[], weights: SetCriterionConfig['weights'], layer: LayerCriterion): SetCriterionResult {
  const numBoxes = Math.max(targets.reduce((n, t) => n + t.labels.length, 0), 1);
  const losses: Record<string, tf.Scalar> = {};
  const logs: Record<string, number> = {};
  const indices: MatchIndices[][] = [];
  const layers: Array<[DetrPredictions, string]> = [[outputs, ''], ...(outputs.auxOutputs ?? []).map((o, i): [DetrPredictions, string] => [o, `_${i}`])];
  for (const [pred, suffix] of layers) {
    const match = layer.match(pred);
    indices.push(match);
    losses[`loss_ce${suffix}`] = layer.lossLabels(pred.predLogits, match, numBoxes);
    const { bbox, giou } = lossBoxes(pred.predBoxes, targets, match, numBoxes);
    losses[`loss_bbox${suffix}`] = bbox;
    losses[`loss_giou${suffix}`] = giou;
    if (suffix === '') logs.class_error = classError(pred.predLogits, targets, match);
    layer.log?.(pred.predLogits, suffix, logs);
  }
  const weight = { loss_ce: weights.ce, loss_bbox: weights.bbox, loss_giou: weights.giou } satisfies Record<string, number>;
  const total = tf.tidy(() => tf.addN(Object.entries(losses).map(([name, v]) => tf.mul(v, weight[name.replace(/_\d+$/, '') as keyof typeof weight]))) as tf.Scalar);
  return { total, losses, logs, indices };
}

/**
 * `SetCriterion.forward` plus the weighted sum. Call inside the function handed to `namedGradients` /
 * `tf.variableGrads`: the matching reads the predictions (no gradient), the losses differentiate them.
 */
export function setCriterion(outputs: DetrOutputs, targets: readonly DetrTarget[], config: SetCriterionConfig): SetCriterionResult {
  const k = outputs.predLogits.shape[2];
  if (k !== config.numClasses + 1) throw new Error(`setCriterion: logits have ${k} classes, expected numClasses + 1 = ${config.numClasses + 1}`);
  return setCriterionOverLayers(outputs, targets, config.weights, {
    match: (pred) => hungarianMatcher(pred.predLogits, pred.predBoxes, targets, config.costs),
    lossLabels: (logits, match) => lossLabels(logits, targets, match, config),
    log: (logits, suffix, logs) => {
      logs[`cardinality_error${suffix}`] = cardinalityError(logits, targets);
    },
  });
}

/** The class of every query: the matched target's label, else the no-object class C. [B][Q]. */
function targetClasses(b: number, q: number, targets: readonly DetrTarget[], match: MatchIndices[], numClasses: number): number[][] {
  return Array.from({ length: b }, (_, i) => {
    const row = new Array<number>(q).fill(numClasses);
    match[i]!.src.forEach((s, j) => (row[s] = targets[i]!.labels[match[i]!.tgt[j]!]!));
    return row;
  });
}

/** `loss_labels`: F.cross_entropy(logits, classes, weight=empty_weight), the weighted mean. */
function lossLabels(logits: tf.Tensor3D, targets: readonly DetrTarget[], match: MatchIndices[], config: SetCriterionConfig): tf.Scalar {
  const [b, q, k] = logits.shape;
  const classes = targetClasses(b, q, targets, match, config.numClasses).flat();
  const weights = classes.map((c) => (c === config.numClasses ? config.eosCoef : 1));
  return tf.tidy(() => {
    const logp = tf.logSoftmax(tf.reshape(logits, [b * q, k]) as tf.Tensor2D, -1);
    const nll = tf.neg(tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d(classes, 'int32'), k)), 1));
    const w = tf.tensor1d(weights);
    return tf.div(tf.sum(tf.mul(nll, w)), tf.sum(w)) as tf.Scalar;
  });
}

/** `loss_boxes`: L1 and 1 − GIoU of the matched pairs, each summed and divided by N_boxes (also Deformable DETR's, deformable_criterion.ts). */
export function lossBoxes(boxes: tf.Tensor3D, targets: readonly DetrTarget[], match: MatchIndices[], numBoxes: number): { bbox: tf.Scalar; giou: tf.Scalar } {
  const [b, q] = boxes.shape;
  const rows = match.flatMap((m, i) => m.src.map((s) => i * q + s));
  if (rows.length === 0) {
    // Nothing matched: the official sums an empty tensor (0, no gradient).
    return { bbox: tf.scalar(0), giou: tf.scalar(0) };
  }
  const tgt = match.flatMap((m, i) => m.tgt.map((j) => [...targets[i]!.boxes[j]!]));
  return tf.tidy(() => {
    const src = tf.gather(tf.reshape(boxes, [b * q, 4]), tf.tensor1d(rows, 'int32')) as tf.Tensor2D;
    const target = tf.tensor2d(tgt, [tgt.length, 4]);
    const bbox = tf.div(tf.sum(tf.abs(tf.sub(src, target))), numBoxes) as tf.Scalar;
    const g = generalizedBoxIouPaired(boxCxcywhToXyxy(src) as tf.Tensor2D, boxCxcywhToXyxy(target) as tf.Tensor2D);
    const giou = tf.div(tf.sum(tf.sub(1, g)), numBoxes) as tf.Scalar;
    return { bbox, giou };
  });
}

/** 100 − top-1 accuracy (%) of the matched queries' logits (argmax over every logit) against their targets' labels (100 if none). */
function classError(logits: tf.Tensor3D, targets: readonly DetrTarget[], match: MatchIndices[]): number {
  const [, q, k] = logits.shape;
  const data = logits.dataSync();
  let correct = 0;
  let n = 0;
  match.forEach((m, i) =>
    m.src.forEach((s, j) => {
      const base = (i * q + s) * k;
      let best = 0;
      for (let c = 1; c < k; c++) if (data[base + c]! > data[base + best]!) best = c;
      if (best === targets[i]!.labels[m.tgt[j]!]) correct++;
      n++;
    }),
  );
  return n === 0 ? 100 : 100 - (100 * correct) / n;
}

/** Mean over images of |#{queries whose argmax is not no-object} − T_b|. */
function cardinalityError(logits: tf.Tensor3D, targets: readonly DetrTarget[]): number {
  const [b, q, k] = logits.shape;
  const data = logits.dataSync();
  let sum = 0;
  for (let i = 0; i < b; i++) {
    let count = 0;
    for (let s = 0; s < q; s++) {
      const base = (i * q + s) * k;
      let best = 0;
      for (let c = 1; c < k; c++) if (data[base + c]! > data[base + best]!) best = c;
      if (best !== k - 1) count++;
    }
    sum += Math.abs(count - targets[i]!.labels.length);
  }
  return sum / b;
}
