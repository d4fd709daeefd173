import { f32, float32Bits, float32FromBits, fmaF32, roundHalfEven } from './float32.js';
import { remap8u, remap32f, rotatedRectBounds, rotationMatrix2D, scharr8u, warpMap, type WarpMap } from './opencv-imgproc.js';
import type { ColourPlanes } from './colour-spaces.js';
import type { Segmentation } from './felzenszwalb.js';

/** Histogram sizes of OpenCV's selective search: 25 colour bins per channel, 8 maps x 10 texture bins. */
export const COLOUR_BINS = 25;
export const TEXTURE_ORIENTATIONS = 8;
export const TEXTURE_BINS = 10;

/**
 * Per-pixel bin indices for one colour image, computed once and reused for every k and strategy.
 * Both hold the slot in the region's flat histogram: colourBin[p*C + c] = c*25 + bin (bin 0..24);
 * textureSlot[(p*C + c)*8 + m] = (c*8 + m)*10 + bin (bin 0..9).
 */
export interface PixelBins {
  channels: number;
  colourBin: Uint8Array;
  textureSlot: Uint16Array;
}

/** OpenCV's texture bin of a 0..255 value: (int)((float)v / (256.f / 10)), in float32. */
const VALUE_TO_TEXTURE_BIN = Uint8Array.from({ length: 256 }, (_, v) => Math.trunc(f32(v / f32(256 / TEXTURE_BINS))));

/** |Scharr| of an 8-bit plane is at most 16 * 255. */
const SCHARR_MAX = 16 * 255;

/**
 * convertTo(CV_8U, a, b) of one map value (float32 fma, cvRound = round half to even; NaN and
 * out-of-range give INT_MIN in cvtps2dq, which saturates to 0), then OpenCV's texture bin.
 */
function textureBin(value: number, a: number, b: number): number {
  const t = fmaF32(value, a, b);
  const v = t > -2147483648 && t < 2147483648 ? roundHalfEven(t) : 0;
  return VALUE_TO_TEXTURE_BIN[v < 0 ? 0 : v > 255 ? 255 : v]!;
}

/** float32 values in numeric order <-> integers in the same order (-0 and +0 share a key). */
function orderedKey(v: number): number {
  const bits = float32Bits(v);
  return bits >= 0x80000000 ? 0x80000000 - (bits - 0x80000000) : 0x80000000 + bits;
}
function fromOrderedKey(key: number): number {
  return key >= 0x80000000 ? float32FromBits(key - 0x80000000) : float32FromBits(0x80000000 + (0x80000000 - key));
}

/**
 * For a map with values in [lo, hi] (lo < hi) and its scale a > 0, offset b: the smallest float32
 * value reaching each texture bin 1..9 (Infinity where none does), found by bisection over the
 * float32 values with textureBin itself; null when the scaling is degenerate (one bin for all).
 */
function binSteps(a: number, b: number, lo: number, hi: number): number[] | null {
  if (!(a > 0 && Number.isFinite(a) && Number.isFinite(b))) return null;
  const loKey = orderedKey(lo);
  const hiKey = orderedKey(hi);
  const steps: number[] = [];
  for (let bin = 1; bin < TEXTURE_BINS; bin++) {
    if (textureBin(hi, a, b) < bin) {
      steps.push(Infinity);
      continue;
    }
    let l = loKey;
    let h = hiKey; // invariant: bin(h) >= bin
    if (textureBin(fromOrderedKey(l), a, b) >= bin) {
      steps.push(-Infinity);
      continue;
    }
    while (h - l > 1) {
      const mid = Math.floor((l + h) / 2);
      if (textureBin(fromOrderedKey(mid), a, b) >= bin) h = mid;
      else l = mid;
    }
    steps.push(fromOrderedKey(h));
  }
  return steps;
}

/**
 * The derivatives OpenCV takes "at 45 degrees": the plane rotated by 45 degrees about its centre
 * into its bounding box (warpAffine, bilinear, black outside), Scharr there, rotated back by -45
 * degrees about the rotated image's integer centre, and the original-size window cut at
 * ((bw - w) / 2, (bh - h) / 2). Returns [d/dx, d/dy] of the rotated plane, back in place.
 */
function rotatedScharr(plane: Uint8Array, width: number, height: number): [Float32Array, Float32Array] {
  const maps = rotationMaps(width, height);
  const rotated = remap8u(plane, width, height, maps.forward);
  return [remap32f(scharr8u(rotated, maps.bw, maps.bh, 'x'), maps.bw, maps.bh, maps.back), remap32f(scharr8u(rotated, maps.bw, maps.bh, 'y'), maps.bw, maps.bh, maps.back)];
}

/** The two warps of `rotatedScharr` depend only on the image size: kept for the last size seen. */
let lastRotationMaps: { key: string; forward: WarpMap; back: WarpMap; bw: number; bh: number } | null = null;

function rotationMaps(width: number, height: number): { forward: WarpMap; back: WarpMap; bw: number; bh: number } {
  const key = `${width}x${height}`;
  if (lastRotationMaps?.key === key) return lastRotationMaps;
  const cx = f32(width / 2);
  const cy = f32(height / 2);
  const rot = rotationMatrix2D(cx, cy, 45, 1);
  const [, , bw, bh] = rotatedRectBounds(cx, cy, width, height, 45);
  rot[2] += bw / 2 - cx;
  rot[5] += bh / 2 - cy;
  const c2x = Math.trunc(bw / 2);
  const c2y = Math.trunc(bh / 2);
  const backMatrix = rotationMatrix2D(c2x, c2y, -45, 1);
  const [, , b2w, b2h] = rotatedRectBounds(c2x, c2y, bw, bh, -45);
  const window = { x: Math.max(0, Math.trunc((bw - width) / 2)), y: Math.max(0, Math.trunc((bh - height) / 2)), width, height };
  if (window.x + width > b2w || window.y + height > b2h) throw new Error(`texture window ${JSON.stringify(window)} outside ${b2w}x${b2h}`);
  lastRotationMaps = { key, forward: warpMap(rot, { x: 0, y: 0, width: bw, height: bh }), back: warpMap(backMatrix, window), bw, bh };
  return lastRotationMaps;
}

/**
 * OpenCV's texture feature (SelectiveSearchSegmentationStrategyTexture::setImage), to the bit: for
 * each channel, Scharr d/dx and d/dy of the plane and of the plane rotated by 45 degrees
 * (`rotatedScharr`), each split into its positive part and its non-positive part (threshold
 * TOZERO / TOZERO_INV at 0), giving 8 float maps per channel. Each map is scaled to 0..255 with
 * convertTo(CV_8U, 255/(max-min), -255*min/(max-min)) (float32 fma, round half to even; a constant
 * map gives NaN there, i.e. 0) and binned as (int)(v / 25.6f) into 10 bins.
 */
export function pixelBins(image: ColourPlanes): PixelBins {
  const { width, height, planes } = image;
  const n = width * height;
  const C = planes.length;
  const colourBin = new Uint8Array(n * C);
  const textureSlot = new Uint16Array(n * C * TEXTURE_ORIENTATIONS);
  const map = new Float32Array(n);
  for (let c = 0; c < C; c++) {
    const plane = planes[c]!;
    for (let p = 0; p < n; p++) colourBin[p * C + c] = c * COLOUR_BINS + ((plane[p]! * COLOUR_BINS) >> 8);
    const [rx, ry] = rotatedScharr(plane, width, height);
    const derivatives = [scharr8u(plane, width, height, 'x'), scharr8u(plane, width, height, 'y'), rx, ry];
    for (let m = 0; m < TEXTURE_ORIENTATIONS; m++) {
      const g = derivatives[m >> 1]!;
      const positive = (m & 1) === 0;
      let lo = Infinity;
      let hi = -Infinity;
      for (let p = 0; p < n; p++) {
        const v = g[p]!;
        const t = positive ? (v > 0 ? v : 0) : v > 0 ? 0 : v;
        map[p] = t;
        if (t < lo) lo = t;
        if (t > hi) hi = t;
      }
      const a = f32(255 / (hi - lo));
      const b = f32((-255 * lo) / (hi - lo));
      // store the flat histogram slot ((c*8 + m)*10 + bin) so region accumulation is one add
      const slotBase = (c * TEXTURE_ORIENTATIONS + m) * TEXTURE_BINS;
      const out = textureSlot;
      let o = c * TEXTURE_ORIENTATIONS + m;
      const stride = C * TEXTURE_ORIENTATIONS;
      if (m < 4) {
        // the axis-aligned derivatives of 8-bit planes are integers in [-4080, 4080]: one table
        const lut = new Uint16Array(2 * SCHARR_MAX + 1);
        for (let v = -SCHARR_MAX; v <= SCHARR_MAX; v++) lut[v + SCHARR_MAX] = slotBase + textureBin(v, a, b);
        for (let p = 0; p < n; p++, o += stride) out[o] = lut[map[p]! + SCHARR_MAX]!;
      } else {
        // float values: the value -> bin function is monotone, so find its 9 steps once and
        // compare (exactly the same bins as evaluating textureBin per pixel)
        const steps = binSteps(a, b, lo, hi);
        if (steps === null) {
          const bin = slotBase + textureBin(lo, a, b);
          for (let p = 0; p < n; p++, o += stride) out[o] = bin;
        } else {
          const [t1, t2, t3, t4, t5, t6, t7, t8, t9] = steps;
          for (let p = 0; p < n; p++, o += stride) {
            const v = map[p]!;
            out[o] = slotBase + +(v >= t1!) + +(v >= t2!) + +(v >= t3!) + +(v >= t4!) + +(v >= t5!) + +(v >= t6!) + +(v >= t7!) + +(v >= t8!) + +(v >= t9!);
          }
        }
      }
    }
  }
  return { channels: C, colourBin, textureSlot };
}

/** Everything the grouping needs about the initial FH regions of one (colour image, k) pair. */
export interface InitialRegions {
  count: number;
  size: Float64Array;
  /** [x1, y1, x2, y2) per region, exclusive right/bottom. */
  box: Int32Array;
  /** L1-normalised histograms, `colourLength` / `textureLength` float32 values per region (count / total, as OpenCV divides). */
  colour: Float32Array;
  texture: Float32Array;
  colourLength: number;
  textureLength: number;
  /** Unordered neighbour pairs (i < j), as found by OpenCV's scan. */
  neighbours: Array<[number, number]>;
}

export function describeRegions(seg: Segmentation, bins: PixelBins): InitialRegions {
  const { width, height, labels, count } = seg;
  const C = bins.channels;
  const colourLength = COLOUR_BINS * C;
  const textureLength = TEXTURE_BINS * TEXTURE_ORIENTATIONS * C;
  const size = new Float64Array(count);
  const box = new Int32Array(count * 4);
  for (let r = 0; r < count; r++) {
    box[r * 4] = width;
    box[r * 4 + 1] = height;
    box[r * 4 + 2] = 0;
    box[r * 4 + 3] = 0;
  }
  const colourCount = new Int32Array(count * colourLength);
  const textureCount = new Int32Array(count * textureLength);
  const perPixel = C * TEXTURE_ORIENTATIONS;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      const r = labels[p]!;
      size[r]!++;
      const b = r * 4;
      if (x < box[b]!) box[b] = x;
      if (y < box[b + 1]!) box[b + 1] = y;
      if (x + 1 > box[b + 2]!) box[b + 2] = x + 1;
      if (y + 1 > box[b + 3]!) box[b + 3] = y + 1;
      const cBase = r * colourLength;
      for (let c = 0; c < C; c++) colourCount[cBase + bins.colourBin[p * C + c]!]!++;
      const tBase = r * textureLength;
      const slots = bins.textureSlot;
      for (let j = p * perPixel, end = j + perPixel; j < end; j++) textureCount[tBase + slots[j]!]!++;
    }
  }
  // Normalise the whole concatenated descriptor to sum 1 (OpenCV), not each channel (AlpacaDB):
  // float32 count / total, total = the region's pixel count times the number of histograms.
  const colour = new Float32Array(count * colourLength);
  const texture = new Float32Array(count * textureLength);
  for (let r = 0; r < count; r++) {
    const cs = size[r]! * C;
    for (let i = r * colourLength, end = i + colourLength; i < end; i++) colour[i] = colourCount[i]! / cs;
    const ts = size[r]! * C * TEXTURE_ORIENTATIONS;
    for (let i = r * textureLength, end = i + textureLength; i < end; i++) texture[i] = textureCount[i]! / ts;
  }
  return { count, size, box, colour, texture, colourLength, textureLength, neighbours: neighbourPairs(seg) };
}

/**
 * OpenCV's adjacency scan, quirks included: only pixels with x > 0 and y > 0 look at their left,
 * upper and upper-left neighbours, so the up-right diagonal is never used and contacts that exist
 * only along row 0 or column 0 are missed.
 */
function neighbourPairs(seg: Segmentation): Array<[number, number]> {
  const { width, height, labels, count } = seg;
  const seen = new Set<number>();
  const pairs: Array<[number, number]> = [];
  const note = (a: number, b: number) => {
    if (a === b) return;
    const lo = Math.min(a, b);
    const hi = Math.max(a, b);
    const key = lo * count + hi;
    if (seen.has(key)) return;
    seen.add(key);
    pairs.push([lo, hi]);
  };
  for (let y = 1; y < height; y++) {
    for (let x = 1; x < width; x++) {
      const p = y * width + x;
      const l = labels[p]!;
      note(l, labels[p - 1]!);
      note(l, labels[p - width]!);
      note(l, labels[p - width - 1]!);
    }
  }
  pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return pairs;
}
