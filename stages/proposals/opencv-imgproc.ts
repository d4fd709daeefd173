import { f32, fmaF32, roundHalfEven } from './float32.js';
import { mirrorIndex } from './gaussian.js';

/**
 * The few OpenCV 4.6 imgproc operations selective search and DETReg's preset call, reproduced to
 * the bit (modules/imgproc/src: smooth.dispatch.cpp + filter.simd.hpp, imgwarp.cpp, resize.cpp):
 * - gaussianBlurF32: cv::GaussianBlur on a CV_32F image, as FH pre-smooths;
 * - scharr8u: cv::Scharr(CV_8U -> CV_32F), reflect-101 (integer-valued, so exact in any order);
 * - warpAffine8u / warpAffine32f: cv::warpAffine, INTER_LINEAR, BORDER_CONSTANT 0, one channel;
 * - resizeLinear8u: cv::resize(..., INTER_LINEAR) on 8-bit images.
 *
 * Float kernels follow the AVX2+FMA3 code path OpenCV dispatches to on current x86-64 CPUs (every
 * multiply-add fused); the fixtures were made on such a CPU (test/fixtures/proposals/make_opencv46.py).
 */

/** cv::getGaussianKernel(n, sigma, CV_32F) for sigma > 0 (getGaussianKernelBitExact, then (float)). */
export function gaussianKernelF32(n: number, sigma: number): Float32Array {
  const scale2X = -0.125 / (sigma * sigma);
  const half = (n - 1) >> 1;
  const values = new Float64Array(half);
  let sum = 0;
  for (let i = 0, x = 1 - n; i < half; i++, x += 2) {
    values[i] = Math.exp(x * x * scale2X);
    sum += values[i]!;
  }
  sum *= 2;
  sum += 1;
  if ((n & 1) === 0) sum += 1;
  const mul = 1 / sum;
  const out = new Float32Array(n);
  for (let i = 0; i < half; i++) out[i] = out[n - 1 - i] = values[i]! * mul;
  out[half] = mul;
  if ((n & 1) === 0) out[half + 1] = mul;
  return out;
}

/** cv::GaussianBlur's kernel size for a float image and ksize (0, 0): cvRound(sigma*8 + 1) | 1. */
export function gaussianKsizeF32(sigma: number): number {
  return roundHalfEven(sigma * 8 + 1) | 1;
}

/**
 * cv::GaussianBlur(src, dst, Size(0, 0), sigma, sigma) for one CV_32F plane, BORDER_REFLECT_101:
 * a row pass `s = k0*x0; s = fma(x_k, k_k, s)` then, the kernel being symmetric, a column pass
 * `s = ky0*c; s = fma(x_{+k} + x_{-k}, ky_k, s)` (RowVec_32f / SymmColumnVec_32f with FMA3).
 */
export function gaussianBlurF32(plane: Float32Array, width: number, height: number, sigma: number): Float32Array {
  let kw = gaussianKsizeF32(sigma);
  let kh = kw;
  if (height === 1) kh = 1;
  if (width === 1) kw = 1;
  if (kw === 1 && kh === 1) return Float32Array.from(plane);
  const kx = gaussianKernelF32(kw, sigma);
  const ky = kh === kw ? kx : gaussianKernelF32(kh, sigma);
  const rx = kw >> 1;
  const ry = kh >> 1;
  const rows = new Float32Array(width * height);
  const padded = new Float32Array(width + 2 * rx);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let i = -rx; i < width + rx; i++) padded[i + rx] = plane[row + mirrorIndex(i, width, 'reflect101')]!;
    for (let x = 0; x < width; x++) {
      let s = f32(kx[0]! * padded[x]!);
      for (let k = 1; k < kw; k++) s = fmaF32(padded[x + k]!, kx[k]!, s);
      rows[row + x] = s;
    }
  }
  if (ry === 0) return rows;
  const out = new Float32Array(width * height);
  const rowOf = new Int32Array(height + 2 * ry);
  for (let i = -ry; i < height + ry; i++) rowOf[i + ry] = mirrorIndex(i, height, 'reflect101') * width;
  const c0 = ky[ry]!;
  for (let y = 0; y < height; y++) {
    const centre = rowOf[y + ry]!;
    for (let x = 0; x < width; x++) {
      let s = f32(c0 * rows[centre + x]!);
      for (let k = 1; k <= ry; k++) s = fmaF32(f32(rows[rowOf[y + ry + k]! + x]! + rows[rowOf[y + ry - k]! + x]!), ky[ry + k]!, s);
      out[y * width + x] = s;
    }
  }
  return out;
}

// ---- cv::Scharr(src8u, dst, CV_32F, dx, dy), BORDER_REFLECT_101 ----

/** Scharr derivative of an 8-bit plane: dx (3, 10, 3 smoothing down the columns) or dy. Integer-valued, hence exact. */
export function scharr8u(plane: Uint8Array, width: number, height: number, dir: 'x' | 'y'): Float32Array {
  const out = new Float32Array(width * height);
  const xm = new Int32Array(width);
  const xp = new Int32Array(width);
  for (let x = 0; x < width; x++) {
    xm[x] = mirrorIndex(x - 1, width, 'reflect101');
    xp[x] = mirrorIndex(x + 1, width, 'reflect101');
  }
  for (let y = 0; y < height; y++) {
    const rm = mirrorIndex(y - 1, height, 'reflect101') * width;
    const r0 = y * width;
    const rp = mirrorIndex(y + 1, height, 'reflect101') * width;
    if (dir === 'x') {
      for (let x = 0; x < width; x++) {
        const a = xm[x]!;
        const b = xp[x]!;
        out[r0 + x] = 3 * (plane[rm + b]! - plane[rm + a]!) + 10 * (plane[r0 + b]! - plane[r0 + a]!) + 3 * (plane[rp + b]! - plane[rp + a]!);
      }
    } else {
      for (let x = 0; x < width; x++) {
        const a = xm[x]!;
        const b = xp[x]!;
        out[r0 + x] = 3 * (plane[rp + a]! - plane[rm + a]!) + 10 * (plane[rp + x]! - plane[rm + x]!) + 3 * (plane[rp + b]! - plane[rm + b]!);
      }
    }
  }
  return out;
}

// ---- cv::warpAffine, INTER_LINEAR, BORDER_CONSTANT (0), one channel ----

const INTER_BITS = 5;
const INTER_TAB_SIZE = 1 << INTER_BITS;
const AB_BITS = 10;
const REMAP_COEF_BITS = 15;
const REMAP_COEF_SCALE = 1 << REMAP_COEF_BITS;

/**
 * initInterTab2D(INTER_LINEAR): 32x32 sub-pixel positions, 4 weights each, float and 15-bit fixed
 * point. The fixed-point sums are corrected to 32768 by OpenCV's loop written for kernels of 4+
 * taps, which for 2x2 inspects the last weight and three slots of the next (not yet filled, so 0)
 * entry: a deficit is added to the last weight, an excess is written to a slot the next entry
 * overwrites. Reproduced as such.
 */
const BILINEAR = (() => {
  const oneD = new Float32Array(2 * INTER_TAB_SIZE);
  const scale = f32(1 / INTER_TAB_SIZE);
  for (let i = 0; i < INTER_TAB_SIZE; i++) {
    const x = f32(i * scale);
    oneD[2 * i] = f32(1 - x);
    oneD[2 * i + 1] = x;
  }
  const n = INTER_TAB_SIZE * INTER_TAB_SIZE;
  const tab = new Float32Array(n * 4);
  const itab = new Int16Array(n * 4 + 4); // + the slots past the last entry
  for (let i = 0; i < INTER_TAB_SIZE; i++) {
    for (let j = 0; j < INTER_TAB_SIZE; j++) {
      const o = (i * INTER_TAB_SIZE + j) * 4;
      let isum = 0;
      for (let k1 = 0; k1 < 2; k1++) {
        const vy = oneD[i * 2 + k1]!;
        for (let k2 = 0; k2 < 2; k2++) {
          const v = f32(vy * oneD[j * 2 + k2]!);
          tab[o + k1 * 2 + k2] = v;
          const q = roundHalfEven(f32(v * REMAP_COEF_SCALE));
          itab[o + k1 * 2 + k2] = q > 32767 ? 32767 : q < -32768 ? -32768 : q;
          isum += itab[o + k1 * 2 + k2]!;
        }
      }
      if (isum !== REMAP_COEF_SCALE) {
        const diff = isum - REMAP_COEF_SCALE;
        let m = 3;
        let M = 3;
        for (const off of [3, 4, 5, 6]) {
          if (itab[o + off]! < itab[o + m]!) m = off;
          else if (itab[o + off]! > itab[o + M]!) M = off;
        }
        if (diff < 0) itab[o + M] = itab[o + M]! - diff;
        else itab[o + m] = itab[o + m]! - diff;
      }
    }
  }
  return { tab, itab };
})();

/** A 2x3 affine matrix, row-major [m0 m1 m2; m3 m4 m5], float64 like cv::Matx23d. */
export type Affine = [number, number, number, number, number, number];

/** cv::getRotationMatrix2D(center, angle, scale). */
export function rotationMatrix2D(cx: number, cy: number, angleDegrees: number, scale: number): Affine {
  const angle = (angleDegrees * Math.PI) / 180;
  const alpha = Math.cos(angle) * scale;
  const beta = Math.sin(angle) * scale;
  return [alpha, beta, (1 - alpha) * cx - beta * cy, -beta, alpha, beta * cx + (1 - alpha) * cy];
}

/** cv::RotatedRect(center, size, angle).boundingRect(), in OpenCV's float arithmetic: [x, y, width, height]. */
export function rotatedRectBounds(cx: number, cy: number, width: number, height: number, angleDegrees: number): [number, number, number, number] {
  const angle = (f32(angleDegrees) * Math.PI) / 180;
  const b = f32(f32(Math.cos(angle)) * 0.5);
  const a = f32(f32(Math.sin(angle)) * 0.5);
  const w = f32(width);
  const h = f32(height);
  const x0 = f32(f32(cx - f32(a * h)) - f32(b * w));
  const y0 = f32(f32(cy + f32(b * h)) - f32(a * w));
  const x1 = f32(f32(cx + f32(a * h)) - f32(b * w));
  const y1 = f32(f32(cy - f32(b * h)) - f32(a * w));
  const x2 = f32(f32(2 * cx) - x0);
  const y2 = f32(f32(2 * cy) - y0);
  const x3 = f32(f32(2 * cx) - x1);
  const y3 = f32(f32(2 * cy) - y1);
  const left = Math.floor(Math.min(x0, x1, x2, x3));
  const top = Math.floor(Math.min(y0, y1, y2, y3));
  const right = Math.ceil(Math.max(x0, x1, x2, x3));
  const bottom = Math.ceil(Math.max(y0, y1, y2, y3));
  return [left, top, right - left + 1, bottom - top + 1];
}

/**
 * For every destination pixel the source cell (sx, sy) and the 5+5-bit sub-pixel index, exactly as
 * WarpAffineInvoker computes them (inverse matrix in float64, 10-bit fixed point, rounded).
 */
export function warpMap(m: Affine, win: Window): WarpMap {
  let [M0, M1, M2, M3, M4, M5] = m;
  let D = M0 * M4 - M1 * M3;
  D = D !== 0 ? 1 / D : 0;
  const A11 = M4 * D;
  const A22 = M0 * D;
  M0 = A11;
  M1 *= -D;
  M3 *= -D;
  M4 = A22;
  const b1 = -M0 * M2 - M1 * M5;
  const b2 = -M3 * M2 - M4 * M5;
  M2 = b1;
  M5 = b2;
  const AB_SCALE = 1 << AB_BITS;
  const roundDelta = AB_SCALE / INTER_TAB_SIZE / 2;
  const adelta = new Int32Array(win.width);
  const bdelta = new Int32Array(win.width);
  for (let i = 0; i < win.width; i++) {
    const x = win.x + i;
    adelta[i] = roundHalfEven(M0 * x * AB_SCALE);
    bdelta[i] = roundHalfEven(M3 * x * AB_SCALE);
  }
  const n = win.width * win.height;
  const sx = new Int32Array(n);
  const sy = new Int32Array(n);
  const alpha = new Uint16Array(n);
  const mask = INTER_TAB_SIZE - 1;
  for (let j = 0; j < win.height; j++) {
    const y = win.y + j;
    const X0 = roundHalfEven((M1 * y + M2) * AB_SCALE) + roundDelta;
    const Y0 = roundHalfEven((M4 * y + M5) * AB_SCALE) + roundDelta;
    for (let x = 0; x < win.width; x++) {
      const X = (X0 + adelta[x]!) >> (AB_BITS - INTER_BITS);
      const Y = (Y0 + bdelta[x]!) >> (AB_BITS - INTER_BITS);
      const i = j * win.width + x;
      sx[i] = clampShort(X >> INTER_BITS);
      sy[i] = clampShort(Y >> INTER_BITS);
      alpha[i] = (Y & mask) * INTER_TAB_SIZE + (X & mask);
    }
  }
  return { sx, sy, alpha, width: win.width, height: win.height };
}

/** Per destination pixel: source cell (sx, sy) and sub-pixel index (5 bits y, 5 bits x). */
export interface WarpMap {
  sx: Int32Array;
  sy: Int32Array;
  alpha: Uint16Array;
  width: number;
  height: number;
}

/** A window [x, x + width) x [y, y + height) of a destination image. */
export interface Window {
  x: number;
  y: number;
  width: number;
  height: number;
}

const clampShort = (v: number) => (v > 32767 ? 32767 : v < -32768 ? -32768 : v);

/** cv::warpAffine(src8u, dst, M, Size(dstWidth, dstHeight)) on one 8-bit plane. */
export function warpAffine8u(src: Uint8Array, width: number, height: number, m: Affine, dstWidth: number, dstHeight: number): Uint8Array {
  return remap8u(src, width, height, warpMap(m, { x: 0, y: 0, width: dstWidth, height: dstHeight }));
}

/** cv::remap(src8u, ..., INTER_LINEAR, BORDER_CONSTANT 0) with a map from `warpMap`. */
export function remap8u(src: Uint8Array, width: number, height: number, map: WarpMap): Uint8Array {
  const { sx, sy, alpha } = map;
  const w = BILINEAR.itab;
  const out = new Uint8Array(map.width * map.height);
  const px = (x: number, y: number) => (x >= 0 && x < width && y >= 0 && y < height ? src[y * width + x]! : 0);
  for (let i = 0; i < out.length; i++) {
    const x = sx[i]!;
    const y = sy[i]!;
    const o = alpha[i]! * 4;
    let v: number;
    if (x >= 0 && x < width - 1 && y >= 0 && y < height - 1) {
      const s = y * width + x;
      v = src[s]! * w[o]! + src[s + 1]! * w[o + 1]! + src[s + width]! * w[o + 2]! + src[s + width + 1]! * w[o + 3]!;
    } else if (x >= width || x + 1 < 0 || y >= height || y + 1 < 0) {
      out[i] = 0;
      continue;
    } else {
      v = px(x, y) * w[o]! + px(x + 1, y) * w[o + 1]! + px(x, y + 1) * w[o + 2]! + px(x + 1, y + 1) * w[o + 3]!;
    }
    const r = (v + (1 << (REMAP_COEF_BITS - 1))) >> REMAP_COEF_BITS;
    out[i] = r < 0 ? 0 : r > 255 ? 255 : r;
  }
  return out;
}

/**
 * cv::warpAffine(src32f, dst, M, Size(dstWidth, dstHeight)) on one float plane (float weights,
 * unfused sums); with `window`, only that part of dst is computed and returned.
 */
export function warpAffine32f(src: Float32Array, width: number, height: number, m: Affine, dstWidth: number, dstHeight: number, window?: Window): Float32Array {
  return remap32f(src, width, height, warpMap(m, window ?? { x: 0, y: 0, width: dstWidth, height: dstHeight }));
}

/** cv::remap(src32f, ..., INTER_LINEAR, BORDER_CONSTANT 0) with a map from `warpMap`. */
export function remap32f(src: Float32Array, width: number, height: number, map: WarpMap): Float32Array {
  const { sx, sy, alpha } = map;
  const w = BILINEAR.tab;
  const out = new Float32Array(map.width * map.height);
  const px = (x: number, y: number) => (x >= 0 && x < width && y >= 0 && y < height ? src[y * width + x]! : 0);
  for (let i = 0; i < out.length; i++) {
    const x = sx[i]!;
    const y = sy[i]!;
    const o = alpha[i]! * 4;
    let a: number, b: number, c: number, d: number;
    if (x >= 0 && x < width - 1 && y >= 0 && y < height - 1) {
      const s = y * width + x;
      a = src[s]!;
      b = src[s + 1]!;
      c = src[s + width]!;
      d = src[s + width + 1]!;
    } else if (x >= width || x + 1 < 0 || y >= height || y + 1 < 0) {
      out[i] = 0;
      continue;
    } else {
      a = px(x, y);
      b = px(x + 1, y);
      c = px(x, y + 1);
      d = px(x + 1, y + 1);
    }
    out[i] = f32(f32(f32(f32(a * w[o]!) + f32(b * w[o + 1]!)) + f32(c * w[o + 2]!)) + f32(d * w[o + 3]!));
  }
  return out;
}

// ---- cv::resize(src8u, dst, Size(w, h), 0, 0, INTER_LINEAR) ----

const RESIZE_COEF_BITS = 11;
const RESIZE_COEF_SCALE = 1 << RESIZE_COEF_BITS;
const DBL_EPSILON = 2.220446049250313e-16;

/** One axis of OpenCV's bilinear resize: source index and 11-bit weights of every output index. */
function linearAxis(srcLength: number, dstLength: number, clampSource: boolean): { index: Int32Array; w0: Int32Array; w1: Int32Array } {
  const scale = 1 / (dstLength / srcLength);
  const index = new Int32Array(dstLength);
  const w0 = new Int32Array(dstLength);
  const w1 = new Int32Array(dstLength);
  for (let d = 0; d < dstLength; d++) {
    let f = f32((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = f32(f - s);
    if (clampSource) {
      // x only: OpenCV pins the source to the border (y is clamped later, row by row)
      if (s < 0) {
        f = 0;
        s = 0;
      }
      if (s >= srcLength - 1) {
        f = 0;
        s = srcLength - 1;
      }
    }
    index[d] = s;
    w0[d] = roundHalfEven(f32(f32(1 - f) * RESIZE_COEF_SCALE));
    w1[d] = roundHalfEven(f32(f * RESIZE_COEF_SCALE));
  }
  return { index, w0, w1 };
}

/**
 * cv::resize(..., INTER_LINEAR) of an interleaved 8-bit image with `channels` channels, as
 * OpenCV 4.6 computes it: 11-bit fixed-point weights from float32 positions
 * ((d + 0.5) * scale - 0.5), a horizontal pass into ints, a vertical pass
 * ((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2; and an exact 2x reduction in both
 * directions becomes INTER_AREA's 2x2 mean (sum + 2) >> 2, as OpenCV switches it.
 */
export function resizeLinear8u(src: Uint8Array, width: number, height: number, channels: number, dstWidth: number, dstHeight: number): Uint8Array {
  const out = new Uint8Array(dstWidth * dstHeight * channels);
  const scaleX = 1 / (dstWidth / width);
  const scaleY = 1 / (dstHeight / height);
  const iscaleX = roundHalfEven(scaleX);
  const iscaleY = roundHalfEven(scaleY);
  const areaFast = Math.abs(scaleX - iscaleX) < DBL_EPSILON && Math.abs(scaleY - iscaleY) < DBL_EPSILON;
  if (areaFast && iscaleX === 2 && iscaleY === 2 && (channels === 1 || channels === 3 || channels === 4)) {
    const stride = width * channels;
    for (let y = 0; y < dstHeight; y++) {
      const r0 = 2 * y * stride;
      const r1 = r0 + stride;
      for (let x = 0; x < dstWidth; x++) {
        for (let c = 0; c < channels; c++) {
          const i = 2 * x * channels + c;
          out[(y * dstWidth + x) * channels + c] = (src[r0 + i]! + src[r0 + i + channels]! + src[r1 + i]! + src[r1 + i + channels]! + 2) >> 2;
        }
      }
    }
    return out;
  }
  const xs = linearAxis(width, dstWidth, true);
  const ys = linearAxis(height, dstHeight, false);
  // horizontal pass of every source row that is used, cached by row
  const rowLength = dstWidth * channels;
  const cache = new Map<number, Int32Array>();
  const horizontal = (sy: number): Int32Array => {
    let row = cache.get(sy);
    if (row) return row;
    row = new Int32Array(rowLength);
    const base = sy * width * channels;
    for (let x = 0; x < dstWidth; x++) {
      const s = base + xs.index[x]! * channels;
      const a0 = xs.w0[x]!;
      const a1 = xs.w1[x]!;
      const inside = xs.index[x]! + 1 < width;
      for (let c = 0; c < channels; c++) row[x * channels + c] = inside ? src[s + c]! * a0 + src[s + c + channels]! * a1 : src[s + c]! * RESIZE_COEF_SCALE;
    }
    if (cache.size > 4) cache.delete(cache.keys().next().value!);
    cache.set(sy, row);
    return row;
  };
  for (let y = 0; y < dstHeight; y++) {
    const sy = ys.index[y]!;
    const h0 = horizontal(sy < 0 ? 0 : sy > height - 1 ? height - 1 : sy);
    const h1 = horizontal(sy + 1 < 0 ? 0 : sy + 1 > height - 1 ? height - 1 : sy + 1);
    const b0 = ys.w0[y]!;
    const b1 = ys.w1[y]!;
    const o = y * rowLength;
    for (let i = 0; i < rowLength; i++) out[o + i] = (((b0 * (h0[i]! >> 4)) >> 16) + ((b1 * (h1[i]! >> 4)) >> 16) + 2) >> 2;
  }
  return out;
}
