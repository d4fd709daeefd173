/**
 * Separable Gaussian smoothing of one float plane, with the two border rules the references use:
 * - 'reflect'    = scipy.ndimage 'reflect' (half-sample symmetric: d c b a | a b c d), used by
 *                  skimage.filters.gaussian, hence by skimage's felzenszwalb;
 * - 'reflect101' = OpenCV BORDER_REFLECT_101 (d c b | a b c d), GaussianBlur's and Scharr's
 *                  default (OpenCV's float32 blur itself is in opencv-imgproc.ts).
 */
export type BorderMode = 'reflect' | 'reflect101';

/** Map an out-of-range index into [0, n) for the given border rule; works when the radius exceeds n. */
export function mirrorIndex(i: number, n: number, mode: BorderMode): number {
  if (i >= 0 && i < n) return i;
  if (n === 1) return 0;
  if (mode === 'reflect') {
    const period = 2 * n;
    let m = i % period;
    if (m < 0) m += period;
    return m < n ? m : period - 1 - m;
  }
  const period = 2 * n - 2;
  let m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

/** Normalised taps exp(-x^2 / 2 sigma^2) for x in [-radius, radius]. */
export function gaussianTaps(sigma: number, radius: number): Float64Array {
  const taps = new Float64Array(2 * radius + 1);
  let sum = 0;
  for (let x = -radius; x <= radius; x++) {
    const w = Math.exp((-0.5 * x * x) / (sigma * sigma));
    taps[x + radius] = w;
    sum += w;
  }
  for (let i = 0; i < taps.length; i++) taps[i]! /= sum;
  return taps;
}

/** scipy.ndimage.gaussian_filter's radius: int(truncate * sigma + 0.5) with truncate = 4. */
export function scipyRadius(sigma: number): number {
  return Math.trunc(4 * sigma + 0.5);
}

/** Smooth `plane` (width x height, row-major) in place: along x, then along y. */
export function gaussianSmoothPlane(plane: Float64Array, width: number, height: number, sigma: number, radius: number, mode: BorderMode): void {
  if (sigma <= 0 || radius <= 0) return;
  const taps = gaussianTaps(sigma, radius);
  const span = 2 * radius + 1;
  const longest = Math.max(width, height);
  const padded = new Float64Array(longest + 2 * radius);
  // rows
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let i = -radius; i < width + radius; i++) padded[i + radius] = plane[row + mirrorIndex(i, width, mode)]!;
    for (let x = 0; x < width; x++) {
      let acc = 0;
      for (let t = 0; t < span; t++) acc += taps[t]! * padded[x + t]!;
      plane[row + x] = acc;
    }
  }
  // columns
  for (let x = 0; x < width; x++) {
    for (let i = -radius; i < height + radius; i++) padded[i + radius] = plane[mirrorIndex(i, height, mode) * width + x]!;
    for (let y = 0; y < height; y++) {
      let acc = 0;
      for (let t = 0; t < span; t++) acc += taps[t]! * padded[y + t]!;
      plane[y * width + x] = acc;
    }
  }
}
