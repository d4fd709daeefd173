import { BadInputError } from '../../core/errors.js';
import type { Segmentation } from './felzenszwalb.js';
import { gaussianSmoothPlane, scipyRadius } from './gaussian.js';
import { assertRgbImage, type RgbImage } from './raster.js';
import { CENTRE, SUMS, slicWorkspace, WINDOW, type SlicWorkspace } from './slic-kernel.js';

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

/*
 * Speed (issue #18, docs/PERFORMANCE.md): every per-pixel loop (the byte scan, rgb2lab, the k-means
 * passes, the connectivity pass) runs in slic-kernel.ts's WebAssembly module, the k-means distances
 * two pixels at a time (SIMD); what is left here is per-byte or per-centre work. Each WebAssembly
 * function has a JavaScript twin there (the fallback, and what the tests compare it with). Features
 * are float64 planes like skimage's, and every value is formed with skimage's operations in
 * skimage's order, so label maps stay identical.
 */

/** skimage's sRGB decoding of a value in [0,1]. */
function srgbToLinear(c: number): number {
  return c > 0.04045 ? Math.pow((c + 0.055) / 1.055, 2.4) : c / 12.92;
}

/**
 * The value skimage's slic holds for one byte of channel c before Lab: img_as_float (v/255),
 * optionally R2O's ImageNet normalisation, then the global min-max rescale to [0,1].
 */
function byteValue(byte: number, c: number, imagenet: boolean): number {
  const v = byte / 255;
  return imagenet ? (v - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]! : v;
}

/**
 * Every step before Lab is a per-channel function of one byte, so it is tabulated (256 entries per
 * channel, table[c * 256 + byte]) with exactly the arithmetic skimage applies per pixel; skimage's
 * global min and max are the extremes of that function over the bytes that occur.
 */
function byteTables(seen: Uint8Array, imagenet: boolean, convert: boolean): Float64Array {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < 768; i++) {
    if (seen[i] === 0) continue;
    const v = byteValue(i & 255, i >> 8, imagenet);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const table = new Float64Array(768);
  for (let i = 0; i < 768; i++) {
    const v = byteValue(i & 255, i >> 8, imagenet);
    const rescaled = hi > lo ? (v - lo) / (hi - lo) : v - lo;
    table[i] = convert ? srgbToLinear(rescaled) : rescaled;
  }
  return table;
}

/** convert2lab = false: the rescaled values themselves, times `ratio`. */
function plainFeatures(data: Uint8Array, table: Float64Array, ratio: number, r: Float64Array, g: Float64Array, b: Float64Array): void {
  for (let p = 0, i = 0; i < data.length; p++, i += 3) {
    r[p] = table[data[i]!]! * ratio;
    g[p] = table[256 + data[i + 1]!]! * ratio;
    b[p] = table[512 + data[i + 2]!]! * ratio;
  }
}

/** The scaled features slic clusters, written into the workspace's planes. */
function slicFeatures(image: RgbImage, convert: boolean, imagenet: boolean, sigma: number, ratio: number, ws: SlicWorkspace): void {
  const { planes } = ws;
  const table = byteTables(ws.bytesSeen(image.data), imagenet, convert);
  const scale = sigma > 0 ? 1 : ratio; // skimage smooths the Lab image, then scales it
  if (convert) ws.labFeatures(image.data, table, scale);
  else plainFeatures(image.data, table, scale, ...planes);
  if (sigma > 0) {
    for (const plane of planes) {
      gaussianSmoothPlane(plane, image.width, image.height, sigma, scipyRadius(sigma), 'reflect');
      for (let p = 0; p < plane.length; p++) plane[p]! *= ratio;
    }
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

/** The centres' +-2S windows [yMin, yMax) x [xMin, xMax) as skimage truncates them; empty for a NaN centre. */
function centreWindows(centres: Float64Array, windows: Int32Array, windowY: number, windowX: number, height: number, width: number): void {
  const K = centres.length / CENTRE;
  for (let k = 0; k < K; k++) {
    const ky = centres[k * CENTRE]!;
    const kx = centres[k * CENTRE + 1]!;
    const w = k * WINDOW;
    if (ky !== ky) {
      // an emptied centre (0/0 in skimage) never wins again
      windows[w] = 0;
      windows[w + 1] = 0;
      continue;
    }
    windows[w] = Math.trunc(Math.max(ky - 2 * windowY, 0));
    windows[w + 1] = Math.trunc(Math.min(ky + 2 * windowY + 1, height));
    windows[w + 2] = Math.trunc(Math.max(kx - 2 * windowX, 0));
    windows[w + 3] = Math.trunc(Math.min(kx + 2 * windowX + 1, width));
  }
}

/** centre = sum / count, divided as skimage does (0 / 0 = NaN for a centre that lost all its pixels). */
function centresFromSums(sums: Float64Array, centres: Float64Array): void {
  const K = centres.length / CENTRE;
  for (let k = 0; k < K; k++) {
    const count = sums[k * SUMS]!;
    for (let j = 0; j < CENTRE; j++) centres[k * CENTRE + j] = sums[k * SUMS + 1 + j]! / count;
  }
}

/**
 * SLIC superpixels with scikit-image's semantics (0.19 to 0.26 agree here): float image min-max
 * rescaled over all channels, rgb2lab, seeds on regular_grid, distance sum(dcolour^2)/m^2 +
 * sum(dxy^2)/S^2 inside a +-2S window, earlier centre wins ties, centres start with colour 0 (so the
 * first pass is purely spatial), then the 4-connected connectivity pass with its min/max size rules.
 * `kernel.simd = false` runs the JavaScript twins instead of the WebAssembly kernel (tests, bench).
 */
export function slic(image: RgbImage, options: SlicOptions = {}, kernel: { simd?: boolean } = {}): Segmentation {
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

  // seeds
  const grid = regularGrid(height, width, nSegments);
  const starts = grid ? grid.starts : [0, 0];
  const strides = grid ? grid.steps : [1, 1];
  const K = Math.max(0, Math.ceil((height - starts[0]!) / strides[0]!)) * Math.max(0, Math.ceil((width - starts[1]!) / strides[1]!));
  const ws = slicWorkspace(width, height, K, kernel);
  slicFeatures(image, options.convert2lab ?? true, options.imagenetNormalize ?? false, sigma, 1 / compactness, ws);
  const { centres, windows, sums, nearest, previous } = ws;
  let k = 0; // centres start with colour 0, as in skimage
  for (let y = starts[0]!; y < height; y += strides[0]!) {
    for (let x = starts[1]!; x < width; x += strides[1]!, k++) {
      centres[k * CENTRE] = y;
      centres[k * CENTRE + 1] = x;
    }
  }
  // skimage: step = max over the (z, y, x) slice steps, where z's step is 1
  const step = Math.max(1, strides[0]!, strides[1]!);
  const spatialWeight = 1 / (step * step);
  // skimage's search window comes from a second regular_grid call made with the number of seeds
  // actually placed (e.g. 96 for n=100 on 300x200), so its half-width can exceed the `step` used
  // in the distance weight (25 vs 24 there).
  const windowGrid = regularGrid(height, width, K);
  const windowY = windowGrid ? windowGrid.steps[0] : 1;
  const windowX = windowGrid ? windowGrid.steps[1] : 1;
  previous.fill(-1);
  for (let iter = 0; iter < maxNumIter; iter++) {
    centreWindows(centres, windows, windowY, windowX, height, width);
    const last = iter === maxNumIter - 1; // the last pass's centres are not needed
    sums.fill(0);
    const changed = ws.assignPass(spatialWeight, !last);
    // Same labels as the previous pass give the same centres, so every later pass is identical.
    if (last || (!changed && iter > 0)) break;
    centresFromSums(sums, centres);
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
  return { width, height, ...ws.enforceConnectivity(minSize, maxSize, startLabel) };
}
