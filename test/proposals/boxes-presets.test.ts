import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import {
  fromXywh, iou, nms, passesFilter, presets, proposalConfigSchema, propose, randomBoxes, rescaleBoxes, resolveRecipe, regularGrid, toXywh, type Box,
} from '../../stages/proposals/index.js';
import { scene } from './helpers.js';

describe('box conventions', () => {
  it('OpenCV (x, y, w, h) maps to exclusive [x1, y1, x2, y2) and back', () => {
    expect(fromXywh(3, 4, 10, 5)).toEqual([3, 4, 13, 9]);
    expect(toXywh([3, 4, 13, 9])).toEqual([3, 4, 10, 5]);
  });

  it('IoU uses exclusive edges: touching boxes do not overlap, a box with itself is 1', () => {
    expect(iou([0, 0, 10, 10], [10, 0, 20, 10])).toBe(0);
    expect(iou([0, 0, 10, 10], [0, 0, 10, 10])).toBe(1);
    expect(iou([0, 0, 10, 10], [5, 0, 15, 10])).toBeCloseTo(50 / 150, 12);
  });

  it('rescales x and y independently (DETReg squashes to 128x128)', () => {
    expect(rescaleBoxes([[0, 0, 128, 64]], 128, 128, 640, 480)).toEqual([[0, 0, 640, 240]]);
  });

  it('NMS keeps the higher-scored of two overlapping boxes and both of two disjoint ones', () => {
    const boxes: Box[] = [[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]];
    expect(nms(boxes, [0.2, 0.9, 0.5], 0.5)).toEqual([1, 2]);
  });

  it('CCOP filter is strict on aspect (1/3 < w/h < 3) and sqrt(wh) > 20; SoCo is inclusive', () => {
    const ccop = presets.ccop.filters[0]!;
    expect(passesFilter([0, 0, 90, 30], ccop, 100, 100)).toBe(false); // w/h = 3 exactly
    expect(passesFilter([0, 0, 89, 30], ccop, 100, 100)).toBe(true);
    expect(passesFilter([0, 0, 20, 20], ccop, 100, 100)).toBe(false); // sqrt(wh) = 20
    const soco = presets.soco.filters[1]!;
    expect(passesFilter([0, 0, 96, 32], soco, 200, 200)).toBe(true); // w/h = 3, inclusive
    expect(passesFilter([0, 0, 31, 40], soco, 200, 200)).toBe(false); // w < 32
  });
});

describe('UP-DETR random boxes', () => {
  it('draws sizes in [8, n - 8] and offsets that keep the patch inside, never touching the far edge unless full', () => {
    const rng = new Rng(7);
    const boxes = randomBoxes(100, 60, rng, { count: 500 });
    for (const [x1, y1, x2, y2] of boxes) {
      expect(x2 - x1).toBeGreaterThanOrEqual(8);
      expect(x2 - x1).toBeLessThanOrEqual(92);
      expect(y2 - y1).toBeGreaterThanOrEqual(8);
      expect(y2 - y1).toBeLessThanOrEqual(52);
      expect(x2).toBeLessThan(100);
      expect(y2).toBeLessThan(60);
    }
    expect(new Set(boxes.map((b) => b.join())).size).toBeGreaterThan(450);
  });

  it('is reproducible from the seed', () => {
    expect(randomBoxes(50, 50, new Rng(3))).toEqual(randomBoxes(50, 50, new Rng(3)));
  });
});

describe('SLIC seed grid (skimage regular_grid)', () => {
  it('224x224 with 100 segments: start 11, stride 22 (10 x 10 seeds)', () => {
    expect(regularGrid(224, 224, 100)).toEqual({ starts: [11, 11], steps: [22, 22] });
  });
  it('every pixel is a seed when the image has no more pixels than segments', () => {
    expect(regularGrid(3, 3, 9)).toBeNull();
  });
});

describe('presets', () => {
  const image = scene(160, 120, 4, 4);

  it('detreg: at most 30 boxes, fractional after mapping 128x128 back, order seeded per sample', async () => {
    const a = await propose(image, 'detreg', { seed: 1, key: 'k' });
    const b = await propose(image, 'detreg', { seed: 1, key: 'k' });
    const c = await propose(image, 'detreg', { seed: 2, key: 'k' });
    expect(a.boxes.length).toBeLessThanOrEqual(30);
    expect(a.boxes).toEqual(b.boxes);
    expect(c.boxes).not.toEqual(a.boxes);
    expect(a.boxes.some((box) => box.some((v) => !Number.isInteger(v)))).toBe(true);
  });

  it('ccop: at most 50 boxes, all passing its filter, no pair above IoU 0.5', async () => {
    const out = await propose(image, 'ccop', { seed: 5 });
    expect(out.boxes.length).toBeGreaterThan(0);
    expect(out.boxes.length).toBeLessThanOrEqual(50);
    for (const b of out.boxes) expect(passesFilter(b, presets.ccop.filters[0]!, 160, 120)).toBe(true);
    for (let i = 0; i < out.boxes.length; i++) for (let j = i + 1; j < out.boxes.length; j++) expect(iou(out.boxes[i]!, out.boxes[j]!)).toBeLessThanOrEqual(0.5);
  });

  it('soco: falls back to the whole image when no box survives any filter', async () => {
    const tiny = scene(30, 30, 1, 2); // every box is narrower than 32 px
    expect((await propose(tiny, 'soco')).boxes).toEqual([[0, 0, 30, 30]]);
  });

  it('r2o: label map at 224x224, labels from 0, one box per segment', async () => {
    const out = await propose(image, 'r2o');
    expect([out.segments!.width, out.segments!.height]).toEqual([224, 224]);
    expect(Math.min(...out.segments!.labels)).toBe(0);
    expect(out.boxes.length).toBe(out.segments!.count);
  });

  it('config overrides merge into the preset', () => {
    const recipe = resolveRecipe(proposalConfigSchema.parse({ preset: 'detreg', maxBoxes: 100, selectiveSearch: { mode: 'quality' } }));
    expect(recipe.maxBoxes).toBe(100);
    expect(recipe.selectiveSearch.mode).toBe('quality');
    expect(recipe.selectiveSearch.treatRgbAsBgr).toBe(true);
    expect(recipe.resize).toEqual({ width: 128, height: 128, kernel: 'linear' });
    expect(() => proposalConfigSchema.parse({ preset: 'detreg', selectiveSearch: { mdoe: 'fast' } })).toThrow(/mdoe/);
  });
});
