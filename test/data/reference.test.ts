import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { decodeRle, encodeRle, maskArea, maskBox, polygonsToMask } from '../../stages/data/masks.js';
import { resampleRegion, type Interpolation } from '../../stages/data/resample.js';
import { adjustBrightness, adjustContrast, adjustHue, adjustSaturation, gaussianBlurInPlace, grayscaleInPlace, solarizeInPlace } from '../../stages/data/augment.js';
import type { RgbF32 } from '../../stages/data/image.js';

// Numbers produced by pycocotools: see test/fixtures/data/make_fixtures.py.
const ref = JSON.parse(readFileSync(new URL('../fixtures/data/reference.json', import.meta.url), 'utf8')) as {
  rle: { height: number; width: number; kind: string; bits: string; counts: string; area: number; bbox: number[] }[];
  polygons: { height: number; width: number; polygon: number[]; area: number }[];
};

describe('COCO RLE matches pycocotools', () => {
  for (const m of ref.rle) {
    it(`${m.kind} ${m.height}x${m.width}`, () => {
      const mask = Uint8Array.from(m.bits, (c) => (c === '1' ? 1 : 0));
      expect(encodeRle(mask, m.height, m.width).counts).toBe(m.counts);
      expect(Array.from(decodeRle({ size: [m.height, m.width], counts: m.counts }))).toEqual(Array.from(mask));
      expect(maskArea(mask)).toBe(m.area);
      const box = maskBox(mask, m.height, m.width);
      // pycocotools' toBbox is [x, y, w, h] and [0, 0, 0, 0] for an empty mask.
      expect(box ? [box[0], box[1], box[2] - box[0], box[3] - box[1]] : [0, 0, 0, 0]).toEqual(m.bbox);
    });
  }

  it('polygon rasterisation agrees with pycocotools up to boundary pixels', () => {
    for (const p of ref.polygons) {
      const area = maskArea(polygonsToMask([p.polygon], p.height, p.width));
      // Both sample the same outline; they differ only in which boundary pixels they keep.
      let perimeter = 0;
      for (let i = 0; i < p.polygon.length; i += 2) {
        const j = (i + 2) % p.polygon.length;
        perimeter += Math.hypot(p.polygon[j]! - p.polygon[i]!, p.polygon[j + 1]! - p.polygon[i + 1]!);
      }
      expect(Math.abs(area - p.area)).toBeLessThan(perimeter * 0.5);
    }
  });
});

// torchvision's resized_crop on PIL images (crop, then Pillow's resize): see test/fixtures/data/make_resized_crop.py.
const crops = JSON.parse(readFileSync(new URL('../fixtures/data/resized-crop.json', import.meta.url), 'utf8')) as {
  width: number;
  height: number;
  images: Record<string, number[]>;
  cases: Array<{ image: string; box: number[]; size: [number, number]; resample: Interpolation; output: number[] }>;
};

describe("resampling matches torchvision's resized_crop on PIL images", () => {
  for (const c of crops.cases) {
    it(`${c.image} ${c.resample} ${JSON.stringify(c.box)} -> ${c.size.join('x')}`, () => {
      const src = { width: crops.width, height: crops.height, data: Uint8Array.from(crops.images[c.image]!) };
      const out = resampleRegion(src, c.box, c.size[0], c.size[1], c.resample);
      let worst = 0;
      out.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v * 255 - c.output[i]!))));
      // Pillow rounds its 8-bit fixed-point weights and the intermediate row; we stay in float. Reading one pixel
      // past the box (Pillow's resize(size, box=...)) puts the 'framed' image's edges off by tens of levels.
      expect(worst).toBeLessThanOrEqual(1.5);
    });
  }
});

// torchvision.transforms.functional on tensors: see test/fixtures/data/make_torchvision_fixtures.py.
const tv = JSON.parse(readFileSync(new URL('../fixtures/data/torchvision.json', import.meta.url), 'utf8')) as {
  width: number;
  height: number;
  input: number[];
  cases: { op: string; arg: number; output: number[] }[];
};

describe('colour operations and blur match torchvision', () => {
  const ops: Record<string, (img: RgbF32, arg: number) => void> = {
    brightness: adjustBrightness,
    contrast: adjustContrast,
    saturation: adjustSaturation,
    hue: adjustHue,
    grayscale: (img) => grayscaleInPlace(img),
    solarize: (img, t) => solarizeInPlace(img, t),
    blur: gaussianBlurInPlace,
  };
  for (const c of tv.cases) {
    it(`${c.op}(${c.arg})`, () => {
      const img: RgbF32 = { width: tv.width, height: tv.height, data: Float32Array.from(tv.input) };
      ops[c.op]!(img, c.arg);
      let worst = 0;
      img.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - c.output[i]!))));
      expect(worst).toBeLessThan(1e-5);
    });
  }
});
