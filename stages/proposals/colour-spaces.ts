import { f32, float32Bits, float32FromBits, float64FromBits, float64Words, fmaF32, roundHalfEven } from './float32.js';
import type { RgbImage } from './raster.js';

/**
 * The 8-bit colour conversions OpenCV's selective search feeds to FH and to its histograms.
 * Each returns channel planes of integers 0..255 in OpenCV's 8-bit units: HSV has H in 0..179
 * (degrees / 2), Lab has L*255/100 and a, b offset by 128. Planes are Uint8Array so histogram
 * binning is a shift-free table lookup later. 'blue' is the B plane alone: what OpenCV's quality
 * mode actually segments where it means to use the hue plane (see modeSettings).
 */
export type SelectiveSearchColourSpace = 'hsv' | 'lab' | 'gray' | 'hue' | 'blue' | 'rgi';

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

// ---- cv::cvtColor(..., COLOR_BGR2Lab) on 8-bit input, OpenCV 4.x (imgproc/src/color_lab.cpp) ----
// OpenCV's 8-bit path is integer arithmetic over two tables built once with its software float
// (softfloat) library: an sRGB gamma table (256 entries, 3 fractional bits) and a cube-root table
// (3072 entries, 15 fractional bits). Both are rebuilt here with the same float32/float64 steps,
// so the conversion is byte-equal to OpenCV on all 2^24 inputs (test/proposals/opencv-colour.test.ts).
const GAMMA_SHIFT = 3;
const LAB_SHIFT = 12; // xyz_shift
const LAB_SHIFT2 = LAB_SHIFT + GAMMA_SHIFT;
const LAB_CBRT_TAB_SIZE_B = ((256 * 3) / 2) * (1 << GAMMA_SHIFT);

/** softfloat's f32_cbrt (Ken Turkowski's rational approximation), mantissa truncated as OpenCV does. */
function cbrtSoftfloat(x: number): number {
  const bits = float32Bits(x);
  if ((bits & 0x7fffffff) === 0) return 0;
  const sign = bits >>> 31;
  let ex = ((bits >>> 23) & 0xff) - 127;
  let shx = ex % 3;
  shx -= shx >= 0 ? 3 : 0;
  ex = (ex - shx) / 3 - 1;
  // fr = 1.frac * 2^shx, in [0.125, 1)
  let fr = (1 + (bits & 0x7fffff) / 8388608) * 2 ** shx;
  const A1 = float64FromBits(0x4046a09e, 0x6653ba70);
  const A2 = float64FromBits(0x406808f4, 0x6c6116e0);
  const A3 = float64FromBits(0x405dca97, 0x439cae14);
  const A4 = float64FromBits(0x402add70, 0xd2827500);
  const A5 = float64FromBits(0x3fc4f15f, 0x83f55d2d);
  const A6 = float64FromBits(0x402d9e20, 0x660edb21);
  const A7 = float64FromBits(0x4062ff15, 0xc0285815);
  const A8 = float64FromBits(0x406510d0, 0x6a8112ce);
  const A9 = float64FromBits(0x4040fecb, 0xc9e2c375);
  fr = ((((A1 * fr + A2) * fr + A3) * fr + A4) * fr + A5) / ((((A6 * fr + A7) * fr + A8) * fr + A9) * fr + 1);
  const [hi, lo] = float64Words(fr);
  const mantissa = ((hi & 0xfffff) << 3) | (lo >>> 29); // fracF64UI(fr) >> 29
  return float32FromBits(((sign << 31) >>> 0) + ((ex + 127) << 23) + mantissa);
}

const LAB_TABLES = (() => {
  // sRGB gamma, evaluated in float64 (softdouble) and stored as float32 (softfloat)
  const gammaThreshold = 809 / 20000;
  const gammaLowScale = 323 / 25;
  const gammaPower = 12 / 5;
  const gammaXshift = 11 / 200;
  const gamma = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    const x = f32(i / 255);
    const g = f32(x <= gammaThreshold ? x / gammaLowScale : Math.pow((x + gammaXshift) / (1 + gammaXshift), gammaPower));
    gamma[i] = roundHalfEven(f32(255 * (1 << GAMMA_SHIFT) * g));
  }
  const lthresh = f32(216 / 24389);
  const lscale = f32(841 / 108);
  const lbias = f32(16 / 116);
  const cbTabScale = f32(1 / (255 * (1 << GAMMA_SHIFT)));
  const cbrt = new Int32Array(LAB_CBRT_TAB_SIZE_B);
  for (let i = 0; i < LAB_CBRT_TAB_SIZE_B; i++) {
    const x = f32(cbTabScale * i);
    cbrt[i] = roundHalfEven((1 << LAB_SHIFT2) * (x < lthresh ? fmaF32(x, lscale, lbias) : cbrtSoftfloat(x)));
  }
  // sRGB -> XYZ (D65) rows divided by the white point, in 12-bit fixed point, R G B order
  const m = [
    [0x3fda65a1, 0x4488c60d, 0x3fd6e297, 0x396d0918, 0x3fc71819, 0xd2391d58],
    [0x3fcb38cd, 0xa6e75ff6, 0x3fe6e297, 0x396d0918, 0x3fb279aa, 0xe6c8f755],
    [0x3f93cc4a, 0xc6cdaf4b, 0x3fbe836e, 0xb4e98138, 0x3fee6842, 0x7418d691],
  ];
  const white = [float64FromBits(0x3fee6a22, 0xb3892ee8), 1, float64FromBits(0x3ff16b89, 0x50763a19)];
  const coeffs = new Int32Array(9);
  for (let row = 0; row < 3; row++) {
    for (let j = 0; j < 3; j++) coeffs[row * 3 + j] = roundHalfEven(((1 << LAB_SHIFT) * float64FromBits(m[row]![2 * j]!, m[row]![2 * j + 1]!)) / white[row]!);
  }
  // per-channel products tab[v] * C, so a pixel's X, Y, Z are three adds
  const term = Array.from({ length: 9 }, (_, k) => Int32Array.from(gamma, (g) => g * coeffs[k]!));
  return { cbrt, term };
})();

const L_SCALE = Math.trunc((116 * 255 + 50) / 100);
const L_SHIFT = -Math.trunc((16 * 255 * (1 << LAB_SHIFT2) + 50) / 100);
const XYZ_ROUND = 1 << (LAB_SHIFT - 1);
const LAB_ROUND = 1 << (LAB_SHIFT2 - 1);
const AB_OFFSET = 128 * (1 << LAB_SHIFT2) + LAB_ROUND;

const sat8 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);

/** cv::cvtColor(..., COLOR_RGB2Lab) on 8-bit input, exactly (RGB2Lab_b): L*255/100, a+128, b+128. */
function labPixel(r: number, g: number, b: number, out: Uint8Array[], i: number): void {
  const { cbrt, term } = LAB_TABLES;
  const fX = cbrt[(term[0]![r]! + term[1]![g]! + term[2]![b]! + XYZ_ROUND) >> LAB_SHIFT]!;
  const fY = cbrt[(term[3]![r]! + term[4]![g]! + term[5]![b]! + XYZ_ROUND) >> LAB_SHIFT]!;
  const fZ = cbrt[(term[6]![r]! + term[7]![g]! + term[8]![b]! + XYZ_ROUND) >> LAB_SHIFT]!;
  out[0]![i] = sat8((L_SCALE * fY + L_SHIFT + LAB_ROUND) >> LAB_SHIFT2);
  out[1]![i] = sat8((500 * (fX - fY) + AB_OFFSET) >> LAB_SHIFT2);
  out[2]![i] = sat8((200 * (fY - fZ) + AB_OFFSET) >> LAB_SHIFT2);
}

/** cv::cvtColor(..., COLOR_RGB2GRAY) on 8-bit input: OpenCV 4.x's 15-bit fixed-point weights (RGB2Gray<uchar>). */
function grayValue(r: number, g: number, b: number): number {
  return (r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15;
}

export function toColourSpace(image: RgbImage, space: SelectiveSearchColourSpace): ColourPlanes {
  const n = image.width * image.height;
  const d = image.data;
  const planeCount = space === 'gray' || space === 'hue' || space === 'blue' ? 1 : 3;
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
      case 'blue':
        planes[0]![i] = b;
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
