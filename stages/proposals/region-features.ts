import { mirrorIndex } from './gaussian.js';
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

/** Bin of a 0..255 normalised texture value: floor(v / 25.6), i.e. 10 bins. */
const VALUE_TO_TEXTURE_BIN = Uint8Array.from({ length: 256 }, (_, v) => Math.min(TEXTURE_BINS - 1, Math.floor(v / 25.6)));

/** 3x3 Scharr derivative along x (dir 'x') or y, with reflect-101 borders like cv::Scharr. */
function scharr(plane: Uint8Array, width: number, height: number, dir: 'x' | 'y'): Float32Array {
  const out = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    const ym = mirrorIndex(y - 1, height, 'reflect101') * width;
    const y0 = y * width;
    const yp = mirrorIndex(y + 1, height, 'reflect101') * width;
    for (let x = 0; x < width; x++) {
      const xm = mirrorIndex(x - 1, width, 'reflect101');
      const xp = mirrorIndex(x + 1, width, 'reflect101');
      if (dir === 'x') {
        out[y0 + x] = 3 * (plane[ym + xp]! - plane[ym + xm]!) + 10 * (plane[y0 + xp]! - plane[y0 + xm]!) + 3 * (plane[yp + xp]! - plane[yp + xm]!);
      } else {
        out[y0 + x] = 3 * (plane[yp + xm]! - plane[ym + xm]!) + 10 * (plane[yp + x]! - plane[ym + x]!) + 3 * (plane[yp + xp]! - plane[ym + xp]!);
      }
    }
  }
  return out;
}

/**
 * OpenCV's texture feature: for each channel, Scharr d/dx and d/dy, plus the same two derivatives
 * taken on the image rotated by 45 degrees; each split into its positive and negative part, giving
 * 8 maps. OpenCV rotates the image, filters and rotates back (with interpolation and a crop); we
 * take the derivatives along the two diagonals as (dx +- dy)/sqrt(2) of the axis-aligned Scharr
 * responses instead, which is the same directional derivative without resampling twice. Each map
 * is min-max normalised over the whole image to 0..255 and cut into 10 bins of 25.6; a constant
 * map (a flat channel: H and S of a gray image) lands entirely in bin 0 where OpenCV divides by zero.
 */
export function pixelBins(image: ColourPlanes): PixelBins {
  const { width, height, planes } = image;
  const n = width * height;
  const C = planes.length;
  const colourBin = new Uint8Array(n * C);
  const textureSlot = new Uint16Array(n * C * TEXTURE_ORIENTATIONS);
  const maps = Array.from({ length: TEXTURE_ORIENTATIONS }, () => new Float32Array(n));
  for (let c = 0; c < C; c++) {
    const plane = planes[c]!;
    for (let p = 0; p < n; p++) colourBin[p * C + c] = c * COLOUR_BINS + ((plane[p]! * COLOUR_BINS) >> 8);
    const dx = scharr(plane, width, height, 'x');
    const dy = scharr(plane, width, height, 'y');
    for (let p = 0; p < n; p++) {
      const gx = dx[p]!;
      const gy = dy[p]!;
      const gu = (gx + gy) * Math.SQRT1_2;
      const gv = (gy - gx) * Math.SQRT1_2;
      maps[0]![p] = gx > 0 ? gx : 0;
      maps[1]![p] = gx < 0 ? gx : 0;
      maps[2]![p] = gy > 0 ? gy : 0;
      maps[3]![p] = gy < 0 ? gy : 0;
      maps[4]![p] = gu > 0 ? gu : 0;
      maps[5]![p] = gu < 0 ? gu : 0;
      maps[6]![p] = gv > 0 ? gv : 0;
      maps[7]![p] = gv < 0 ? gv : 0;
    }
    for (let m = 0; m < TEXTURE_ORIENTATIONS; m++) {
      const map = maps[m]!;
      let lo = Infinity;
      let hi = -Infinity;
      for (let p = 0; p < n; p++) {
        const v = map[p]!;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const scale = hi > lo ? 255 / (hi - lo) : 0;
      // store the flat histogram slot ((c*8 + m)*10 + bin) so region accumulation is one add
      const slotBase = (c * TEXTURE_ORIENTATIONS + m) * TEXTURE_BINS;
      for (let p = 0; p < n; p++) {
        const v = Math.round((map[p]! - lo) * scale);
        textureSlot[(p * C + c) * TEXTURE_ORIENTATIONS + m] = slotBase + VALUE_TO_TEXTURE_BIN[v]!;
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
  /** L1-normalised histograms, `colourLength` / `textureLength` floats per region. */
  colour: Float64Array;
  texture: Float64Array;
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
  const colour = new Float64Array(count * colourLength);
  const texture = new Float64Array(count * textureLength);
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
      for (let c = 0; c < C; c++) colour[cBase + bins.colourBin[p * C + c]!]!++;
      const tBase = r * textureLength;
      const slots = bins.textureSlot;
      for (let j = p * perPixel, end = j + perPixel; j < end; j++) texture[tBase + slots[j]!]!++;
    }
  }
  // Normalise the whole concatenated descriptor to sum 1 (OpenCV), not each channel (AlpacaDB).
  for (let r = 0; r < count; r++) {
    const cs = 1 / (size[r]! * C);
    for (let i = 0; i < colourLength; i++) colour[r * colourLength + i]! *= cs;
    const ts = 1 / (size[r]! * C * TEXTURE_ORIENTATIONS);
    for (let i = 0; i < textureLength; i++) texture[r * textureLength + i]! *= ts;
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
