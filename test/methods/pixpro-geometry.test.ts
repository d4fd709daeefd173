/**
 * PixPro's data path end to end for KNOWN crops and flips, against zdaxie/PixPro@e390d6b RUN on the same boxes.
 * Reference values: test/fixtures/methods/pixpro/geometry.json, written by
 * `/usr/bin/python3 test/fixtures/methods/pixpro/make_geometry.py` (see its docstring): the official
 * RandomResizedCropCoord + RandomHorizontalFlipCoord on a coordinate-ramp image (the views and their coordinates) and the
 * positive mask of the official `regression_loss` on 4×4, 7×7 and 8×8 grids.
 * Ours: the feeder's view path (`augmentViews` with PixPro's view recipe, colour operations off so the ramp survives, the
 * crop drawn as given and the flip forced through flipP) → each view's ViewGeometry → `pixproCoords` → `pixproMasks`,
 * what `PixPro.step` builds its masks from.
 */
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend } from '../../core/tf.js';
import { augmentViews, VIEW_PRESETS, type CropDraw, type ViewSpec } from '../../stages/data/augment.js';
import { pixproBinCenters, pixproCoords, type ViewGeometry } from '../../stages/data/geometry.js';
import type { RgbF32, RgbU8 } from '../../stages/data/image.js';
import { pixproMasks } from '../../stages/methods/pixpro.js';

interface Case {
  name: string;
  imageWidth: number;
  imageHeight: number;
  views: { i: number; j: number; h: number; w: number; flipped: boolean }[];
  coords: number[][];
  binMeans: number[][];
  masks: Record<string, { '01': number[]; '10': number[] }>;
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/methods/pixpro/geometry.json', import.meta.url), 'utf8')) as {
  posRatio: number;
  viewSize: number;
  grids: number[];
  binGrid: number;
  cases: Case[];
};
const { posRatio, viewSize, binGrid } = fixture;

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** The generator's image: R = round(255 x/(W−1)), G = round(255 y/(H−1)), B = 128 (no .5 ties at these sizes). */
function ramp(width: number, height: number): RgbU8 {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set([Math.round((255 * x) / (width - 1)), Math.round((255 * y) / (height - 1)), 128], (y * width + x) * 3);
  return { width, height, data };
}

/** Both views of a case through the feeder's path: PixPro's recipe without colour operations, given crops, forced flips. */
function ourViews(c: Case): { image: RgbF32; geometry: ViewGeometry }[] {
  const specs: ViewSpec[] = VIEW_PRESETS.pixpro(viewSize).map((spec, v) => {
    const { colorJitter: _cj, blur: _b, ...rest } = spec;
    return { ...rest, grayscaleP: 0, solarizeP: 0, flipP: c.views[v]!.flipped ? 1 : 0 };
  });
  let next = 0;
  const drawCrop: CropDraw = () => {
    const { i, j, h, w } = c.views[next++]!;
    return { i, j, h, w };
  };
  return augmentViews(Rng.fromSeed('pixpro-geometry', c.name), ramp(c.imageWidth, c.imageHeight), specs, { drawCrop });
}

/** Mean R and G (0..255) of each bin of a binGrid × binGrid split of a view, row-major: [g², 2] flattened. */
function binMeans(image: RgbF32): number[] {
  const b = image.width / binGrid;
  const out: number[] = [];
  for (let r = 0; r < binGrid; r++) {
    for (let c = 0; c < binGrid; c++) {
      let red = 0, green = 0;
      for (let y = r * b; y < (r + 1) * b; y++) {
        for (let x = c * b; x < (c + 1) * b; x++) {
          red += image.data[(y * image.width + x) * 3]! * 255;
          green += image.data[(y * image.width + x) * 3 + 1]! * 255;
        }
      }
      out.push(red / (b * b), green / (b * b));
    }
  }
  return out;
}

describe("PixPro's geometry against the official data path (transform_coord.py + regression_loss) on known crops", () => {
  it('covers flips of one and of both views, views of very different scale, a mirrored pair and disjoint crops', () => {
    const flips = fixture.cases.map((c) => c.views.map((v) => v.flipped));
    expect(flips.some(([a, b]) => a !== b)).toBe(true);
    expect(flips.some(([a, b]) => a && b)).toBe(true);
    const areas = fixture.cases.map((c) => c.views.map((v) => (v.w * v.h) / (c.imageWidth * c.imageHeight)));
    expect(areas.some(([a, b]) => Math.max(a!, b!) / Math.min(a!, b!) > 10)).toBe(true);
    expect(fixture.cases.some((c) => c.masks['8']!['01'].every((m) => m === 0))).toBe(true);
    expect(fixture.grids).toContain(8); // the zoo's C5 (resnet-tiny, CIFAR stem, 64 px)
  });

  for (const c of fixture.cases) {
    describe(c.name, () => {
      const views = ourViews(c);
      const geometry = views.map((v) => v.geometry);

      it('the feeder records the crop and flip that made the view, and pixproCoords gives the official coordinates', () => {
        geometry.forEach((g, v) => {
          const { i, j, h, w, flipped } = c.views[v]!;
          expect(g).toMatchObject({ imageWidth: c.imageWidth, imageHeight: c.imageHeight, crop: [j, i, j + w, i + h], width: viewSize, height: viewSize, flipped });
          pixproCoords(g).forEach((x, k) => expect(Math.abs(x - c.coords[v]![k]!)).toBeLessThan(1e-6)); // official: float32
        });
      });

      for (const g of fixture.grids) {
        it(`positive masks on a ${g}×${g} grid equal the official ones, both directions`, () => {
          const m01 = pixproMasks([geometry[0]!], [geometry[1]!], g, posRatio);
          const m10 = pixproMasks([geometry[1]!], [geometry[0]!], g, posRatio);
          expect(Array.from(m01.dataSync())).toEqual(c.masks[String(g)]!['01']);
          expect(Array.from(m10.dataSync())).toEqual(c.masks[String(g)]!['10']);
          m01.dispose();
          m10.dispose();
        });
      }

      it('our view pixels come from where the official view pixels come from (flip of the crop, not of the image)', () => {
        views.forEach((view, v) => {
          const ours = binMeans(view.image);
          const ref = c.binMeans[v]!;
          // A ramp step is 255/(W−1) ≈ 2.7 levels per original pixel: 1 level is a third of a pixel. A flip of the image
          // instead of the crop, a swapped view or an off-by-one crop is tens of levels off.
          const worst = Math.max(...ours.map((x, k) => Math.abs(x - ref[k]!)));
          expect(worst, `view ${v}`).toBeLessThan(1);
        });
      });

      it("each bin's pixels sit where PixPro's normalised frame puts the bin's centre (within half a pixel, its frame's offset)", () => {
        views.forEach((view, v) => {
          const means = binMeans(view.image);
          const centres = pixproBinCenters(pixproCoords(geometry[v]!), binGrid);
          centres.forEach(([x, y], k) => {
            // In pixel-index units (pixel k's centre is k): the content from the ramp, the bin centre from the frame.
            const contentX = (means[2 * k]! / 255) * (c.imageWidth - 1), contentY = (means[2 * k + 1]! / 255) * (c.imageHeight - 1);
            expect(Math.abs(contentX - x * (c.imageWidth - 1)), `view ${v} bin ${k} x`).toBeLessThan(0.75);
            expect(Math.abs(contentY - y * (c.imageHeight - 1)), `view ${v} bin ${k} y`).toBeLessThan(0.75);
          });
        });
      });
    });
  }

  it('the same crop with and without a flip: mirrored pixels, and a mask that pairs bin (r, c) with (r, g−1−c)', () => {
    const c = fixture.cases.find((k) => k.views[0]!.i === k.views[1]!.i && k.views[0]!.j === k.views[1]!.j && k.views[0]!.flipped !== k.views[1]!.flipped)!;
    expect(c).toBeDefined();
    const [a, b] = ourViews(c).map((v) => binMeans(v.image));
    for (let r = 0; r < binGrid; r++) {
      for (let col = 0; col < binGrid; col++) {
        const k = r * binGrid + col, m = r * binGrid + (binGrid - 1 - col);
        expect(Math.abs(a![2 * k]! - b![2 * m]!)).toBeLessThan(0.5);
        expect(Math.abs(a![2 * k + 1]! - b![2 * m + 1]!)).toBeLessThan(0.5);
      }
    }
    const g = 8, mask = c.masks[String(g)]!['01'];
    for (let i = 0; i < g * g; i++) expect(mask[i * g * g + (Math.floor(i / g) * g + (g - 1 - (i % g)))]).toBe(1);
  });
});
