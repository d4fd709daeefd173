import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeImage, decodeLabelPng, imageFrom, slic, type RgbImage, type SlicOptions } from '../../stages/proposals/index.js';
import { KERNEL_BASE64, slicWorkspace } from '../../stages/proposals/slic-kernel.js';
import { kernelBytes } from '../../stages/proposals/slic-kernel-wasm.js';
import { scene } from './helpers.js';

/**
 * SLIC's WebAssembly kernel (stages/proposals/slic-kernel.ts, assembled by slic-kernel-wasm.ts)
 * against its JavaScript counterpart and against scikit-image: the label maps must be identical,
 * bit for bit, whichever path runs. reference-parity.test.ts checks the default (WebAssembly) path
 * against scikit-image's label maps; this file checks the JavaScript path against them too, and the
 * two paths against each other on inputs the fixtures do not cover.
 */
const FIXTURES = join(import.meta.dirname, '../fixtures/proposals');
const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference.json'), 'utf8'));

function differing(a: Int32Array, b: Int32Array): number {
  expect(a.length).toBe(b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

/** A photograph-like image: smooth colour fields plus per-pixel noise. */
function noisy(width: number, height: number, seed: number): RgbImage {
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  return imageFrom(width, height, (x, y) => [
    Math.min(255, Math.floor(128 + 100 * Math.sin(x / 9 + seed) + 30 * rand())),
    Math.min(255, Math.floor(100 + 80 * Math.cos(y / 7) + 40 * rand())),
    Math.floor(255 * rand() * rand()),
  ]);
}

describe('SLIC WebAssembly kernel', () => {
  it('KERNEL_BASE64 is what slic-kernel-wasm.ts assembles (else run: npx tsx scripts/slic-kernel.ts)', () => {
    expect(KERNEL_BASE64).toBe(Buffer.from(kernelBytes()).toString('base64'));
  });

  it('runs on this Node (WebAssembly SIMD), and images 1 pixel wide take the JavaScript path', () => {
    expect(slicWorkspace(8, 4, 2).simd).toBe(true);
    expect(slicWorkspace(1, 9, 2).simd).toBe(false);
    expect(slicWorkspace(8, 4, 2, { simd: false }).simd).toBe(false);
  });

  it("its cube root is V8's Math.cbrt bit for bit", () => {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const { cbrt } = new WebAssembly.Instance(new WebAssembly.Module(kernelBytes()), { env: { memory } }).exports as { cbrt: (x: number) => number };
    let s = 7;
    const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const words = new Uint32Array(2);
    const asDouble = new Float64Array(words.buffer);
    const mismatches: number[] = [];
    for (let i = 0; i < 200_000; i++) {
      // the range Lab needs (just above 0.008856 to ~1.1), log-uniform, and arbitrary positive normal doubles
      const inRange = Math.exp(Math.log(0.008856) + rand() * 4.9);
      words[0] = (rand() * 2 ** 32) >>> 0;
      words[1] = (0x00100000 + rand() * 0x7fe00000) >>> 0;
      for (const x of [inRange, asDouble[0]!]) if (!Object.is(cbrt(x), Math.cbrt(x))) mismatches.push(x);
    }
    expect(mismatches).toEqual([]);
  });

  it.each((reference.slic as Array<{ image: string; nSegments: number; compactness: number; count: number; labels: string }>).filter((_, i) => i % 2 === 0).map((e) => [`${e.image} n ${e.nSegments}`, e] as const))(
    'the JavaScript path matches scikit-image too: %s',
    async (_name, e) => {
      const image = await decodeImage(readFileSync(join(FIXTURES, 'images', `${e.image}.png`)));
      const ours = slic(image, { nSegments: e.nSegments, compactness: e.compactness, startLabel: 0 }, { simd: false });
      expect(ours.count).toBe(e.count);
      expect(differing(ours.labels, (await decodeLabelPng(readFileSync(join(FIXTURES, e.labels)))).labels)).toBe(0);
    },
  );

  const cases: Array<[string, RgbImage, SlicOptions]> = [
    ['odd width, R2O preset options', noisy(97, 61, 1), { nSegments: 100, compactness: 10, startLabel: 0, imagenetNormalize: true }],
    ['sigma (smoothing)', noisy(80, 50, 2), { nSegments: 30, sigma: 1.5 }],
    ['no Lab conversion', noisy(64, 64, 3), { nSegments: 200, convert2lab: false, compactness: 0.1 }],
    ['no connectivity pass, start label 1', noisy(75, 40, 4), { nSegments: 64, enforceConnectivity: false, startLabel: 1 }],
    ['few iterations', scene(120, 90, 5), { nSegments: 50, maxNumIter: 3 }],
    ['one iteration', scene(60, 45, 6), { nSegments: 40, maxNumIter: 1 }],
    ['more segments than pixels', noisy(12, 9, 7), { nSegments: 1000 }],
    ['tight size limits', noisy(90, 70, 8), { nSegments: 7, minSizeFactor: 0.1, maxSizeFactor: 1.5 }],
    ['low compactness (colour dominates)', noisy(100, 80, 9), { nSegments: 300, compactness: 1 }],
    ['2 pixels wide', noisy(2, 50, 10), { nSegments: 10 }],
    ['3 pixels wide', noisy(3, 40, 11), { nSegments: 12 }],
  ];
  it.each(cases)('WebAssembly and JavaScript paths give the same labels: %s', (_name, image, options) => {
    const wasm = slic(image, options);
    const js = slic(image, options, { simd: false });
    expect(wasm.count).toBe(js.count);
    expect(differing(wasm.labels, js.labels)).toBe(0);
  });

  it('does not keep the WebAssembly memory alive through its result', () => {
    const out = slic(noisy(40, 30, 12), { nSegments: 20 });
    expect(out.labels.buffer).toBeInstanceOf(ArrayBuffer);
    expect(out.labels.buffer.byteLength).toBe(40 * 30 * 4);
  });
});
