/**
 * Box arithmetic for the FCOS detector, in plain JS (targets and post-processing run per image on
 * small arrays, where a tensor round trip costs more than the maths). Boxes are xyxy in input
 * pixels; a location's regression target is its distances (left, top, right, bottom) to the
 * box's sides, in units of the level's stride (FCOS's `norm_reg_targets`), so every level's head
 * predicts numbers of the same magnitude.
 */

export type Xyxy = [number, number, number, number];

/** Distances from point (x, y) to the four sides of `box`, divided by `stride`. */
export function encodeLtrb(x: number, y: number, box: Xyxy, stride: number): [number, number, number, number] {
  return [(x - box[0]) / stride, (y - box[1]) / stride, (box[2] - x) / stride, (box[3] - y) / stride];
}

/** Inverse of encodeLtrb: the box a location at (x, y) predicts from stride-unit distances. */
export function decodeLtrb(x: number, y: number, ltrb: ArrayLike<number>, stride: number): Xyxy {
  return [x - ltrb[0]! * stride, y - ltrb[1]! * stride, x + ltrb[2]! * stride, y + ltrb[3]! * stride];
}

/**
 * FCOS centerness of a location inside its box: sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)).
 * 1 at the box centre, falling to 0 at the sides; it down-weights far-from-centre locations,
 * whose boxes are the least accurate.
 */
export function centerness(ltrb: ArrayLike<number>): number {
  const [l, t, r, b] = [ltrb[0]!, ltrb[1]!, ltrb[2]!, ltrb[3]!];
  return Math.sqrt((Math.min(l, r) / Math.max(l, r)) * (Math.min(t, b) / Math.max(t, b)));
}

export function boxArea(b: ArrayLike<number>): number {
  return Math.max(0, b[2]! - b[0]!) * Math.max(0, b[3]! - b[1]!);
}

/** Intersection over union of two xyxy boxes (0 when both are empty). */
export function iouXyxy(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const w = Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!);
  const h = Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  const union = boxArea(a) + boxArea(b) - inter;
  return union > 0 ? inter / union : 0;
}

/** COCO's [x, y, w, h] from xyxy. */
export function toXywh(b: ArrayLike<number>): [number, number, number, number] {
  return [b[0]!, b[1]!, b[2]! - b[0]!, b[3]! - b[1]!];
}
