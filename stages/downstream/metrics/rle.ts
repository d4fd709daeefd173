/**
 * COCO run-length encoding, bit-for-bit what pycocotools' maskApi.c computes: runs walk the mask
 * in COLUMN-major order starting with a run of zeros; the compact string stores each run as a
 * delta to the run two places before it, in 5-bit groups offset by 48. Masks inside densepipe are
 * row-major Uint8Arrays (non-zero = object) of height*width, so encoding transposes on the fly.
 */
import { BadInputError } from '../../../core/errors.js';
import { maskToRuns, runsToMask, runsToString, stringToRuns, type CocoRle } from '../../data/masks.js';

export type { CocoRle } from '../../data/masks.js';

/** The decoded form every computation here works on. */
export interface Rle {
  height: number;
  width: number;
  counts: number[];
}

/** Column-major runs of a row-major mask; the codec itself lives with the data formats (stages/data/masks.ts). */
export function rleEncode(mask: ArrayLike<number>, height: number, width: number): Rle {
  return { height, width, counts: maskToRuns(mask, height, width) };
}

export function rleDecode(rle: Rle): Uint8Array {
  return runsToMask(rle.counts, rle.height, rle.width);
}

/** maskApi.c rleToString. */
export const rleToString = runsToString;

/** maskApi.c rleFrString. */
export const rleFromString = stringToRuns;

export function toCocoRle(rle: Rle): CocoRle {
  return { size: [rle.height, rle.width], counts: rleToString(rle.counts) };
}

export function fromCocoRle(coco: CocoRle, where = 'segmentation'): Rle {
  if (!Array.isArray(coco?.size) || coco.size.length !== 2) throw new BadInputError('RLE needs size [height, width]', where);
  const [height, width] = coco.size;
  const counts = typeof coco.counts === 'string' ? rleFromString(coco.counts) : [...coco.counts];
  const total = counts.reduce((a, b) => a + b, 0);
  if (total !== height * width) throw new BadInputError(`RLE counts sum to ${total}, expected ${height}x${width}`, where);
  return { height, width, counts };
}

/** Foreground pixel count: the sum of the odd (foreground) runs. */
export function rleArea(rle: Rle): number {
  let area = 0;
  for (let i = 1; i < rle.counts.length; i += 2) area += rle.counts[i]!;
  return area;
}

/** Tight [x, y, w, h] box of the foreground (maskApi.c rleToBbox); all zeros for an empty mask. */
export function rleToBbox(rle: Rle): [number, number, number, number] {
  const h = rle.height;
  const m = Math.floor(rle.counts.length / 2) * 2;
  if (m === 0) return [0, 0, 0, 0];
  let xs = rle.width;
  let ys = h;
  let xe = 0;
  let ye = 0;
  let cc = 0;
  let xp = 0;
  for (let j = 0; j < m; j++) {
    cc += rle.counts[j]!;
    const t = cc - (j % 2);
    const y = t % h;
    const x = (t - y) / h;
    if (j % 2 === 0) xp = x;
    else if (xp < x) {
      // The run wraps into a later column, so it spans the full height somewhere.
      ys = 0;
      ye = h - 1;
    }
    xs = Math.min(xs, x);
    xe = Math.max(xe, x);
    ys = Math.min(ys, y);
    ye = Math.max(ye, y);
  }
  return [xs, ys, xe - xs + 1, ye - ys + 1];
}

/**
 * IoU of [x, y, w, h] boxes, dt x gt, as maskApi.c bbIou: for a crowd gt the union is the
 * detection's own area (a detection inside a crowd region is not penalised for the rest of it).
 */
export function boxIou(dt: ReadonlyArray<readonly number[]>, gt: ReadonlyArray<readonly number[]>, iscrowd: readonly boolean[]): number[][] {
  const out = dt.map(() => new Array<number>(gt.length).fill(0));
  for (let g = 0; g < gt.length; g++) {
    const [gx, gy, gw, gh] = gt[g]! as [number, number, number, number];
    const ga = gw * gh;
    for (let d = 0; d < dt.length; d++) {
      const [dx, dy, dw, dh] = dt[d]! as [number, number, number, number];
      const da = dw * dh;
      const w = Math.min(dx + dw, gx + gw) - Math.max(dx, gx);
      if (w <= 0) continue;
      const h = Math.min(dy + dh, gy + gh) - Math.max(dy, gy);
      if (h <= 0) continue;
      const inter = w * h;
      const union = iscrowd[g] ? da : da + ga - inter;
      out[d]![g] = inter / union;
    }
  }
  return out;
}

/**
 * Mask IoU, dt x gt, as maskApi.c rleIou: a box-IoU prefilter, then a merge walk over both run
 * lists. Masks of different sizes get -1, as in pycocotools.
 */
export function maskIou(dt: readonly Rle[], gt: readonly Rle[], iscrowd: readonly boolean[]): number[][] {
  const out = boxIou(dt.map(rleToBbox), gt.map(rleToBbox), iscrowd);
  for (let g = 0; g < gt.length; g++) {
    for (let d = 0; d < dt.length; d++) {
      if (out[d]![g]! <= 0) continue;
      const a = dt[d]!;
      const b = gt[g]!;
      if (a.height !== b.height || a.width !== b.width) {
        out[d]![g] = -1;
        continue;
      }
      const inter = intersectionOfRuns(a.counts, b.counts);
      let union = rleArea(a) + rleArea(b) - inter;
      if (inter === 0) union = 1;
      else if (iscrowd[g]) union = rleArea(a);
      out[d]![g] = inter / union;
    }
  }
  return out;
}

function intersectionOfRuns(a: readonly number[], b: readonly number[]): number {
  let ia = 0;
  let ib = 0;
  let ra = a[0] ?? 0;
  let rb = b[0] ?? 0;
  let va = false;
  let vb = false;
  let inter = 0;
  while (ia < a.length && ib < b.length) {
    const step = Math.min(ra, rb);
    if (va && vb) inter += step;
    ra -= step;
    rb -= step;
    if (ra === 0) {
      ia++;
      ra = a[ia] ?? 0;
      va = !va;
    }
    if (rb === 0) {
      ib++;
      rb = b[ib] ?? 0;
      vb = !vb;
    }
  }
  return inter;
}
