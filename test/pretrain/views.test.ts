import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { IMAGENET_MEAN, IMAGENET_STD, mocoV2View, sampleCrop } from '../../stages/pretrain/views.js';

function gradientImage(width: number, height: number) {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set([(x * 255) / (width - 1), (y * 255) / (height - 1), 128], (y * width + x) * 3);
  return { width, height, data };
}

describe('sampleCrop (torchvision RandomResizedCrop.get_params)', () => {
  it('stays inside the image with area in the scale range and aspect in [3/4, 4/3] (up to rounding)', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 500; i++) {
      const c = sampleCrop(97, 61, [0.2, 1], rng);
      expect(c.x).toBeGreaterThanOrEqual(0);
      expect(c.y).toBeGreaterThanOrEqual(0);
      expect(c.x + c.w).toBeLessThanOrEqual(97);
      expect(c.y + c.h).toBeLessThanOrEqual(61);
      const areaFraction = (c.w * c.h) / (97 * 61);
      expect(areaFraction).toBeGreaterThan(0.15);
      expect(areaFraction).toBeLessThanOrEqual(1);
      expect(c.w / c.h).toBeGreaterThan(3 / 4 - 0.05);
      expect(c.w / c.h).toBeLessThan(4 / 3 + 0.05);
    }
  });

  it('falls back to a centred crop clamped to the ratio range when no draw fits', () => {
    // scale > 1 can never fit: every try fails.
    expect(sampleCrop(200, 50, [1.5, 2], new Rng(1))).toEqual({ x: 66, y: 0, w: 67, h: 50 });
  });
});

describe('mocoV2View', () => {
  it('is a size×size×3 ImageNet-normalised view, deterministic in the RNG state', () => {
    const image = gradientImage(50, 40);
    const a = mocoV2View(image, { size: 24, scale: [0.2, 1] }, new Rng(11));
    const b = mocoV2View(image, { size: 24, scale: [0.2, 1] }, new Rng(11));
    const c = mocoV2View(image, { size: 24, scale: [0.2, 1] }, new Rng(12));
    expect(a.length).toBe(24 * 24 * 3);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    expect(Buffer.from(a.buffer).equals(Buffer.from(c.buffer))).toBe(false);
    // Pixel values in [0, 1] before normalisation bound the normalised range per channel.
    for (let i = 0; i < a.length; i++) {
      const ch = i % 3;
      expect(a[i]!).toBeGreaterThanOrEqual(-IMAGENET_MEAN[ch]! / IMAGENET_STD[ch]! - 1e-5);
      expect(a[i]!).toBeLessThanOrEqual((1 - IMAGENET_MEAN[ch]!) / IMAGENET_STD[ch]! + 1e-5);
    }
  });

  it('applies the colour ops with roughly their probabilities (jitter 0.8, grayscale 0.2)', () => {
    const image = gradientImage(32, 32);
    let gray = 0;
    const n = 300;
    for (let i = 0; i < n; i++) {
      const v = mocoV2View(image, { size: 16, scale: [0.2, 1] }, new Rng(1000 + i));
      // A grayscale view has equal R, G, B before normalisation.
      const px = (k: number, ch: number) => v[k * 3 + ch]! * IMAGENET_STD[ch]! + IMAGENET_MEAN[ch]!;
      let isGray = true;
      for (let k = 0; k < 16 * 16 && isGray; k++) isGray = Math.abs(px(k, 0) - px(k, 1)) < 1e-4 && Math.abs(px(k, 1) - px(k, 2)) < 1e-4;
      if (isGray) gray++;
    }
    expect(gray / n).toBeGreaterThan(0.12);
    expect(gray / n).toBeLessThan(0.28);
  });
});
