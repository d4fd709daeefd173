import { BadInputError } from '../../core/errors.js';
import { gaussianSmoothPlane, opencvRadius, scipyRadius } from './gaussian.js';
import type { RgbImage } from './raster.js';
import { argsortNonNegative } from './sorting.js';
import { UnionFind } from './union-find.js';

/** Float channels stored as separate planes (row-major), values in whatever range the caller chose. */
export interface PlanarImage {
  width: number;
  height: number;
  planes: Float64Array[];
}

/** A label map: labels 0..count-1, ordered by first appearance in raster order. */
export interface Segmentation {
  width: number;
  height: number;
  labels: Int32Array;
  count: number;
}

/**
 * Which reference's semantics to reproduce (docs/proposals.md has the full table):
 * - 'skimage': skimage.segmentation.felzenszwalb >= 0.13. uint8 input scaled to [0,1] and `scale`
 *   divided by 255; scipy Gaussian (truncate 4, reflect); 8-connected graph; merge iff
 *   cost < min(Int + k/|C|) with float32 thresholds; min_size pass over all edges in sorted order.
 * - 'opencv': cv::ximgproc GraphSegmentation (the FH inside OpenCV selective search). Values stay
 *   0..255; GaussianBlur (reflect101); 4-connected graph; merge iff w <= both thresholds; the
 *   small-region pass skips edges already merged and edges of weight 0.
 */
export type FelzenszwalbVariant = 'skimage' | 'opencv';

export interface FelzenszwalbOptions {
  /** FH's k, in 0..255 intensity units for both variants (skimage's `scale`, OpenCV's `k`). */
  scale?: number;
  sigma?: number;
  minSize?: number;
  variant?: FelzenszwalbVariant;
}

function planesFromRgb(image: RgbImage, divisor: number): PlanarImage {
  const n = image.width * image.height;
  const planes = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
  const d = image.data;
  for (let i = 0; i < n; i++) {
    planes[0]![i] = d[i * 3]! / divisor;
    planes[1]![i] = d[i * 3 + 1]! / divisor;
    planes[2]![i] = d[i * 3 + 2]! / divisor;
  }
  return { width: image.width, height: image.height, planes };
}

function isRgbImage(image: RgbImage | PlanarImage): image is RgbImage {
  return (image as RgbImage).data !== undefined;
}

function checkOptions(o: Required<FelzenszwalbOptions>): void {
  if (!(o.scale >= 0) || !Number.isFinite(o.scale)) throw new BadInputError(`must be a finite number >= 0 (got ${o.scale})`, 'felzenszwalb.scale');
  if (!(o.sigma >= 0) || !Number.isFinite(o.sigma)) throw new BadInputError(`must be a finite number >= 0 (got ${o.sigma})`, 'felzenszwalb.sigma');
  if (!Number.isInteger(o.minSize) || o.minSize < 0) throw new BadInputError(`must be an integer >= 0 (got ${o.minSize})`, 'felzenszwalb.minSize');
}

/**
 * The smoothed pixel graph with its edges in ascending weight order. It depends on the image,
 * sigma and the variant but not on k, so selective search builds it once per colour space and
 * segments it at every k.
 */
export interface SortedPixelGraph {
  width: number;
  height: number;
  variant: FelzenszwalbVariant;
  /** Edge endpoints and weights, already in sorted order (ties by construction order). */
  a: Int32Array;
  b: Int32Array;
  cost: Float64Array;
}

/** Smooth, build the variant's graph and sort its edges. */
export function buildSortedGraph(image: RgbImage | PlanarImage, variant: FelzenszwalbVariant, sigma: number): SortedPixelGraph {
  const skimage = variant === 'skimage';
  const planar = isRgbImage(image) ? planesFromRgb(image, skimage ? 255 : 1) : { ...image, planes: image.planes.map((p) => Float64Array.from(p)) };
  const { width, height, planes } = planar;
  if (width < 1 || height < 1 || planes.length === 0) throw new BadInputError(`empty image (${width}x${height}, ${planes.length} channels)`, 'felzenszwalb.image');
  for (const plane of planes) {
    if (skimage) gaussianSmoothPlane(plane, width, height, sigma, scipyRadius(sigma), 'reflect');
    else {
      // OpenCV clamps sigma <= 0 to 0.001 (no smoothing to speak of) and works in CV_32F.
      const s = Math.max(sigma, 0.001);
      gaussianSmoothPlane(plane, width, height, s, opencvRadius(s), 'reflect101');
      for (let i = 0; i < plane.length; i++) plane[i] = Math.fround(plane[i]!);
    }
  }
  const graph = skimage ? buildEightConnectedGraph(planes, width, height) : buildFourConnectedGraph(planes, width, height);
  const order = argsortNonNegative(graph.cost);
  // Permute once so the merge loops read the edges sequentially instead of through `order`.
  const a = new Int32Array(order.length);
  const b = new Int32Array(order.length);
  const cost = new Float64Array(order.length);
  for (let i = 0; i < order.length; i++) {
    const e = order[i]!;
    a[i] = graph.a[e]!;
    b[i] = graph.b[e]!;
    cost[i] = graph.cost[e]!;
  }
  return { width, height, variant, a, b, cost };
}

/**
 * Felzenszwalb-Huttenlocher graph segmentation. An RgbImage is interpreted as the reference would
 * interpret a uint8 array (skimage: /255; OpenCV: as-is); a PlanarImage is used as given, so
 * selective search can pass HSV/Lab planes in OpenCV's 0..255 units.
 */
export function felzenszwalb(image: RgbImage | PlanarImage, options: FelzenszwalbOptions = {}): Segmentation {
  const o = resolveOptions(options);
  return segmentSortedGraph(buildSortedGraph(image, o.variant, o.sigma), o.scale, o.minSize);
}

function resolveOptions(options: FelzenszwalbOptions): Required<FelzenszwalbOptions> {
  const opencv = options.variant === 'opencv';
  const o: Required<FelzenszwalbOptions> = {
    variant: options.variant ?? 'skimage',
    scale: options.scale ?? (opencv ? 300 : 1),
    sigma: options.sigma ?? (opencv ? 0.5 : 0.8),
    minSize: options.minSize ?? (opencv ? 100 : 20),
  };
  checkOptions(o);
  return o;
}

interface EdgeList {
  a: Int32Array;
  b: Int32Array;
  cost: Float64Array;
}
function distance(planes: Float64Array[], p: number, q: number): number {
  let s = 0;
  for (let c = 0; c < planes.length; c++) {
    const d = planes[c]![p]! - planes[c]![q]!;
    s += d * d;
  }
  return Math.sqrt(s);
}

/**
 * skimage's edge list: all right edges, then down, down-right, then the anti-diagonal pairs
 * ((y+1, x), (y, x+1)). The order matters only for ties.
 */
function buildEightConnectedGraph(planes: Float64Array[], width: number, height: number): EdgeList {
  const count = height * (width - 1) + (height - 1) * width + 2 * (height - 1) * (width - 1);
  const a = new Int32Array(count);
  const b = new Int32Array(count);
  const cost = new Float64Array(count);
  let e = 0;
  // One pass per neighbour offset; `dy`/`dx` select the partner of (y0 + y, x0 + x).
  const pass = (y0: number, dy: number, dx: number, xFrom: number, xTo: number, yTo: number) => {
    for (let y = 0; y < yTo; y++) {
      for (let x = xFrom; x < xTo; x++) {
        const p = (y + y0) * width + x;
        const q = (y + y0 + dy) * width + x + dx;
        a[e] = p;
        b[e] = q;
        cost[e++] = distance(planes, p, q);
      }
    }
  };
  pass(0, 0, 1, 0, width - 1, height); // right
  pass(0, 1, 0, 0, width, height - 1); // down
  pass(0, 1, 1, 0, width - 1, height - 1); // down-right
  pass(1, -1, 1, 0, width - 1, height - 1); // (y+1, x) with (y, x+1)
  return { a, b, cost };
}

/** OpenCV's 4-connected graph in float32 weights (each pair once; OpenCV stores it twice, which only reorders ties). */
function buildFourConnectedGraph(planes: Float64Array[], width: number, height: number): EdgeList {
  const count = height * (width - 1) + (height - 1) * width;
  const a = new Int32Array(count);
  const b = new Int32Array(count);
  const cost = new Float64Array(count);
  let e = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      if (x + 1 < width) {
        a[e] = p;
        b[e] = p + 1;
        cost[e++] = Math.fround(distance(planes, p, p + 1));
      }
      if (y + 1 < height) {
        a[e] = p;
        b[e] = p + width;
        cost[e++] = Math.fround(distance(planes, p, p + width));
      }
    }
  }
  return { a, b, cost };
}

/** FH merging at one k (in the 0..255 units of `scale`) over a pre-sorted graph. */
export function segmentSortedGraph(graph: SortedPixelGraph, scale: number, minSize: number): Segmentation {
  if (!(scale >= 0) || !Number.isFinite(scale)) throw new BadInputError(`must be a finite number >= 0 (got ${scale})`, 'felzenszwalb.scale');
  const { width, height, variant, a, b, cost } = graph;
  const n = width * height;
  const edges = cost.length;
  // skimage rescales k to the [0,1] value range it works in.
  const k = variant === 'skimage' ? scale / 255 : scale;
  const sets = new UnionFind(n);
  const size = new Int32Array(n).fill(1);
  // Int(C) + k/|C| per root. skimage stores the internal difference and rounds the sum to float32;
  // OpenCV stores the float32 threshold itself. Both start at k/1.
  const internal = new Float64Array(n);
  const strict = variant === 'skimage';
  const usedInMerge = variant === 'opencv' ? new Uint8Array(edges) : null;
  for (let e = 0; e < edges; e++) {
    const ra = sets.find(a[e]!);
    const rb = sets.find(b[e]!);
    if (ra === rb) continue;
    const w = cost[e]!;
    const thrA = Math.fround(internal[ra]! + k / size[ra]!);
    const thrB = Math.fround(internal[rb]! + k / size[rb]!);
    if (strict ? !(w < thrA && w < thrB) : !(w <= thrA && w <= thrB)) continue;
    const root = sets.unionRoots(ra, rb);
    size[root] = size[ra]! + size[rb]!;
    internal[root] = w;
    if (usedInMerge) usedInMerge[e] = 1;
  }
  if (minSize > 0) {
    for (let e = 0; e < edges; e++) {
      // OpenCV zeroes the weight of merged edges and then skips weight-0 edges here.
      if (usedInMerge && (usedInMerge[e] || cost[e] === 0)) continue;
      const ra = sets.find(a[e]!);
      const rb = sets.find(b[e]!);
      if (ra === rb || (size[ra]! >= minSize && size[rb]! >= minSize)) continue;
      const root = sets.unionRoots(ra, rb);
      size[root] = size[ra]! + size[rb]!;
    }
  }
  const { labels, count } = sets.labels();
  return { width, height, labels, count };
}
