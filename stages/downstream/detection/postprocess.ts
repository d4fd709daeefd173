/**
 * From per-location outputs to detections, as FCOS's inference: keep (location, class) pairs
 * whose class probability exceeds `scoreThreshold` (at most `preNmsTopK` per level, highest first),
 * score them sqrt(p_class * p_centerness), decode the ltrb into a box clipped to the image,
 * run non-maximum suppression per class, and keep the `maxDetections` best.
 */
import { decodeLtrb, iouXyxy, type Xyxy } from './boxes.js';
import type { LocationGrid } from './points.js';

export interface Detection {
  box: Xyxy;
  label: number;
  score: number;
  /** size x size row-major 0/1 instance mask, when the detector has a mask branch. */
  mask?: Uint8Array;
}

export interface PostprocessOptions {
  scoreThreshold: number;
  preNmsTopK: number;
  nmsIou: number;
  maxDetections: number;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * Greedy NMS: visit boxes by descending score (ties keep input order) and drop every later box
 * whose IoU with a kept one is above `iouThreshold` (torchvision.ops.nms). Returns kept indices
 * in score order.
 */
export function nms(boxes: ArrayLike<number>[], scores: ArrayLike<number>, iouThreshold: number): number[] {
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  const suppressed = new Uint8Array(scores.length);
  const keep: number[] = [];
  for (let oi = 0; oi < order.length; oi++) {
    const i = order[oi]!;
    if (suppressed[i]) continue;
    keep.push(i);
    for (let oj = oi + 1; oj < order.length; oj++) {
      const j = order[oj]!;
      if (!suppressed[j] && iouXyxy(boxes[i]!, boxes[j]!) > iouThreshold) suppressed[j] = 1;
    }
  }
  return keep;
}

/** NMS within each class only (torchvision.ops.batched_nms); kept indices in score order. */
export function classwiseNms(dets: Detection[], iouThreshold: number): number[] {
  const byClass = new Map<number, number[]>();
  dets.forEach((d, i) => byClass.set(d.label, [...(byClass.get(d.label) ?? []), i]));
  const keep: number[] = [];
  for (const idx of byClass.values()) {
    for (const k of nms(idx.map((i) => dets[i]!.box), idx.map((i) => dets[i]!.score), iouThreshold)) keep.push(idx[k]!);
  }
  return keep.sort((a, b) => dets[b]!.score - dets[a]!.score || a - b);
}

/**
 * Detections of one image from its slice of the head's outputs: `classLogits` N x K,
 * `ltrb` N x 4 (stride units), `centernessLogits` N, in `grid` order; boxes clipped to [0, size].
 */
export function postprocessImage(
  grid: LocationGrid,
  numClasses: number,
  classLogits: Float32Array,
  ltrb: Float32Array,
  centernessLogits: Float32Array,
  size: number,
  o: PostprocessOptions,
): Detection[] {
  const candidates: Detection[] = [];
  let start = 0;
  for (const level of grid.levels) {
    const end = start + level.height * level.width;
    const levelCandidates: Array<{ k: number; c: number; p: number }> = [];
    for (let k = start; k < end; k++) {
      for (let c = 0; c < numClasses; c++) {
        const p = sigmoid(classLogits[k * numClasses + c]!);
        if (p > o.scoreThreshold) levelCandidates.push({ k, c, p });
      }
    }
    levelCandidates.sort((a, b) => b.p - a.p || a.k - b.k || a.c - b.c);
    for (const { k, c, p } of levelCandidates.slice(0, o.preNmsTopK)) {
      const b = decodeLtrb(grid.x[k]!, grid.y[k]!, ltrb.subarray(k * 4, k * 4 + 4), grid.stride[k]!);
      const box: Xyxy = [clamp(b[0], size), clamp(b[1], size), clamp(b[2], size), clamp(b[3], size)];
      if (box[2] <= box[0] || box[3] <= box[1]) continue;
      candidates.push({ box, label: c, score: Math.sqrt(p * sigmoid(centernessLogits[k]!)) });
    }
    start = end;
  }
  return classwiseNms(candidates, o.nmsIou)
    .slice(0, o.maxDetections)
    .map((i) => candidates[i]!);
}

function clamp(v: number, size: number): number {
  return Math.min(size, Math.max(0, v));
}
