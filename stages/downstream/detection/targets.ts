/**
 * FCOS target assignment for one image: each location is positive for at most one ground-truth
 * box, the one of smallest area among those that
 *  - contain it strictly (all of l, t, r, b > 0),
 *  - and, with center sampling, whose central region contains it: the square of half-side
 *    `radius * stride` around the box centre, clipped to the box (FCOS's `center_sample`; it
 *    drops the low-quality locations near the sides that plain "inside the box" accepts),
 *  - and whose largest distance max(l, t, r, b) falls in the location's level range (lower, upper],
 *    which spreads objects of different sizes over the pyramid levels.
 * Crowd boxes are not targets (their locations stay negative), as in FCOS's training.
 */
import { centerness, encodeLtrb, type Xyxy } from './boxes.js';
import type { LocationGrid } from './points.js';

export interface GroundTruthBoxes {
  /** n x 4 xyxy in input pixels. */
  boxes: Float32Array;
  /** n class indices in [0, numClasses). */
  labels: Int32Array;
  iscrowd?: boolean[];
}

export interface LocationTargets {
  /** Class per location, -1 = background. */
  labels: Int32Array;
  /** Index of the assigned box per location, -1 = background. */
  assigned: Int32Array;
  /** count x 4 ltrb in stride units (0 for background). */
  ltrb: Float32Array;
  /** FCOS centerness of positives (0 for background). */
  centerness: Float32Array;
  numPositive: number;
}

export interface AssignOptions {
  /** Center-sampling radius in strides; 0 disables center sampling (any location inside the box). */
  centerSampleRadius: number;
}

export function assignTargets(grid: LocationGrid, gt: GroundTruthBoxes, options: AssignOptions): LocationTargets {
  const n = gt.labels.length;
  if (gt.boxes.length !== n * 4) throw new Error(`assignTargets: ${gt.boxes.length / 4} boxes for ${n} labels`);
  const out: LocationTargets = {
    labels: new Int32Array(grid.count).fill(-1),
    assigned: new Int32Array(grid.count).fill(-1),
    ltrb: new Float32Array(grid.count * 4),
    centerness: new Float32Array(grid.count),
    numPositive: 0,
  };
  const boxes: Xyxy[] = Array.from({ length: n }, (_, g) => [gt.boxes[g * 4]!, gt.boxes[g * 4 + 1]!, gt.boxes[g * 4 + 2]!, gt.boxes[g * 4 + 3]!]);
  const areas = boxes.map((b) => (b[2] - b[0]) * (b[3] - b[1]));
  for (let k = 0; k < grid.count; k++) {
    const x = grid.x[k]!;
    const y = grid.y[k]!;
    const stride = grid.stride[k]!;
    const level = grid.levels[grid.level[k]!]!;
    let best = -1;
    for (let g = 0; g < n; g++) {
      if (gt.iscrowd?.[g]) continue;
      const b = boxes[g]!;
      if (!(x > b[0] && y > b[1] && x < b[2] && y < b[3])) continue;
      if (options.centerSampleRadius > 0) {
        const cx = (b[0] + b[2]) / 2;
        const cy = (b[1] + b[3]) / 2;
        const r = options.centerSampleRadius * stride;
        const inCentre = x > Math.max(cx - r, b[0]) && x < Math.min(cx + r, b[2]) && y > Math.max(cy - r, b[1]) && y < Math.min(cy + r, b[3]);
        if (!inCentre) continue;
      }
      const reach = Math.max(x - b[0], y - b[1], b[2] - x, b[3] - y);
      if (!(reach > level.lower && reach <= level.upper)) continue;
      if (best < 0 || areas[g]! < areas[best]!) best = g;
    }
    if (best < 0) continue;
    const ltrb = encodeLtrb(x, y, boxes[best]!, stride);
    out.labels[k] = gt.labels[best]!;
    out.assigned[k] = best;
    out.ltrb.set(ltrb, k * 4);
    out.centerness[k] = centerness(ltrb);
    out.numPositive++;
  }
  return out;
}
