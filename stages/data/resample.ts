import type { RgbF32, RgbImage } from './image.js';

export type Interpolation = 'nearest' | 'bilinear' | 'bicubic';

/** Filter kernels as Pillow defines them (support in source pixels at scale 1). */
const FILTERS: Record<Exclude<Interpolation, 'nearest'>, { support: number; fn: (x: number) => number }> = {
  bilinear: { support: 1, fn: (x) => (x < 0 ? -x : x) < 1 ? 1 - Math.abs(x) : 0 },
  bicubic: {
    support: 2,
    fn: (x) => {
      // Keys cubic with a = -0.5, as Pillow and torchvision's antialiased bicubic use.
      const a = -0.5;
      const t = Math.abs(x);
      if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
      if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
      return 0;
    },
  },
};

interface Taps {
  first: Int32Array;
  count: Int32Array;
  weights: Float32Array;
  maxTaps: number;
}

/**
 * Per-output-pixel filter taps for resampling the source span [in0, in1) to `outSize` pixels,
 * following Pillow's precompute_coeffs: when shrinking, the kernel widens by the scale so every
 * source pixel contributes (antialiasing); weights are normalised to sum to 1. Taps stay inside the
 * span's pixels [floor(in0), ceil(in1)), as they do when the span is cropped out first (torchvision's
 * resized_crop: `img.crop(box).resize(size)`); Pillow's resize(size, box=...) would read past the box.
 */
function computeTaps(in0: number, in1: number, inSize: number, outSize: number, interpolation: Interpolation): Taps {
  const edge0 = Math.max(0, Math.floor(in0));
  const edge1 = Math.min(inSize, Math.ceil(in1));
  const scale = (in1 - in0) / outSize;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  if (interpolation === 'nearest') {
    const weights = new Float32Array(outSize).fill(1);
    for (let o = 0; o < outSize; o++) {
      first[o] = Math.min(edge1 - 1, Math.max(edge0, Math.floor(in0 + (o + 0.5) * scale)));
      count[o] = 1;
    }
    return { first, count, weights, maxTaps: 1 };
  }
  const filter = FILTERS[interpolation];
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const maxTaps = Math.ceil(support) * 2 + 1;
  const weights = new Float32Array(outSize * maxTaps);
  for (let o = 0; o < outSize; o++) {
    const center = in0 + (o + 0.5) * scale;
    const lo = Math.max(edge0, Math.trunc(center - support + 0.5));
    const hi = Math.min(edge1, Math.trunc(center + support + 0.5));
    let sum = 0;
    const n = Math.min(hi - lo, maxTaps);
    for (let k = 0; k < n; k++) {
      const w = filter.fn((lo + k - center + 0.5) / filterScale);
      weights[o * maxTaps + k] = w;
      sum += w;
    }
    if (sum !== 0) for (let k = 0; k < n; k++) weights[o * maxTaps + k]! /= sum;
    first[o] = lo;
    count[o] = n;
  }
  return { first, count, weights, maxTaps };
}

/**
 * Crop the region `box` = [x0, y0, x1, y1] (pixel-edge frame, integers in every caller) of an RGB
 * image and resize it to outWidth x outHeight, into Float32 in [0, 1], as torchvision's
 * RandomResizedCrop does on PIL images (`resized_crop`: `img.crop(box).resize(size, resample)`):
 * one horizontal then one vertical pass with Pillow's filters, reading only pixels inside the box.
 * Uint8 sources are scaled by 1/255 on the way.
 */
export function resampleRegion(src: RgbImage, box: readonly number[], outWidth: number, outHeight: number, interpolation: Interpolation = 'bilinear'): RgbF32 {
  const [x0, y0, x1, y1] = box as [number, number, number, number];
  const sw = src.width;
  const input = src.data;
  const norm = input instanceof Uint8Array ? 1 / 255 : 1;
  const tx = computeTaps(x0, x1, src.width, outWidth, interpolation);
  const ty = computeTaps(y0, y1, src.height, outHeight, interpolation);
  // Rows of the source that any output row reads.
  let rowLo = src.height, rowHi = 0;
  for (let o = 0; o < outHeight; o++) {
    rowLo = Math.min(rowLo, ty.first[o]!);
    rowHi = Math.max(rowHi, ty.first[o]! + ty.count[o]!);
  }
  const rows = Math.max(0, rowHi - rowLo);
  const tmp = new Float32Array(rows * outWidth * 3);
  const clampRows = interpolation === 'bicubic';
  for (let r = 0; r < rows; r++) {
    const srcRow = (rowLo + r) * sw * 3;
    const dstRow = r * outWidth * 3;
    for (let o = 0; o < outWidth; o++) {
      let a = 0, b = 0, c = 0;
      const f = tx.first[o]!, n = tx.count[o]!, wBase = o * tx.maxTaps;
      for (let k = 0; k < n; k++) {
        const w = tx.weights[wBase + k]!;
        const p = srcRow + (f + k) * 3;
        a += input[p]! * w;
        b += input[p + 1]! * w;
        c += input[p + 2]! * w;
      }
      const d = dstRow + o * 3;
      if (clampRows) {
        // Pillow keeps the intermediate image in 8 bits, so bicubic overshoot is clipped after each pass.
        tmp[d] = Math.min(1, Math.max(0, a * norm));
        tmp[d + 1] = Math.min(1, Math.max(0, b * norm));
        tmp[d + 2] = Math.min(1, Math.max(0, c * norm));
      } else {
        tmp[d] = a * norm;
        tmp[d + 1] = b * norm;
        tmp[d + 2] = c * norm;
      }
    }
  }
  const out = new Float32Array(outWidth * outHeight * 3);
  const rowStride = outWidth * 3;
  for (let o = 0; o < outHeight; o++) {
    const f = ty.first[o]! - rowLo, n = ty.count[o]!, wBase = o * ty.maxTaps;
    const dst = o * rowStride;
    for (let k = 0; k < n; k++) {
      const w = ty.weights[wBase + k]!;
      const s = (f + k) * rowStride;
      for (let x = 0; x < rowStride; x++) out[dst + x]! += tmp[s + x]! * w;
    }
    // Bicubic overshoots; clamp like Pillow does for 8-bit output.
    if (interpolation === 'bicubic') for (let x = 0; x < rowStride; x++) out[dst + x] = Math.min(1, Math.max(0, out[dst + x]!));
  }
  return { width: outWidth, height: outHeight, data: out };
}
