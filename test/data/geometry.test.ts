import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import {
  boxOriginalToView,
  boxViewToOriginal,
  boxesIntoView,
  correspondingCells,
  gridCellAt,
  gridCellCenters,
  originalToView,
  pixproCoords,
  pixproPositiveMask,
  viewToOriginal,
  viewToView,
  type Box,
  type ViewGeometry,
} from '../../stages/data/geometry.js';
import { augmentView, resizedCrop, sampleResizedCrop } from '../../stages/data/augment.js';
import { generateSyntheticImage, SYNTHETIC_SPECS } from '../../stages/data/synthetic.js';
import type { RgbF32 } from '../../stages/data/image.js';

function randomGeometry(rng: Rng, W = 97, H = 71): ViewGeometry {
  const crop = sampleResizedCrop(rng, W, H, [0.05, 1], [0.5, 2]);
  return { imageWidth: W, imageHeight: H, crop: [crop.j, crop.i, crop.j + crop.w, crop.i + crop.h], width: rng.int(8, 200), height: rng.int(8, 200), flipped: rng.next() < 0.5 };
}

describe('view geometry', () => {
  it('round-trips points and boxes between a view and the original, and between two views', () => {
    const rng = Rng.fromSeed('geometry-roundtrip');
    for (let t = 0; t < 300; t++) {
      const a = randomGeometry(rng);
      const b = randomGeometry(rng);
      const p: [number, number] = [rng.uniform(-10, 210), rng.uniform(-10, 210)];
      const back = originalToView(a, viewToOriginal(a, p));
      expect(back[0]).toBeCloseTo(p[0], 9);
      expect(back[1]).toBeCloseTo(p[1], 9);
      const viaB = viewToView(b, a, viewToView(a, b, p));
      expect(viaB[0]).toBeCloseTo(p[0], 8);
      expect(viaB[1]).toBeCloseTo(p[1], 8);
      const box: Box = [rng.uniform(0, 50), rng.uniform(0, 50), rng.uniform(60, 120), rng.uniform(60, 120)];
      const boxBack = boxOriginalToView(a, boxViewToOriginal(a, box));
      boxBack.forEach((v, i) => expect(v).toBeCloseTo(box[i]!, 8));
    }
  });

  it('maps a flipped full-image view as a mirror', () => {
    const g: ViewGeometry = { imageWidth: 10, imageHeight: 10, crop: [0, 0, 10, 10], width: 10, height: 10, flipped: true };
    expect(viewToOriginal(g, [0.5, 3.5])).toEqual([9.5, 3.5]);
    expect(boxViewToOriginal(g, [0, 0, 2, 1])).toEqual([8, 0, 10, 1]);
    const identity = { ...g, flipped: false };
    expect(Array.from(correspondingCells(identity, identity, 4))).toEqual(Array.from({ length: 16 }, (_, i) => i));
    // Row r, column c of the plain view is column 3-c of the flipped one.
    expect(Array.from(correspondingCells(identity, g, 4)).slice(0, 4)).toEqual([3, 2, 1, 0]);
  });

  it('reports how much of an original box a view keeps', () => {
    const g: ViewGeometry = { imageWidth: 100, imageHeight: 100, crop: [50, 0, 100, 100], width: 50, height: 50, flipped: false };
    const [inside, half, outside] = boxesIntoView(g, [
      [60, 10, 80, 30],
      [40, 10, 60, 30],
      [0, 0, 20, 20],
    ]);
    expect(inside!.visibleFraction).toBeCloseTo(1);
    expect(inside!.box).toEqual([10, 5, 30, 15]);
    expect(half!.visibleFraction).toBeCloseTo(0.5);
    expect(outside!.box).toBeNull();
  });

  it("follows PixPro's (W-1)-normalised coordinates, with x0 and x1 swapped on flips", () => {
    const g: ViewGeometry = { imageWidth: 11, imageHeight: 21, crop: [0, 0, 11, 21], width: 7, height: 7, flipped: false };
    expect(pixproCoords(g)).toEqual([0, 0, 1, 1]);
    expect(pixproCoords({ ...g, flipped: true })).toEqual([1, 0, 0, 1]);
    expect(pixproCoords({ ...g, crop: [5, 10, 11, 21] })).toEqual([0.5, 0.5, 1, 1]);
    // Same view twice: every bin is positive with itself and the mask is symmetric.
    const c = pixproCoords(g);
    const mask = pixproPositiveMask(c, c, 7);
    for (let i = 0; i < 49; i++) {
      expect(mask[i * 49 + i]).toBe(1);
      for (let j = 0; j < 49; j++) expect(mask[i * 49 + j]).toBe(mask[j * 49 + i]);
    }
    // A view and its mirror: bin (r, c) pairs with bin (r, 6 - c).
    const flippedMask = pixproPositiveMask(c, pixproCoords({ ...g, flipped: true }), 7);
    expect(flippedMask[0 * 49 + 6]).toBe(1);
    expect(flippedMask[0 * 49 + 0]).toBe(0);
  });
});

describe('views show the pixels their geometry claims', () => {
  it('nearest-neighbour views: the same original pixel looks the same in two views', () => {
    const scene = generateSyntheticImage(SYNTHETIC_SPECS.tiny, 11, 'train', 0).image;
    const rng = Rng.fromSeed('correspondence');
    let compared = 0;
    for (let t = 0; t < 40; t++) {
      // Crops smaller than the output, so each view pixel holds exactly one original pixel.
      const cropA = sampleResizedCrop(rng, 64, 64, [0.2, 0.5], [0.75, 1.33]);
      const cropB = sampleResizedCrop(rng, 64, 64, [0.2, 0.5], [0.75, 1.33]);
      const a = resizedCrop(scene, cropA, 80, 80, 'nearest', rng.next() < 0.5);
      const b = resizedCrop(scene, cropB, 72, 72, 'nearest', rng.next() < 0.5);
      for (let k = 0; k < 50; k++) {
        const X = rng.int(0, 64) + 0.5, Y = rng.int(0, 64) + 0.5;
        const pa = originalToView(a.geometry, [X, Y]);
        const pb = originalToView(b.geometry, [X, Y]);
        const ca = gridCellAt(a.geometry, pa, 80), cb = gridCellAt(b.geometry, pb, 72);
        if (ca < 0 || cb < 0) continue;
        const orig = (Math.floor(Y) * 64 + Math.floor(X)) * 3;
        for (let ch = 0; ch < 3; ch++) {
          expect(Math.round(a.image.data[ca * 3 + ch]! * 255)).toBe(scene.data[orig + ch]);
          expect(Math.round(b.image.data[cb * 3 + ch]! * 255)).toBe(scene.data[orig + ch]);
        }
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(200);
  });

  it('bilinear views of a linear ramp read back the ramp at the mapped position, under flips and fractional scales', () => {
    const W = 90, H = 60;
    const data = new Float32Array(W * H * 3);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) data.set([(x + 0.5) / W, (y + 0.5) / H, 0.5], (y * W + x) * 3);
    const ramp: RgbF32 = { width: W, height: H, data };
    const rng = Rng.fromSeed('ramp');
    for (let t = 0; t < 30; t++) {
      const view = augmentView(rng, ramp, { size: rng.int(20, 120), scale: [0.1, 1], flipP: 0.5 });
      const g = view.geometry;
      for (let k = 0; k < 40; k++) {
        const px = rng.int(0, g.width), py = rng.int(0, g.height);
        const [X, Y] = viewToOriginal(g, [px + 0.5, py + 0.5]);
        // Away from the crop box's border the filter taps are never truncated (the view reads only the crop's
        // pixels, as torchvision's crop-then-resize does), so the ramp is reproduced exactly.
        const margin = 2 * Math.max(1, (g.crop[2] - g.crop[0]) / g.width, (g.crop[3] - g.crop[1]) / g.height);
        if (X < g.crop[0] + margin || X > g.crop[2] - margin || Y < g.crop[1] + margin || Y > g.crop[3] - margin) continue;
        const o = (py * g.width + px) * 3;
        // Upsampling is plain linear interpolation: exact. Shrinking uses Pillow's antialiasing
        // triangle sampled at pixel centres, whose centroid may sit a few hundredths of a pixel off.
        const tolerancePx = g.width >= g.crop[2] - g.crop[0] ? 1e-3 : 0.1;
        expect(Math.abs(view.image.data[o]! * W - X)).toBeLessThan(tolerancePx);
        expect(Math.abs(view.image.data[o + 1]! * H - Y)).toBeLessThan(g.height >= g.crop[3] - g.crop[1] ? 1e-3 : 0.1);
      }
    }
  });
});

describe('feature-grid correspondence (every method that matches locations across views uses these)', () => {
  it('a point of the image lands, in both views, in grid cells whose centres are within half a cell of it', () => {
    const rng = new Rng(20261203);
    let checked = 0;
    for (let trial = 0; trial < 300; trial++) {
      const [a, b] = [randomGeometry(rng), randomGeometry(rng)];
      const g = rng.int(2, 9); // feature grid side (7 for ResNet at 224 px, 8 for the small stem at 64 px)
      // A random original point both crops contain.
      const X = rng.uniform(Math.max(a.crop[0], b.crop[0]), Math.min(a.crop[2], b.crop[2]));
      const Y = rng.uniform(Math.max(a.crop[1], b.crop[1]), Math.min(a.crop[3], b.crop[3]));
      if (!(X < Math.min(a.crop[2], b.crop[2]) && Y < Math.min(a.crop[3], b.crop[3]))) continue;
      for (const v of [a, b]) {
        const p = originalToView(v, [X, Y]);
        const cell = gridCellAt(v, p, g);
        expect(cell).toBeGreaterThanOrEqual(0);
        // The cell's centre, back in the original image, is within half a cell (in that view's original-pixel scale) of the point.
        const [cx, cy] = [((cell % g) + 0.5) * (v.width / g), (Math.floor(cell / g) + 0.5) * (v.height / g)];
        const [ox, oy] = viewToOriginal(v, [cx, cy]);
        const half = [(v.crop[2] - v.crop[0]) / g / 2, (v.crop[3] - v.crop[1]) / g / 2];
        expect(Math.abs(ox - X)).toBeLessThanOrEqual(half[0]! + 1e-9);
        expect(Math.abs(oy - Y)).toBeLessThanOrEqual(half[1]! + 1e-9);
      }
      checked++;
    }
    expect(checked).toBeGreaterThan(150);
  });

  it('correspondingCells sends each cell of one view to the cell of the other that holds its centre, under flips and scales', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 100; trial++) {
      const [a, b] = [randomGeometry(rng), randomGeometry(rng)];
      const g = rng.int(2, 9);
      const map = correspondingCells(a, b, g);
      for (let i = 0; i < g * g; i++) {
        const centre = gridCellCenters(a, g)[i]!;
        const inB = viewToView(a, b, centre);
        const expected = inB[0] >= 0 && inB[0] < b.width && inB[1] >= 0 && inB[1] < b.height ? gridCellAt(b, inB, g) : -1;
        expect(map[i]).toBe(expected);
        if (expected >= 0) {
          // Both cells see the same original point to within half a cell of each view.
          const back = viewToOriginal(b, [((expected % g) + 0.5) * (b.width / g), (Math.floor(expected / g) + 0.5) * (b.height / g)]);
          const orig = viewToOriginal(a, centre);
          expect(Math.abs(back[0] - orig[0])).toBeLessThanOrEqual((b.crop[2] - b.crop[0]) / g / 2 + 1e-9);
          expect(Math.abs(back[1] - orig[1])).toBeLessThanOrEqual((b.crop[3] - b.crop[1]) / g / 2 + 1e-9);
        }
      }
    }
  });
});
