/**
 * Instance masks in COCO's run-length encoding. Masks inside densepipe are row-major Uint8Arrays
 * (1 = object) of height*width; COCO's RLE walks the mask in COLUMN-major order, starting with a
 * run of zeros, and its compact string form stores each run as a delta to the run two places
 * earlier in 5-bit groups offset by 48 (pycocotools maskApi.c rleToString/rleFrString).
 */
import { BadInputError } from '../../core/errors.js';

/** COCO RLE as it appears in instances JSON: compressed (string) or uncompressed (number[]) counts. */
export interface CocoRle {
  size: [number, number]; // [height, width]
  counts: string | number[];
}

export function maskToRuns(mask: ArrayLike<number>, height: number, width: number): number[] {
  if (mask.length !== height * width) {
    throw new BadInputError(`mask has ${mask.length} pixels, expected ${height}x${width}=${height * width}`, 'mask');
  }
  const runs: number[] = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] ? 1 : 0;
      if (v !== current) {
        runs.push(run);
        run = 0;
        current = v;
      }
      run++;
    }
  }
  runs.push(run);
  return runs;
}

export function runsToMask(runs: readonly number[], height: number, width: number): Uint8Array {
  const mask = new Uint8Array(height * width);
  let pos = 0;
  let value = 0;
  for (const run of runs) {
    if (!Number.isInteger(run) || run < 0 || pos + run > height * width) {
      throw new BadInputError(`RLE runs overflow a ${height}x${width} mask`, 'counts');
    }
    if (value) {
      for (let p = pos; p < pos + run; p++) {
        const x = Math.floor(p / height);
        mask[(p - x * height) * width + x] = 1;
      }
    }
    pos += run;
    value ^= 1;
  }
  if (pos !== height * width) throw new BadInputError(`RLE runs cover ${pos} pixels, expected ${height * width}`, 'counts');
  return mask;
}

/** maskApi.c rleToString. Arithmetic right shift is done with floor division so runs up to 2^53 stay exact. */
export function runsToString(runs: readonly number[]): string {
  let s = '';
  for (let i = 0; i < runs.length; i++) {
    let x = runs[i]!;
    if (i > 2) x -= runs[i - 2]!;
    let more = true;
    while (more) {
      let c = ((x % 32) + 32) % 32;
      x = Math.floor(x / 32);
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

/** maskApi.c rleFrString, with the 5-bit groups accumulated by multiplication (no 32-bit shift overflow). */
export function stringToRuns(s: string): number[] {
  const runs: number[] = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= s.length) throw new BadInputError(`compressed RLE ends inside a run (at character ${p})`, 'counts');
      const c = s.charCodeAt(p) - 48;
      if (c < 0 || c > 63) throw new BadInputError(`compressed RLE has an invalid character at ${p}`, 'counts');
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x -= 2 ** (5 * k); // sign-extend: the top group's 0x10 bit is the sign
    }
    if (runs.length > 2) x += runs[runs.length - 2]!;
    runs.push(x);
  }
  return runs;
}

export function encodeRle(mask: Uint8Array, height: number, width: number): CocoRle {
  return { size: [height, width], counts: runsToString(maskToRuns(mask, height, width)) };
}

export function decodeRle(rle: CocoRle): Uint8Array {
  const [height, width] = rle.size;
  const runs = typeof rle.counts === 'string' ? stringToRuns(rle.counts) : rle.counts;
  return runsToMask(runs, height, width);
}

export function maskArea(mask: Uint8Array): number {
  let a = 0;
  for (let i = 0; i < mask.length; i++) a += mask[i] ? 1 : 0;
  return a;
}

/** Tight box of a mask as [x0, y0, x1, y1] in pixel-edge coordinates (x1 exclusive), or null when empty. */
export function maskBox(mask: Uint8Array, height: number, width: number): [number, number, number, number] | null {
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      if (mask[row + x]) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        y1 = y;
      }
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
}

/**
 * Rasterise COCO polygons ([x0,y0,x1,y1,...] in pixel-edge coordinates) by sampling pixel
 * centres with the even-odd rule. Porting note: pycocotools rasterises an up-sampled outline
 * instead, so boundary pixels can differ by one; areas agree to within the perimeter.
 */
export function polygonsToMask(polygons: readonly (readonly number[])[], height: number, width: number): Uint8Array {
  const mask = new Uint8Array(height * width);
  const row = new Uint8Array(width);
  for (const poly of polygons) {
    const n = Math.floor(poly.length / 2);
    if (n < 3) continue;
    const xs: number[] = [];
    for (let y = 0; y < height; y++) {
      const cy = y + 0.5;
      xs.length = 0;
      for (let i = 0, j = n - 1; i < n; j = i++) {
        const xi = poly[2 * i]!, yi = poly[2 * i + 1]!, xj = poly[2 * j]!, yj = poly[2 * j + 1]!;
        if (yi > cy !== yj > cy) xs.push(xi + ((cy - yi) * (xj - xi)) / (yj - yi));
      }
      xs.sort((a, b) => a - b);
      row.fill(0);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        // Pixel x is inside when its centre x+0.5 lies in [xs[k], xs[k+1]).
        const from = Math.max(0, Math.ceil(xs[k]! - 0.5));
        const to = Math.min(width - 1, Math.ceil(xs[k + 1]! - 0.5) - 1);
        for (let x = from; x <= to; x++) row[x] = 1;
      }
      // Separate polygons of one object are unioned, as pycocotools merges them.
      for (let x = 0; x < width; x++) if (row[x]) mask[y * width + x] = 1;
    }
  }
  return mask;
}
