/**
 * Semantic-segmentation and classification scores: a confusion matrix accumulated over a data
 * set (pixels labelled `ignoreIndex`, 255 as in VOC/ADE/Cityscapes, are skipped), per-class IoU =
 * TP / (TP + FP + FN), and mIoU as the mean over classes that occur in the ground truth or in the
 * prediction (a class absent from both has no defined IoU and is left out, as mmseg does with NaN).
 */
import { BadInputError } from '../../../core/errors.js';

export const IGNORE_INDEX = 255;

export class ConfusionMatrix {
  /** counts[gt * numClasses + pred] */
  readonly counts: Float64Array;
  constructor(readonly numClasses: number) {
    if (!Number.isInteger(numClasses) || numClasses < 1 || numClasses >= IGNORE_INDEX) {
      throw new BadInputError(`numClasses must be an integer in [1, ${IGNORE_INDEX - 1}], got ${numClasses}`, 'numClasses');
    }
    this.counts = new Float64Array(numClasses * numClasses);
  }

  /** Add one label map and its prediction (same length, class indices; `ignoreIndex` in gt is skipped). */
  add(gt: ArrayLike<number>, pred: ArrayLike<number>, ignoreIndex = IGNORE_INDEX): void {
    if (gt.length !== pred.length) throw new BadInputError(`prediction has ${pred.length} pixels, ground truth ${gt.length}`, 'prediction');
    const n = this.numClasses;
    for (let i = 0; i < gt.length; i++) {
      const g = gt[i]!;
      if (g === ignoreIndex) continue;
      const p = pred[i]!;
      if (g < 0 || g >= n || !Number.isInteger(g)) throw new BadInputError(`ground-truth label ${g} at pixel ${i} is outside [0, ${n})`, 'groundTruth');
      if (p < 0 || p >= n || !Number.isInteger(p)) throw new BadInputError(`predicted label ${p} at pixel ${i} is outside [0, ${n})`, 'prediction');
      this.counts[g * n + p]! += 1;
    }
  }

  merge(other: ConfusionMatrix): void {
    if (other.numClasses !== this.numClasses) throw new BadInputError('confusion matrices of different sizes', 'numClasses');
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += other.counts[i]!;
  }
}

export interface SegmentationScores {
  mIoU: number;
  /** NaN where the class is in neither ground truth nor prediction. */
  perClassIoU: number[];
  pixelAccuracy: number;
  /** Mean over classes present in the ground truth of TP / gt pixels. */
  meanAccuracy: number;
}

export function segmentationScores(cm: ConfusionMatrix): SegmentationScores {
  const n = cm.numClasses;
  const perClassIoU: number[] = [];
  const perClassAcc: number[] = [];
  let correct = 0;
  let total = 0;
  for (let c = 0; c < n; c++) {
    const tp = cm.counts[c * n + c]!;
    let gtCount = 0;
    let predCount = 0;
    for (let k = 0; k < n; k++) {
      gtCount += cm.counts[c * n + k]!;
      predCount += cm.counts[k * n + c]!;
    }
    const union = gtCount + predCount - tp;
    perClassIoU.push(union > 0 ? tp / union : NaN);
    if (gtCount > 0) perClassAcc.push(tp / gtCount);
    correct += tp;
    total += gtCount;
  }
  const defined = perClassIoU.filter((v) => !Number.isNaN(v));
  return {
    mIoU: defined.length ? defined.reduce((a, b) => a + b, 0) / defined.length : NaN,
    perClassIoU,
    pixelAccuracy: total > 0 ? correct / total : NaN,
    meanAccuracy: perClassAcc.length ? perClassAcc.reduce((a, b) => a + b, 0) / perClassAcc.length : NaN,
  };
}

/** Convenience: mIoU and per-class IoU of paired label maps. */
export function meanIoU(pairs: Array<{ gt: ArrayLike<number>; pred: ArrayLike<number> }>, numClasses: number, ignoreIndex = IGNORE_INDEX): SegmentationScores {
  const cm = new ConfusionMatrix(numClasses);
  for (const { gt, pred } of pairs) cm.add(gt, pred, ignoreIndex);
  return segmentationScores(cm);
}

/** Fraction of samples whose predicted class equals the label. */
export function top1Accuracy(predicted: ArrayLike<number>, labels: ArrayLike<number>): number {
  if (predicted.length !== labels.length) throw new BadInputError(`${predicted.length} predictions for ${labels.length} labels`, 'predictions');
  if (labels.length === 0) return NaN;
  let hit = 0;
  for (let i = 0; i < labels.length; i++) if (predicted[i] === labels[i]) hit++;
  return hit / labels.length;
}
