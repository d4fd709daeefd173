import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { toColourSpace, type SelectiveSearchColourSpace } from '../../stages/proposals/colour-spaces.js';
import type { RgbImage } from '../../stages/proposals/raster.js';

/**
 * OpenCV 4.6's 8-bit colour conversions (the inputs of selective search's FH segmentations and
 * histograms) reproduced byte for byte on the whole 8-bit RGB cube: the fixture holds one hash per
 * red value over the 65,536 (g, b) outputs, made by cv2.cvtColor itself
 * (test/fixtures/proposals/make_opencv46.py), so every one of the 2^24 inputs is checked.
 */
const cube = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/proposals/opencv46/colour-cube.json'), 'utf8')).cube;

/** All (r, g, b) with a fixed r: row g, column b. */
function redSlice(r: number): RgbImage {
  const data = new Uint8Array(256 * 256 * 3);
  for (let g = 0; g < 256; g++) {
    for (let b = 0; b < 256; b++) {
      const i = (g * 256 + b) * 3;
      data[i] = r;
      data[i + 1] = g;
      data[i + 2] = b;
    }
  }
  return { width: 256, height: 256, channels: 3, data };
}

function interleaved(planes: Uint8Array[]): Uint8Array {
  const C = planes.length;
  const n = planes[0]!.length;
  const out = new Uint8Array(n * C);
  for (let c = 0; c < C; c++) {
    const plane = planes[c]!;
    for (let p = 0; p < n; p++) out[p * C + c] = plane[p]!;
  }
  return out;
}

const hash16 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

describe('8-bit colour conversions are byte-equal to OpenCV 4.6 on all 2^24 RGB values', () => {
  it.each(['lab', 'hsv', 'gray'] as SelectiveSearchColourSpace[])('%s', (space) => {
    const expected: string[] = cube.spaces[space].blockSha256_16;
    expect(expected).toHaveLength(256);
    const differing: number[] = [];
    for (let r = 0; r < 256; r++) {
      if (hash16(interleaved(toColourSpace(redSlice(r), space).planes)) !== expected[r]) differing.push(r);
    }
    expect(differing).toEqual([]);
    // and the sampled values, so that a failure above is readable
    for (const [r, g, b, want] of cube.spaces[space].samples as Array<[number, number, number, number[]]>) {
      const got = toColourSpace({ width: 1, height: 1, channels: 3, data: Uint8Array.of(r, g, b) }, space).planes.map((p) => p[0]);
      expect(got, `${space}(${r}, ${g}, ${b})`).toEqual(want);
    }
  });

  it('the hashes would notice a single changed byte', () => {
    const bytes = interleaved(toColourSpace(redSlice(200), 'lab').planes);
    expect(hash16(bytes)).toBe(cube.spaces.lab.blockSha256_16[200]);
    bytes[12345]! ^= 1;
    expect(hash16(bytes)).not.toBe(cube.spaces.lab.blockSha256_16[200]);
  });
});
