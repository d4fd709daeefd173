import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, fromXywh, resizeImage, selectiveSearch, type RgbImage } from '../../stages/proposals/index.js';
import { fmaF32 } from '../../stages/proposals/float32.js';

/**
 * Selective search against OpenCV 4.6 ximgproc run on the same images
 * (test/fixtures/proposals/make_opencv46.py): the de-duplicated box SETS must be identical (OpenCV's
 * order is rand()-driven), in fast and quality mode, and for DETReg's call (cv2.resize to 128x128
 * INTER_LINEAR, RGB handed over as BGR). Also cv2.resize INTER_LINEAR itself, byte for byte.
 */
const FIXTURES = join(import.meta.dirname, '../fixtures/proposals');
const ss = JSON.parse(readFileSync(join(FIXTURES, 'opencv46/selective-search.json'), 'utf8'));
const resize = JSON.parse(readFileSync(join(FIXTURES, 'opencv46/resize.json'), 'utf8'));
const images = new Map<string, RgbImage>();

beforeAll(async () => {
  for (const name of ['astronaut', 'coffee', 'chelsea']) images.set(name, await decodeImage(readFileSync(join(FIXTURES, 'images', `${name}.png`))));
});

describe('cv2.resize(..., INTER_LINEAR) reproduced byte for byte', () => {
  it.each((resize.cases as any[]).map((c): [string, any] => [`${c.image} -> ${c.width}x${c.height}`, c]))('%s', async (_name, c) => {
    const out = await resizeImage(images.get(c.image)!, c.width, c.height, 'linear');
    for (const [i, rgb] of c.samples as Array<[number, number[]]>) expect(Array.from(out.data.subarray(i * 3, i * 3 + 3))).toEqual(rgb);
    expect(createHash('sha256').update(out.data).digest('hex').slice(0, 16)).toBe(c.sha256_16);
  });
});

describe('selective search box sets identical to OpenCV 4.6', () => {
  it.each((ss.cases as any[]).map((c): [string, any] => [`${c.image}${c.resize ? ` ${c.resize.join('x')} (DETReg call)` : ''} ${c.mode}`, c]))(
    '%s',
    async (_name, c) => {
      let image = images.get(c.image)!;
      if (c.resize) image = await resizeImage(image, c.resize[0], c.resize[1], 'linear');
      const ours = selectiveSearch(image, { mode: c.mode, treatRgbAsBgr: c.treatRgbAsBgr ?? false, rng: null }).boxes.map((b) => b.join(','));
      const theirs = (c.boxes as number[][]).map((b) => fromXywh(b[0]!, b[1]!, b[2]!, b[3]!).join(','));
      expect(ours.length).toBe(theirs.length);
      expect(new Set(ours)).toEqual(new Set(theirs));
    },
    120_000,
  );
});

describe('fmaF32 rounds once', () => {
  const bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]!;
  const step = (x: number, d: number) => {
    const f = new Float32Array([x]);
    const u = new Int32Array(f.buffer);
    u[0] = u[0]! + (x >= 0 ? d : -d);
    return f[0]!;
  };
  /** a*b + c exactly (BigInt, scaled by 2^300), rounded to the nearest float32, ties to even. */
  const exact = (a: number, b: number, c: number): number => {
    const scaled = (v: number) => BigInt(v * 2 ** 150); // exact: a float32 times 2^150 is an integer
    const value = scaled(a) * scaled(b) + scaled(c) * 2n ** 150n;
    const guess = Math.fround(Number(value) / 2 ** 300);
    let best = guess;
    let bestDist = -1n;
    for (const cand of [step(guess, -1), guess, step(guess, 1)]) {
      const d0 = scaled(cand) * 2n ** 150n - value;
      const d = d0 < 0n ? -d0 : d0;
      if (bestDist < 0n || d < bestDist || (d === bestDist && (bits(cand) & 1) === 0)) {
        best = cand;
        bestDist = d;
      }
    }
    return best;
  };

  it('matches exact rational evaluation on random operands and on ties broken by the low bits', () => {
    let s = 12345;
    const rand = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const operand = () => Math.fround((rand() - 0.5) * 2 ** Math.floor(rand() * 20 - 10));
    for (let i = 0; i < 3000; i++) {
      const [a, b, c] = [operand(), operand(), operand()];
      expect(fmaF32(a, b, c)).toBe(exact(a, b, c));
    }
    // (1 + 2^-23)^2 - 1 = 2^-22 + 2^-46 exactly; with c = 2^-24 + ... constructed so that the
    // float64 sum lands on a float32 midpoint that the exact value leaves
    const a = Math.fround(1 + 2 ** -12);
    const c = Math.fround(2 ** -24);
    expect(fmaF32(a, a, c)).toBe(exact(a, a, c));
    expect(fmaF32(a, a, -c)).toBe(exact(a, a, -c));
  });
});
