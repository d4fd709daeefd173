import { BadInputError } from '../../core/errors.js';
import type { Segmentation } from './felzenszwalb.js';
import { gaussianSmoothPlane, scipyRadius } from './gaussian.js';
import { assertRgbImage, type RgbImage } from './raster.js';

export interface SlicOptions {
  nSegments?: number;
  /** In Lab units when convert2lab (skimage's default 10); ~0.1 is the comparable scale without Lab. */
  compactness?: number;
  maxNumIter?: number;
  /** Gaussian pre-smoothing (scipy reflect, truncate 4); 0 = none, skimage's default. */
  sigma?: number;
  convert2lab?: boolean;
  enforceConnectivity?: boolean;
  minSizeFactor?: number;
  maxSizeFactor?: number;
  /** skimage defaults to 1; R2O (and densepipe's presets) use 0. */
  startLabel?: 0 | 1;
  /**
   * Feed the image the way R2O does: ImageNet mean/std normalised per channel before skimage's
   * global min-max rescale. That rescale keeps the per-channel scaling, so the result differs from
   * a plain [0,1] image.
   */
  imagenetNormalize?: boolean;
}

const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/** skimage's sRGB decoding of a value in [0,1]. */
function srgbToLinear(c: number): number {
  return c > 0.04045 ? Math.pow((c + 0.055) / 1.055, 2.4) : c / 12.92;
}

/** The rest of skimage rgb2lab (D65, 2 degree observer), on linear-RGB planes, in place. */
function linearRgbToLabPlanes(planes: Float64Array[]): void {
  const [r, g, b] = planes as [Float64Array, Float64Array, Float64Array];
  const f = (t: number) => (t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116);
  for (let i = 0; i < r.length; i++) {
    const R = r[i]!;
    const G = g[i]!;
    const B = b[i]!;
    const x = f((0.412453 * R + 0.35758 * G + 0.180423 * B) / 0.95047);
    const y = f(0.212671 * R + 0.71516 * G + 0.072169 * B);
    const z = f((0.019334 * R + 0.119193 * G + 0.950227 * B) / 1.08883);
    r[i] = 116 * y - 16;
    g[i] = 500 * (x - y);
    b[i] = 200 * (y - z);
  }
}

/**
 * skimage.util.regular_grid for the (1, H, W) volume slic uses: returns [start, step] per axis of
 * (H, W). Equal steps of (H*W/n)^(1/2) unless an axis is shorter than the step, in which case the
 * short axis gets a step equal to its length and the rest is spread over the other axis.
 */
export function regularGrid(height: number, width: number, n: number): { starts: [number, number]; steps: [number, number] } | null {
  const shape = [1, height, width];
  const space = height * width;
  if (space <= n) return null; // every pixel is a seed
  const sortedIdx = [0, 1, 2].sort((a, b) => shape[a]! - shape[b]! || a - b);
  const sorted = sortedIdx.map((i) => shape[i]!);
  // the volume is (1, H, W): the formula is applied in 3-D exactly as skimage does
  const steps = [0, 1, 2].map(() => Math.pow(space / n, 1 / 3));
  if (sorted.some((s, i) => s < steps[i]!)) {
    for (let dim = 0; dim < 3; dim++) {
      steps[dim] = sorted[dim]!;
      const rest = sorted.slice(dim + 1).reduce((a, b) => a * b, 1);
      for (let j = dim + 1; j < 3; j++) steps[j] = Math.pow(rest / n, 1 / (3 - dim - 1));
      if (sorted.every((s, i) => s >= steps[i]!)) break;
    }
  }
  const starts = steps.map((s) => Math.floor(s / 2));
  const rounded = steps.map((s) => Math.round(s));
  const byAxis = (axis: number) => sortedIdx.indexOf(axis);
  return {
    starts: [starts[byAxis(1)]!, starts[byAxis(2)]!],
    steps: [rounded[byAxis(1)]!, rounded[byAxis(2)]!],
  };
}

/**
 * SLIC superpixels with scikit-image's semantics (>= 0.20): float image min-max rescaled over all
 * channels, rgb2lab, seeds on regular_grid, distance sum(dcolour^2)/m^2 + sum(dxy^2)/S^2 inside a
 * +-2S window, earlier centre wins ties, centres start with colour 0 (so the first pass is purely
 * spatial), then the 4-connected connectivity pass with its min/max size rules.
 */
export function slic(image: RgbImage, options: SlicOptions = {}): Segmentation {
  assertRgbImage(image, 'slic.image');
  const nSegments = options.nSegments ?? 100;
  const compactness = options.compactness ?? 10;
  const maxNumIter = options.maxNumIter ?? 10;
  const sigma = options.sigma ?? 0;
  if (!Number.isInteger(nSegments) || nSegments < 1) throw new BadInputError(`must be an integer >= 1 (got ${nSegments})`, 'slic.nSegments');
  if (!(compactness > 0)) throw new BadInputError(`must be > 0 (got ${compactness})`, 'slic.compactness');
  if (!Number.isInteger(maxNumIter) || maxNumIter < 0) throw new BadInputError(`must be an integer >= 0 (got ${maxNumIter})`, 'slic.maxNumIter');
  const { width, height } = image;
  const n = width * height;
  // Every step before Lab is a per-channel function of one byte, so it is tabulated (256 entries
  // per channel) with exactly the arithmetic skimage applies per pixel.
  const value = (byte: number, c: number) => {
    const v = byte / 255;
    return options.imagenetNormalize ? (v - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]! : v;
  };
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < n * 3; i++) {
    const v = value(image.data[i]!, i % 3);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const rescaled = (byte: number, c: number) => (hi > lo ? (value(byte, c) - lo) / (hi - lo) : value(byte, c) - lo);
  const convert = options.convert2lab ?? true;
  const tables = [0, 1, 2].map((c) => Float64Array.from({ length: 256 }, (_, byte) => (convert ? srgbToLinear(rescaled(byte, c)) : rescaled(byte, c))));
  const planes = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) planes[c]![i] = tables[c]![image.data[i * 3 + c]!]!;
  }
  if (convert) linearRgbToLabPlanes(planes);
  if (sigma > 0) for (const p of planes) gaussianSmoothPlane(p, width, height, sigma, scipyRadius(sigma), 'reflect');
  const ratio = 1 / compactness;
  for (const p of planes) for (let i = 0; i < n; i++) p[i]! *= ratio;

  // seeds
  const grid = regularGrid(height, width, nSegments);
  const seedY: number[] = [];
  const seedX: number[] = [];
  const starts = grid ? grid.starts : [0, 0];
  const strides = grid ? grid.steps : [1, 1];
  for (let y = starts[0]!; y < height; y += strides[0]!) for (let x = starts[1]!; x < width; x += strides[1]!) (seedY.push(y), seedX.push(x));
  const K = seedY.length;
  // skimage: step = max over the (z, y, x) slice steps, where z's step is 1
  const step = Math.max(1, strides[0]!, strides[1]!);
  const spatialWeight = 1 / (step * step);
  // skimage's search window comes from a second regular_grid call made with the number of seeds
  // actually placed (e.g. 96 for n=100 on 300x200), so its half-width can exceed the `step` used
  // in the distance weight (25 vs 24 there).
  const windowGrid = regularGrid(height, width, K);
  const windowY = windowGrid ? windowGrid.steps[0] : 1;
  const windowX = windowGrid ? windowGrid.steps[1] : 1;
  const cy = Float64Array.from(seedY);
  const cx = Float64Array.from(seedX);
  const cc = [new Float64Array(K), new Float64Array(K), new Float64Array(K)];
  const nearest = new Int32Array(n);
  const distance = new Float64Array(n);
  const [p0, p1, p2] = planes as [Float64Array, Float64Array, Float64Array];
  const counts = new Float64Array(K);
  for (let iter = 0; iter < maxNumIter; iter++) {
    distance.fill(Number.MAX_VALUE);
    let changed = false;
    for (let k = 0; k < K; k++) {
      const ky = cy[k]!;
      const kx = cx[k]!;
      if (Number.isNaN(ky)) continue; // an emptied centre (0/0 in skimage) never wins again
      const c0 = cc[0]![k]!;
      const c1 = cc[1]![k]!;
      const c2 = cc[2]![k]!;
      const yMin = Math.trunc(Math.max(ky - 2 * windowY, 0));
      const yMax = Math.trunc(Math.min(ky + 2 * windowY + 1, height));
      const xMin = Math.trunc(Math.max(kx - 2 * windowX, 0));
      const xMax = Math.trunc(Math.min(kx + 2 * windowX + 1, width));
      for (let y = yMin; y < yMax; y++) {
        const dy = (ky - y) * (ky - y);
        const row = y * width;
        for (let x = xMin; x < xMax; x++) {
          const p = row + x;
          const d0 = p0[p]! - c0;
          const d1 = p1[p]! - c1;
          const d2 = p2[p]! - c2;
          // same association as skimage: spatial + ((d0^2 + d1^2) + d2^2)
          const d = (dy + (kx - x) * (kx - x)) * spatialWeight + (d0 * d0 + d1 * d1 + d2 * d2);
          if (distance[p]! > d) {
            if (nearest[p] !== k) changed = true;
            nearest[p] = k;
            distance[p] = d;
          }
        }
      }
    }
    // Same labels as the previous pass give the same centres, so every later pass is identical.
    if (!changed && iter > 0) break;
    counts.fill(0);
    cy.fill(0);
    cx.fill(0);
    for (const c of cc) c.fill(0);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const p = y * width + x;
        const k = nearest[p]!;
        counts[k]!++;
        cy[k]! += y;
        cx[k]! += x;
        cc[0]![k]! += p0[p]!;
        cc[1]![k]! += p1[p]!;
        cc[2]![k]! += p2[p]!;
      }
    }
    for (let k = 0; k < K; k++) {
      const inv = 1 / counts[k]!; // Infinity for an empty centre: 0 * Inf = NaN, as in skimage
      cy[k]! *= inv;
      cx[k]! *= inv;
      for (const c of cc) c[k]! *= inv;
    }
  }
  const startLabel = options.startLabel ?? 0;
  if (!(options.enforceConnectivity ?? true)) {
    // skimage returns the centre index itself: ids can have gaps where a centre lost all pixels
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) labels[i] = nearest[i]! + startLabel;
    return { width, height, labels, count: K };
  }
  const segmentSize = n / K;
  const minSize = Math.trunc((options.minSizeFactor ?? 0.5) * segmentSize);
  const maxSize = Math.trunc((options.maxSizeFactor ?? 3) * segmentSize);
  return enforceConnectivity(nearest, width, height, minSize, maxSize, startLabel);
}

/**
 * skimage's _enforce_label_connectivity_cython: raster scan, 4-connected BFS per component that
 * stops growing at maxSize (so a huge component is split), components below minSize take the label
 * of the last already-labelled neighbour met during the BFS. A small component with no such
 * neighbour keeps the current label without advancing it, so the next component reuses that id
 * (skimage issue #8295); this only happens for the first component scanned.
 */
function enforceConnectivity(segments: Int32Array, width: number, height: number, minSize: number, maxSize: number, startLabel: number): Segmentation {
  const n = width * height;
  const final = new Int32Array(n); // 0 = not yet visited; labels are stored 1-based
  const queue = new Int32Array(Math.max(1, maxSize));
  let currentLabel = 1;
  for (let start = 0; start < n; start++) {
    if (final[start]! > 0) continue;
    const label = segments[start]!;
    let adjacent = 0;
    final[start] = currentLabel;
    queue[0] = start;
    let size = 1;
    let visited = 0;
    while (visited < size && size < maxSize) {
      const p = queue[visited]!;
      const x = p % width;
      for (let dir = 0; dir < 4; dir++) {
        // skimage's neighbour order: x+1, x-1, y+1, y-1
        const q = dir === 0 ? (x + 1 < width ? p + 1 : -1) : dir === 1 ? (x > 0 ? p - 1 : -1) : dir === 2 ? (p + width < n ? p + width : -1) : p - width;
        if (q < 0) continue;
        if (segments[q] === label && final[q] === 0) {
          final[q] = currentLabel;
          queue[size++] = q;
          if (size >= maxSize) break;
        } else if (final[q]! > 0 && final[q] !== currentLabel) {
          adjacent = final[q]!;
        }
      }
      visited++;
    }
    if (size < minSize) {
      const target = adjacent > 0 ? adjacent : currentLabel;
      for (let i = 0; i < size; i++) final[queue[i]!] = target;
    } else {
      currentLabel++;
    }
  }
  const labels = new Int32Array(n);
  let maxLabel = 0;
  for (let i = 0; i < n; i++) {
    labels[i] = final[i]! - 1 + startLabel;
    if (final[i]! > maxLabel) maxLabel = final[i]!;
  }
  return { width, height, labels, count: maxLabel };
}
