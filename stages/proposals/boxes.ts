import type { Rng } from '../../core/rng.js';

/**
 * The one box convention inside densepipe: x1, y1 inclusive; x2, y2 EXCLUSIVE (x2 = x + w), in
 * pixels of the image the box refers to. A box touching the right border has x2 === width.
 * OpenCV's (x, y, w, h) maps to [x, y, x + w, y + h]; SoCo's inclusive x2 is our x2 - 1.
 * Coordinates may be fractional after rescaling to another image size (DETReg does that).
 */
export type Box = [x1: number, y1: number, x2: number, y2: number];

export function boxWidth(b: Box): number {
  return b[2] - b[0];
}

export function boxHeight(b: Box): number {
  return b[3] - b[1];
}

export function boxArea(b: Box): number {
  return Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);
}

/** OpenCV / COCO (x, y, w, h) -> densepipe [x1, y1, x2, y2). */
export function fromXywh(x: number, y: number, w: number, h: number): Box {
  return [x, y, x + w, y + h];
}

export function toXywh(b: Box): [number, number, number, number] {
  return [b[0], b[1], b[2] - b[0], b[3] - b[1]];
}

/** Intersection over union with exclusive right/bottom edges (no +1 terms). */
export function iou(a: Box, b: Box): number {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  return inter / (boxArea(a) + boxArea(b) - inter);
}

/** Rescale boxes from a (fromW x fromH) image to a (toW x toH) one, x and y independently. */
export function rescaleBoxes(boxes: Box[], fromW: number, fromH: number, toW: number, toH: number): Box[] {
  const sx = toW / fromW;
  const sy = toH / fromH;
  return boxes.map((b) => [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]);
}

/**
 * Greedy NMS in the given score order: keep a box unless it overlaps an already kept box by more
 * than `threshold` IoU. With random scores this is CCOP's "random subset without near-duplicates".
 */
export function nms(boxes: Box[], scores: number[], threshold: number): number[] {
  const order = boxes.map((_, i) => i).sort((i, j) => scores[j]! - scores[i]! || i - j);
  const kept: number[] = [];
  for (const i of order) {
    if (kept.every((j) => iou(boxes[i]!, boxes[j]!) <= threshold)) kept.push(i);
  }
  return kept;
}

/** CCOP's random scores U(0.01, 1) for NMS. */
export function randomScores(count: number, rng: Rng): number[] {
  return Array.from({ length: count }, () => rng.uniform(0.01, 1));
}

export interface BoxFilter {
  /** Keep boxes with minAspect < w/h < maxAspect (strict, as CCOP); null = no limit. */
  minAspect?: number | null;
  maxAspect?: number | null;
  /** Inclusive aspect limits (SoCo's 1/3 <= w/h <= 3). */
  aspectInclusive?: boolean;
  /** Keep sqrt(w*h) > minSqrtArea (CCOP: 20). */
  minSqrtArea?: number | null;
  /** Keep w >= minSide and h >= minSide (SoCo: 32). */
  minSide?: number | null;
  /** Keep minRelativeScale <= sqrt(w*h / (W*H)) <= maxRelativeScale (SoCo: 0.3..0.8). */
  minRelativeScale?: number | null;
  maxRelativeScale?: number | null;
}

export function passesFilter(b: Box, f: BoxFilter, imageWidth: number, imageHeight: number): boolean {
  const w = boxWidth(b);
  const h = boxHeight(b);
  if (w <= 0 || h <= 0) return false;
  const aspect = w / h;
  if (f.minAspect != null && (f.aspectInclusive ? aspect < f.minAspect : aspect <= f.minAspect)) return false;
  if (f.maxAspect != null && (f.aspectInclusive ? aspect > f.maxAspect : aspect >= f.maxAspect)) return false;
  if (f.minSqrtArea != null && !(Math.sqrt(w * h) > f.minSqrtArea)) return false;
  if (f.minSide != null && (w < f.minSide || h < f.minSide)) return false;
  const rel = Math.sqrt((w * h) / (imageWidth * imageHeight));
  if (f.minRelativeScale != null && rel < f.minRelativeScale) return false;
  if (f.maxRelativeScale != null && rel > f.maxRelativeScale) return false;
  return true;
}
