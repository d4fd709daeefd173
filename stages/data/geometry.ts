/**
 * View geometry: where each augmented view came from in the original image, and maps between
 * views, the original, and feature grids.
 *
 * The frame everything here uses (the "pixel-edge frame"): pixel (row i, column j) of an image
 * covers [j, j+1) x [i, i+1), so its centre is (j + 0.5, i + 0.5) and a W-pixel-wide image spans
 * x in [0, W]. A view is the crop box [x0, x1) x [y0, y1) of the ORIGINAL image, resized to
 * width x height, then mirrored left-right when `flipped`. This is the frame SCRL and ReSim use
 * (ReSim: x_abs = (r - l) * x / 224 + l, with l, r the crop's left/right edges); PixPro's
 * normalised frame is available through `pixproCoords` (see its note).
 */

export type Point = [number, number];
/** [x0, y0, x1, y1] in the pixel-edge frame. */
export type Box = [number, number, number, number];

export interface ViewGeometry {
  /** Size of the original image. */
  imageWidth: number;
  imageHeight: number;
  /** The crop in original pixel-edge coordinates (torchvision's (i, j, h, w) is [j, i, j + w, i + h]). */
  crop: Box;
  /** Output size of the view. */
  width: number;
  height: number;
  /** Mirrored left-right after cropping. */
  flipped: boolean;
}

/** View pixels per original pixel along x and y (> 1 means the view magnifies). */
export function viewScale(g: ViewGeometry): { x: number; y: number } {
  return { x: g.width / (g.crop[2] - g.crop[0]), y: g.height / (g.crop[3] - g.crop[1]) };
}

export function viewToOriginal(g: ViewGeometry, [x, y]: Point): Point {
  const u = g.flipped ? g.width - x : x;
  return [g.crop[0] + (u * (g.crop[2] - g.crop[0])) / g.width, g.crop[1] + (y * (g.crop[3] - g.crop[1])) / g.height];
}

export function originalToView(g: ViewGeometry, [X, Y]: Point): Point {
  const u = ((X - g.crop[0]) * g.width) / (g.crop[2] - g.crop[0]);
  return [g.flipped ? g.width - u : u, ((Y - g.crop[1]) * g.height) / (g.crop[3] - g.crop[1])];
}

/** A point of view `a` expressed in view `b` (it may fall outside b: check with `insideView`). */
export function viewToView(a: ViewGeometry, b: ViewGeometry, p: Point): Point {
  return originalToView(b, viewToOriginal(a, p));
}

export function insideView(g: ViewGeometry, [x, y]: Point): boolean {
  return x >= 0 && x < g.width && y >= 0 && y < g.height;
}

/** Map both corners and re-sort them: a flip swaps left and right. */
function mapBox(box: Box, f: (p: Point) => Point): Box {
  const [ax, ay] = f([box[0], box[1]]);
  const [bx, by] = f([box[2], box[3]]);
  return [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
}

export const boxViewToOriginal = (g: ViewGeometry, box: Box): Box => mapBox(box, (p) => viewToOriginal(g, p));
export const boxOriginalToView = (g: ViewGeometry, box: Box): Box => mapBox(box, (p) => originalToView(g, p));
export const boxViewToView = (a: ViewGeometry, b: ViewGeometry, box: Box): Box => mapBox(box, (p) => viewToView(a, b, p));

export function clipBox(box: Box, width: number, height: number): Box | null {
  const c: Box = [Math.max(0, box[0]), Math.max(0, box[1]), Math.min(width, box[2]), Math.min(height, box[3])];
  return c[2] > c[0] && c[3] > c[1] ? c : null;
}

const boxArea = (b: Box) => Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]);

/**
 * Original-image boxes (e.g. ground-truth objects) as seen in a view: mapped, clipped to the
 * view, with the fraction of each box's area that survived (CCOP keeps a box when it is > 0.6).
 */
export function boxesIntoView(g: ViewGeometry, boxes: readonly Box[]): { box: Box | null; visibleFraction: number }[] {
  return boxes.map((b) => {
    const mapped = boxOriginalToView(g, b);
    const clipped = clipBox(mapped, g.width, g.height);
    return { box: clipped, visibleFraction: clipped ? boxArea(clipped) / boxArea(mapped) : 0 };
  });
}

/** The part of the original image both views show, in original coordinates (null when disjoint). */
export function cropIntersection(a: ViewGeometry, b: ViewGeometry): Box | null {
  const box: Box = [Math.max(a.crop[0], b.crop[0]), Math.max(a.crop[1], b.crop[1]), Math.min(a.crop[2], b.crop[2]), Math.min(a.crop[3], b.crop[3])];
  return box[2] > box[0] && box[3] > box[1] ? box : null;
}

/**
 * Centres of a gw x gh feature grid laid over a view, in view pixels: cell (r, c) covers
 * [c * W/gw, (c+1) * W/gw) x [r * H/gh, (r+1) * H/gh). Row-major, length gw * gh.
 */
export function gridCellCenters(g: Pick<ViewGeometry, 'width' | 'height'>, gw: number, gh = gw): Point[] {
  const out: Point[] = [];
  for (let r = 0; r < gh; r++) for (let c = 0; c < gw; c++) out.push([((c + 0.5) * g.width) / gw, ((r + 0.5) * g.height) / gh]);
  return out;
}

/** Cell index (row-major) of a view point on a gw x gh grid, or -1 outside the view. */
export function gridCellAt(g: Pick<ViewGeometry, 'width' | 'height'>, [x, y]: Point, gw: number, gh = gw): number {
  if (!(x >= 0 && x < g.width && y >= 0 && y < g.height)) return -1;
  return Math.floor((y * gh) / g.height) * gw + Math.floor((x * gw) / g.width);
}

/**
 * For every cell of view a's grid, the cell of view b's grid that contains the same original
 * point (its centre), or -1 where b does not see it. The geometric correspondence PixPro-style
 * and LC-loss-style methods need, already accounting for crops, scales and flips.
 */
export function correspondingCells(a: ViewGeometry, b: ViewGeometry, gridA: number, gridB = gridA): Int32Array {
  const centres = gridCellCenters(a, gridA);
  const out = new Int32Array(centres.length);
  centres.forEach((p, i) => (out[i] = gridCellAt(b, viewToView(a, b, p), gridB)));
  return out;
}

/** Centres of a view's grid cells in original-image coordinates (row-major). */
export function gridCentersInOriginal(g: ViewGeometry, gw: number, gh = gw): Point[] {
  return gridCellCenters(g, gw, gh).map((p) => viewToOriginal(g, p));
}

/**
 * PixPro's per-view coordinates (zdaxie/PixPro contrast/data/transform_coord.py): for an integer
 * crop (i, j, h, w) of a W x H image, [j/(W-1), i/(H-1), (j+w-1)/(W-1), (i+h-1)/(H-1)], with x0
 * and x1 swapped when flipped (the bin width then turns negative, which makes flips free).
 * Porting note: this frame measures from the centre of the first pixel to the centre of the
 * last one, so PixPro's bins span w-1 pixels, not w; keep it only to match PixPro exactly.
 */
export function pixproCoords(g: ViewGeometry): [number, number, number, number] {
  const [j, i, x1, y1] = g.crop;
  const W = g.imageWidth, H = g.imageHeight;
  const x0n = j / (W - 1), x1n = (x1 - 1) / (W - 1);
  const y0n = i / (H - 1), y1n = (y1 - 1) / (H - 1);
  return g.flipped ? [x1n, y0n, x0n, y1n] : [x0n, y0n, x1n, y1n];
}

/** PixPro's bin centres on a g x g grid, in its normalised frame: start + (idx + 0.5) * (end - start) / g. */
export function pixproBinCenters(coords: readonly number[], g: number): Point[] {
  const [x0, y0, x1, y1] = coords as [number, number, number, number];
  const out: Point[] = [];
  for (let r = 0; r < g; r++) for (let c = 0; c < g; c++) out.push([x0 + ((c + 0.5) * (x1 - x0)) / g, y0 + ((r + 0.5) * (y1 - y0)) / g]);
  return out;
}

/**
 * PixPro's positive-pair mask between two views' g x g bins: distance between bin centres,
 * divided by the larger of the two views' bin diagonals, below `posRatio` (0.7 in PixPro).
 * Returns a row-major (g*g) x (g*g) 0/1 matrix, rows = view a's bins.
 */
export function pixproPositiveMask(coordsA: readonly number[], coordsB: readonly number[], g: number, posRatio = 0.7): Uint8Array {
  const ca = pixproBinCenters(coordsA, g);
  const cb = pixproBinCenters(coordsB, g);
  const diag = (c: readonly number[]) => Math.hypot((c[2]! - c[0]!) / g, (c[3]! - c[1]!) / g);
  const maxDiag = Math.max(diag(coordsA), diag(coordsB));
  const out = new Uint8Array(ca.length * cb.length);
  ca.forEach((p, i) => cb.forEach((q, j) => (out[i * cb.length + j] = Math.hypot(p[0] - q[0], p[1] - q[1]) / maxDiag < posRatio ? 1 : 0)));
  return out;
}
