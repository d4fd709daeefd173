import type { RgbImage } from './raster.js';

/**
 * The 8-bit colour conversions OpenCV's selective search feeds to FH and to its histograms.
 * Each returns channel planes of integers 0..255 in OpenCV's 8-bit units: HSV has H in 0..179
 * (degrees / 2), Lab has L*255/100 and a, b offset by 128. Planes are Uint8Array so histogram
 * binning is a shift-free table lookup later.
 */
export type SelectiveSearchColourSpace = 'hsv' | 'lab' | 'gray' | 'hue' | 'rgi';

export interface ColourPlanes {
  space: SelectiveSearchColourSpace;
  width: number;
  height: number;
  planes: Uint8Array[];
}

const HSV_SHIFT = 12;
// OpenCV's fixed-point reciprocal tables (saturate_cast rounds to nearest).
const SDIV = new Int32Array(256);
const HDIV180 = new Int32Array(256);
for (let i = 1; i < 256; i++) {
  SDIV[i] = Math.round((255 << HSV_SHIFT) / i);
  HDIV180[i] = Math.round((180 << HSV_SHIFT) / (6 * i));
}

/** cv::cvtColor(..., COLOR_RGB2HSV) on 8-bit input, in OpenCV's own integer arithmetic. */
function hsvPixel(r: number, g: number, b: number, out: Uint8Array[], i: number): void {
  const v = Math.max(r, g, b);
  const vmin = Math.min(r, g, b);
  const diff = v - vmin;
  const s = (diff * SDIV[v]! + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
  let h: number;
  if (v === r) h = g - b;
  else if (v === g) h = b - r + 2 * diff;
  else h = r - g + 4 * diff;
  h = (h * HDIV180[diff]! + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
  if (h < 0) h += 180;
  out[0]![i] = h;
  out[1]![i] = s;
  out[2]![i] = v;
}

function srgbToLinear(c: number): number {
  const x = c / 255;
  return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
}
const LINEAR = Float64Array.from({ length: 256 }, (_, i) => srgbToLinear(i));

function labF(t: number): number {
  return t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116;
}

const clamp8 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/**
 * cv::cvtColor(..., COLOR_RGB2Lab) on 8-bit input, computed in floating point with OpenCV's
 * matrix and white point. OpenCV's own 8-bit path uses fixed-point tables; the two agree to
 * within one unit, which moves a value across a 25-bin histogram boundary only rarely.
 */
function labPixel(r: number, g: number, b: number, out: Uint8Array[], i: number): void {
  const R = LINEAR[r]!;
  const G = LINEAR[g]!;
  const B = LINEAR[b]!;
  const X = (0.412453 * R + 0.35758 * G + 0.180423 * B) / 0.950456;
  const Y = 0.212671 * R + 0.71516 * G + 0.072169 * B;
  const Z = (0.019334 * R + 0.119193 * G + 0.950227 * B) / 1.088754;
  const fy = labF(Y);
  const L = Y > 0.008856 ? 116 * fy - 16 : 903.3 * Y;
  out[0]![i] = clamp8((L * 255) / 100);
  out[1]![i] = clamp8(500 * (labF(X) - fy) + 128);
  out[2]![i] = clamp8(200 * (fy - labF(Z)) + 128);
}

/** cv::cvtColor(..., COLOR_RGB2GRAY) on 8-bit input: OpenCV's 14-bit fixed-point weights. */
function grayValue(r: number, g: number, b: number): number {
  return (r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14;
}

export function toColourSpace(image: RgbImage, space: SelectiveSearchColourSpace): ColourPlanes {
  const n = image.width * image.height;
  const d = image.data;
  const planeCount = space === 'gray' || space === 'hue' ? 1 : 3;
  const planes = Array.from({ length: planeCount }, () => new Uint8Array(n));
  const hsv = space === 'hue' ? [planes[0]!, new Uint8Array(n), new Uint8Array(n)] : planes;
  for (let i = 0; i < n; i++) {
    const r = d[i * 3]!;
    const g = d[i * 3 + 1]!;
    const b = d[i * 3 + 2]!;
    switch (space) {
      case 'hsv':
      case 'hue':
        hsvPixel(r, g, b, hsv, i);
        break;
      case 'lab':
        labPixel(r, g, b, planes, i);
        break;
      case 'gray':
        planes[0]![i] = grayValue(r, g, b);
        break;
      case 'rgi':
        // OpenCV merges the raw R and G planes with the gray plane (not the paper's normalised rg).
        planes[0]![i] = r;
        planes[1]![i] = g;
        planes[2]![i] = grayValue(r, g, b);
        break;
    }
  }
  return { space, width: image.width, height: image.height, planes };
}

/** Swap R and B: reproduces callers (DETReg) that hand an RGB array to OpenCV, which reads it as BGR. */
export function swapRedBlue(image: RgbImage): RgbImage {
  const data = new Uint8Array(image.data.length);
  for (let i = 0; i < data.length; i += 3) {
    data[i] = image.data[i + 2]!;
    data[i + 1] = image.data[i + 1]!;
    data[i + 2] = image.data[i]!;
  }
  return { ...image, data };
}
