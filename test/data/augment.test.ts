import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import {
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  augmentView,
  augmentViews,
  gaussianBlurInPlace,
  grayscaleInPlace,
  resizeBlurInPlace,
  sampleResizedCrop,
  solarizeInPlace,
  VIEW_PRESETS,
} from '../../stages/data/augment.js';
import { generateSyntheticImage, SYNTHETIC_SPECS } from '../../stages/data/synthetic.js';
import type { RgbF32 } from '../../stages/data/image.js';

const solid = (w: number, h: number, rgb: [number, number, number]): RgbF32 => {
  const data = new Float32Array(w * h * 3);
  for (let i = 0; i < w * h; i++) data.set(rgb, i * 3);
  return { width: w, height: h, data };
};

const noise = (w: number, h: number, seed: string): RgbF32 => {
  const rng = Rng.fromSeed(seed);
  return { width: w, height: h, data: Float32Array.from({ length: w * h * 3 }, () => rng.next()) };
};

describe('RandomResizedCrop parameters', () => {
  it('stay inside the image with area and aspect in range (up to rounding)', () => {
    const rng = Rng.fromSeed('rrc');
    for (let t = 0; t < 500; t++) {
      const W = rng.int(16, 300), H = rng.int(16, 300);
      const { i, j, h, w } = sampleResizedCrop(rng, W, H, [0.2, 1], [3 / 4, 4 / 3]);
      expect(i).toBeGreaterThanOrEqual(0);
      expect(j).toBeGreaterThanOrEqual(0);
      expect(i + h).toBeLessThanOrEqual(H);
      expect(j + w).toBeLessThanOrEqual(W);
      const fallback = i === Math.floor((H - h) / 2) && j === Math.floor((W - w) / 2);
      if (!fallback) {
        expect((w * h) / (W * H)).toBeGreaterThan(0.2 * 0.8);
        expect(w / h).toBeGreaterThan((3 / 4) * 0.85);
        expect(w / h).toBeLessThan((4 / 3) * 1.15);
      }
    }
  });

  it('falls back to the largest centred crop within the ratio when sampling keeps failing', () => {
    // A 400x10 strip cannot hold a near-square crop of >= 90% area: torchvision's fallback crop is 13x10 centred.
    expect(sampleResizedCrop(Rng.fromSeed('x'), 400, 10, [0.9, 1], [3 / 4, 4 / 3])).toEqual({ i: 0, j: 193, h: 10, w: 13 });
  });
});

describe('colour operations', () => {
  it('identity factors change nothing', () => {
    const img = noise(9, 7, 'id');
    const before = Float32Array.from(img.data);
    adjustBrightness(img, 1);
    adjustContrast(img, 1);
    adjustSaturation(img, 1);
    adjustHue(img, 0);
    img.data.forEach((v, i) => expect(v).toBeCloseTo(before[i]!, 5));
  });

  it('hue rotation by a third turns red into green; saturation 0 and grayscale give grey', () => {
    const red = solid(2, 2, [1, 0, 0]);
    adjustHue(red, 1 / 3);
    expect(Array.from(red.data.slice(0, 3)).map((v) => Math.round(v * 1000) / 1000)).toEqual([0, 1, 0]);
    const img = noise(5, 5, 'sat');
    const grey = { ...img, data: Float32Array.from(img.data) };
    adjustSaturation(img, 0);
    grayscaleInPlace(grey);
    for (let p = 0; p < 25; p++) {
      expect(img.data[p * 3]).toBeCloseTo(img.data[p * 3 + 2]!, 6);
      expect(grey.data[p * 3]).toBeCloseTo(img.data[p * 3]!, 6);
    }
  });

  it('contrast 0 flattens to the mean grey; brightness scales and clamps', () => {
    const img = noise(6, 6, 'contrast');
    adjustContrast(img, 0);
    const v0 = img.data[0]!;
    img.data.forEach((v) => expect(v).toBeCloseTo(v0, 6));
    const b = solid(1, 1, [0.2, 0.6, 0.9]);
    adjustBrightness(b, 1.5);
    expect(Array.from(b.data).map((v) => Math.round(v * 100) / 100)).toEqual([0.3, 0.9, 1]);
  });

  it('solarize inverts values at or above one half', () => {
    const img = solid(1, 1, [0.2, 0.5, 0.9]);
    solarizeInPlace(img);
    expect(Array.from(img.data).map((v) => Math.round(v * 100) / 100)).toEqual([0.2, 0.5, 0.1]);
  });

  it('blur equals a direct 2-D Gaussian convolution with reflected borders', () => {
    const img = noise(11, 7, 'blur-ref');
    const sigma = 1.3, radius = Math.ceil(3 * sigma);
    const reflect = (i: number, n: number) => (i < 0 ? -i : i >= n ? 2 * n - 2 - i : i);
    const expected = new Float32Array(img.data.length);
    let norm = 0;
    for (let k = -radius; k <= radius; k++) norm += Math.exp((-k * k) / (2 * sigma * sigma));
    for (let y = 0; y < 7; y++)
      for (let x = 0; x < 11; x++)
        for (let dy = -radius; dy <= radius; dy++)
          for (let dx = -radius; dx <= radius; dx++) {
            const w = Math.exp((-(dx * dx) - dy * dy) / (2 * sigma * sigma)) / (norm * norm);
            const p = (reflect(y + dy, 7) * 11 + reflect(x + dx, 11)) * 3;
            for (let c = 0; c < 3; c++) expected[(y * 11 + x) * 3 + c]! += img.data[p + c]! * w;
          }
    gaussianBlurInPlace(img, sigma);
    img.data.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
  });

  it('blur keeps a flat image flat and lowers the variance of noise', () => {
    const flat = solid(8, 8, [0.3, 0.3, 0.3]);
    gaussianBlurInPlace(flat, 1.5);
    flat.data.forEach((v) => expect(v).toBeCloseTo(0.3, 5));
    const img = noise(32, 32, 'blur');
    const variance = (d: Float32Array) => {
      const m = d.reduce((a, b) => a + b, 0) / d.length;
      return d.reduce((a, b) => a + (b - m) ** 2, 0) / d.length;
    };
    const before = variance(img.data);
    gaussianBlurInPlace(img, 1);
    expect(variance(img.data)).toBeLessThan(before / 4);
  });
});

describe('views', () => {
  const scene = generateSyntheticImage(SYNTHETIC_SPECS.tiny, 5, 'train', 2).image;

  it('are a pure function of the rng state', () => {
    const [a0, a1] = augmentViews(Rng.fromSeed('v', 1), scene, VIEW_PRESETS.pixpro(48));
    const [b0, b1] = augmentViews(Rng.fromSeed('v', 1), scene, VIEW_PRESETS.pixpro(48));
    expect(Buffer.from(a0!.image.data.buffer).equals(Buffer.from(b0!.image.data.buffer))).toBe(true);
    expect(a1!.geometry).toEqual(b1!.geometry);
    expect(a1!.applied).toEqual(b1!.applied);
  });

  it('follow the preset probabilities (BYOL: view 0 always blurred, view 1 sometimes solarized, never view 0)', () => {
    const rng = Rng.fromSeed('presets');
    let blurred0 = 0, solarized0 = 0, solarized1 = 0, flips = 0;
    const n = 300;
    for (let t = 0; t < n; t++) {
      const [v0, v1] = augmentViews(rng, scene, VIEW_PRESETS.pixpro(16));
      blurred0 += v0!.applied.blurSigma !== undefined ? 1 : 0;
      solarized0 += v0!.applied.solarized ? 1 : 0;
      solarized1 += v1!.applied.solarized ? 1 : 0;
      flips += v0!.geometry.flipped ? 1 : 0;
    }
    expect(blurred0).toBe(n);
    expect(solarized0).toBe(0);
    expect(solarized1 / n).toBeGreaterThan(0.12);
    expect(solarized1 / n).toBeLessThan(0.28);
    expect(flips / n).toBeGreaterThan(0.4);
    expect(flips / n).toBeLessThan(0.6);
  });

  it('share one flip when asked (ReSim) and produce multi-crop sizes', () => {
    const rng = Rng.fromSeed('shared');
    for (let t = 0; t < 20; t++) {
      const [a, b] = augmentViews(rng, scene, VIEW_PRESETS.mocoV2(32), { sharedFlip: true });
      expect(a!.geometry.flipped).toBe(b!.geometry.flipped);
    }
    const views = augmentViews(rng, scene, VIEW_PRESETS.multiCrop(48, 24, 4));
    expect(views.map((v) => v.image.width)).toEqual([48, 48, 24, 24, 24, 24]);
    for (const v of views) expect(v.image.data.length).toBe(v.image.width * v.image.height * 3);
  });

  it('keep values in [0, 1] through every operation', () => {
    const rng = Rng.fromSeed('range');
    for (let t = 0; t < 20; t++) {
      const v = augmentView(rng, scene, { ...VIEW_PRESETS.scrl(40)[1]!, solarizeP: 0.5, grayscaleP: 0.5 });
      let lo = Infinity, hi = -Infinity;
      for (const x of v.image.data) {
        lo = Math.min(lo, x);
        hi = Math.max(hi, x);
      }
      expect(lo).toBeGreaterThanOrEqual(0);
      expect(hi).toBeLessThanOrEqual(1);
    }
  });
});

describe("SCRL's ResizeBlur", () => {
  it('keeps a flat image flat, smooths a checkerboard, and is what VIEW_PRESETS.scrl applies (p 1 on view 0)', () => {
    const flat: RgbF32 = { width: 20, height: 14, data: new Float32Array(20 * 14 * 3).fill(100 / 255) };
    resizeBlurInPlace(flat, 1.5);
    expect(flat.data.every((v) => Math.abs(v - 100 / 255) < 1e-6)).toBe(true);
    const board: RgbF32 = { width: 20, height: 14, data: new Float32Array(20 * 14 * 3).map((_, i) => ((Math.floor(i / 3) % 20) + Math.floor(i / 60)) % 2) };
    const spread = (d: Float32Array) => d.reduce((a, v) => a + (v - 0.5) ** 2, 0) / d.length;
    const before = spread(board.data);
    resizeBlurInPlace(board, 1.5);
    expect(spread(board.data)).toBeLessThan(before * 0.6);
    // Pixels stay on the 8-bit grid, as after PIL's round trip.
    expect(board.data.every((v) => Math.abs(v * 255 - Math.round(v * 255)) < 1e-4)).toBe(true);
    const [v0, v1] = VIEW_PRESETS.scrl(32);
    expect(v0!.blur).toBeUndefined();
    expect(v0!.resizeBlur).toEqual({ p: 1, factors: [1.1, 1.2, 1.5] });
    expect(v1!.resizeBlur!.p).toBe(0.1);
    const applied = augmentView(new Rng(3), { width: 40, height: 40, data: new Uint8Array(40 * 40 * 3).fill(7) }, v0!);
    expect([1.1, 1.2, 1.5]).toContain(applied.applied.resizeBlurFactor);
  });
});
