import { BadInputError } from '../../core/errors.js';
import { gaussianSmoothPlane, scipyRadius } from './gaussian.js';
import type { RgbImage } from './raster.js';
import { gaussianBlurF32 } from './opencv-imgproc.js';
import { argsortNonNegative } from './sorting.js';
import { stdSort } from './std-sort.js';
import { float32Bits, float32FromBits } from './float32.js';
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
  if (variant === 'opencv') {
    // an RgbImage is given to OpenCV as cv2.imread would hold it, B G R (the order of the float
    // sum in each edge weight, hence its last bit, depends on it)
    const planar = isRgbImage(image) ? planesFromRgb(image, 1) : image;
    return buildOpenCvGraph(isRgbImage(image) ? { ...planar, planes: [...planar.planes].reverse() } : planar, sigma);
  }
  const planar = isRgbImage(image) ? planesFromRgb(image, 255) : { ...image, planes: image.planes.map((p) => Float64Array.from(p)) };
  const { width, height, planes } = planar;
  if (width < 1 || height < 1 || planes.length === 0) throw new BadInputError(`empty image (${width}x${height}, ${planes.length} channels)`, 'felzenszwalb.image');
  for (const plane of planes) gaussianSmoothPlane(plane, width, height, sigma, scipyRadius(sigma), 'reflect');
  const graph = buildEightConnectedGraph(planes, width, height);
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
 * cv::ximgproc GraphSegmentation's graph, to the bit: the planes in CV_32F, GaussianBlur with
 * OpenCV's float kernel (sigma <= 0 becomes 0.001, i.e. no smoothing), then for every pixel in
 * raster order its up, left, down and right neighbours (so every pair twice) with the float32
 * Euclidean distance, sorted by the same std::sort (ties end up where OpenCV's end up).
 */
function buildOpenCvGraph(image: PlanarImage, sigma: number): SortedPixelGraph {
  const { width, height } = image;
  if (width < 1 || height < 1 || image.planes.length === 0) throw new BadInputError(`empty image (${width}x${height}, ${image.planes.length} channels)`, 'felzenszwalb.image');
  const s = sigma > 0 ? sigma : 0.001;
  const planes = image.planes.map((p) => gaussianBlurF32(Float32Array.from(p), width, height, s));
  const C = planes.length;
  // the weight of a pair does not depend on its direction: compute right and down once
  const right = new Float32Array(width * height);
  const down = new Float32Array(width * height);
  const weight = (p: number, q: number): number => {
    let total = 0;
    for (let c = 0; c < C; c++) {
      const d = Math.fround(planes[c]![p]! - planes[c]![q]!);
      total = Math.fround(total + Math.fround(d * d));
    }
    return Math.fround(Math.sqrt(total));
  };
  for (let p = 0, y = 0; y < height; y++) {
    for (let x = 0; x < width; x++, p++) {
      if (x + 1 < width) right[p] = weight(p, p + 1);
      if (y + 1 < height) down[p] = weight(p, p + width);
    }
  }
  // OpenCV's edge list: per pixel its up, left, down and right pair, i.e. every pair twice; the
  // pair's slot is 2p (right of p) or 2p + 1 (below p)
  const count = 2 * (height * (width - 1) + (height - 1) * width);
  const pairOf = new Int32Array(count);
  const keys = new Int32Array(count);
  let e = 0;
  for (let p = 0, y = 0; y < height; y++) {
    for (let x = 0; x < width; x++, p++) {
      if (y > 0) {
        pairOf[e] = 2 * (p - width) + 1;
        keys[e++] = float32Bits(down[p - width]!);
      }
      if (x > 0) {
        pairOf[e] = 2 * (p - 1);
        keys[e++] = float32Bits(right[p - 1]!);
      }
      if (y + 1 < height) {
        pairOf[e] = 2 * p + 1;
        keys[e++] = float32Bits(down[p]!);
      }
      if (x + 1 < width) {
        pairOf[e] = 2 * p;
        keys[e++] = float32Bits(right[p]!);
      }
    }
  }
  // weights are >= 0, so their float32 bit patterns sort like the weights
  stdSort(keys, pairOf);
  // A pair's second copy can never merge: where its first copy failed (a threshold below w, or
  // both sets already >= min size) nothing changes before the second, since the sets involved can
  // only grow by merging along edges of weight >= w, which needs the same thresholds. So the
  // merge passes only need each pair's first position in OpenCV's order.
  const seen = new Uint8Array(2 * width * height);
  const half = count / 2;
  const a = new Int32Array(half);
  const b = new Int32Array(half);
  const cost = new Float64Array(half);
  let j = 0;
  for (let i = 0; i < count; i++) {
    const pair = pairOf[i]!;
    if (seen[pair]) continue;
    seen[pair] = 1;
    const p = pair >> 1;
    a[j] = p;
    b[j] = pair & 1 ? p + width : p + 1;
    cost[j++] = float32FromBits(keys[i]!);
  }
  return { width, height, variant: 'opencv', a, b, cost };
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

/** FH merging at one k (in the 0..255 units of `scale`) over a pre-sorted graph. */
export function segmentSortedGraph(graph: SortedPixelGraph, scale: number, minSize: number): Segmentation {
  if (!(scale >= 0) || !Number.isFinite(scale)) throw new BadInputError(`must be a finite number >= 0 (got ${scale})`, 'felzenszwalb.scale');
  if (graph.variant === 'opencv') return segmentOpenCv(graph, scale, minSize);
  const { width, height, a, b, cost } = graph;
  const n = width * height;
  const edges = cost.length;
  // skimage rescales k to the [0,1] value range it works in, keeps Int(C) and compares with
  // float32(Int + k/|C|).
  const k = scale / 255;
  const sets = new UnionFind(n);
  const size = new Int32Array(n).fill(1);
  const internal = new Float64Array(n);
  for (let e = 0; e < edges; e++) {
    const ra = sets.find(a[e]!);
    const rb = sets.find(b[e]!);
    if (ra === rb) continue;
    const w = cost[e]!;
    const thrA = Math.fround(internal[ra]! + k / size[ra]!);
    const thrB = Math.fround(internal[rb]! + k / size[rb]!);
    if (!(w < thrA && w < thrB)) continue;
    const root = sets.unionRoots(ra, rb);
    size[root] = size[ra]! + size[rb]!;
    internal[root] = w;
  }
  if (minSize > 0) {
    for (let e = 0; e < edges; e++) {
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

/**
 * GraphSegmentationImpl::segmentGraph + filterSmallAreas + finalMapping: thresholds are float32
 * `w + k/|C|` (starting at k), merge iff w <= both; a merged edge's weight becomes 0, and the
 * small-region pass skips weight-0 edges; sets are joined by size (which root survives does not
 * change the partition); labels are numbered by first appearance in raster order.
 */
function segmentOpenCv(graph: SortedPixelGraph, scale: number, minSize: number): Segmentation {
  const { width, height, a, b, cost } = graph;
  const n = width * height;
  const edges = cost.length;
  const k = Math.fround(scale);
  const parent = new Int32Array(n);
  for (let i = 0; i < n; i++) parent[i] = i;
  const size = new Int32Array(n).fill(1);
  const threshold = new Float32Array(n).fill(k);
  const find = (i: number): number => {
    while (parent[i] !== i) {
      const g = parent[parent[i]!]!;
      parent[i] = g;
      i = g;
    }
    return i;
  };
  const live = new Uint8Array(edges); // 1 = a weight > 0 the small-region pass still looks at
  for (let e = 0; e < edges; e++) {
    const w = cost[e]!;
    const ra = find(a[e]!);
    const rb = find(b[e]!);
    if (ra === rb) {
      live[e] = w > 0 ? 1 : 0;
      continue;
    }
    if (!(w <= threshold[ra]! && w <= threshold[rb]!)) {
      live[e] = w > 0 ? 1 : 0;
      continue;
    }
    const root = size[ra]! < size[rb]! ? rb : ra;
    parent[root === ra ? rb : ra] = root;
    size[root] = size[ra]! + size[rb]!;
    threshold[root] = Math.fround(w + Math.fround(k / size[root]!));
  }
  if (minSize > 0) {
    for (let e = 0; e < edges; e++) {
      if (!live[e]) continue;
      const ra = find(a[e]!);
      const rb = find(b[e]!);
      if (ra === rb || (size[ra]! >= minSize && size[rb]! >= minSize)) continue;
      const root = size[ra]! < size[rb]! ? rb : ra;
      parent[root === ra ? rb : ra] = root;
      size[root] = size[ra]! + size[rb]!;
    }
  }
  const labels = new Int32Array(n);
  const labelOf = new Int32Array(n).fill(-1);
  let count = 0;
  for (let i = 0; i < n; i++) {
    const r = find(i);
    if (labelOf[r] === -1) labelOf[r] = count++;
    labels[i] = labelOf[r]!;
  }
  return { width, height, labels, count };
}
