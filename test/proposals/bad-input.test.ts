import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { BadInputError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import { decodeImage, felzenszwalb, imageFrom, propose, randomBoxes, selectiveSearch, slic, PRESET_NAMES, type RgbImage } from '../../stages/proposals/index.js';
import { scene } from './helpers.js';

const flat = (w: number, h: number): RgbImage => imageFrom(w, h, () => [120, 40, 200]);

function expectValidLabels(seg: { labels: Int32Array; count: number }) {
  const distinct = new Set(seg.labels);
  expect(distinct.size).toBe(seg.count);
  expect(Math.max(...distinct)).toBe(seg.count - 1);
}

describe('decoding odd images', () => {
  const base = scene(40, 30, 1);
  it.each([
    ['grayscale', () => sharp(base.data, { raw: { width: 40, height: 30, channels: 3 } }).grayscale().png().toBuffer()],
    ['RGBA', () => sharp(base.data, { raw: { width: 40, height: 30, channels: 3 } }).ensureAlpha(0.5).png().toBuffer()],
    ['16-bit', () => sharp(base.data, { raw: { width: 40, height: 30, channels: 3 } }).toColourspace('rgb16').png().toBuffer()],
    ['JPEG', () => sharp(base.data, { raw: { width: 40, height: 30, channels: 3 } }).jpeg().toBuffer()],
  ])('%s becomes 8-bit RGB of the same size', async (_name, make) => {
    const image = await decodeImage(await make());
    expect([image.width, image.height, image.data.length]).toEqual([40, 30, 40 * 30 * 3]);
    expect(selectiveSearch(image, { mode: 'fast' }).boxes.length).toBeGreaterThan(0);
  });

  it('16-bit input keeps its colours (reduced to 8 bits, not wrapped)', async () => {
    const png16 = await sharp(base.data, { raw: { width: 40, height: 30, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
    const image = await decodeImage(png16);
    let maxDiff = 0;
    for (let i = 0; i < image.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(image.data[i]! - base.data[i]!));
    expect(maxDiff).toBeLessThanOrEqual(1);
  });

  it('corrupt bytes are a BadInputError naming the sample', async () => {
    await expect(decodeImage(Buffer.from('not an image'), 'shard.tar#k1')).rejects.toThrow(/shard\.tar#k1: cannot decode image/);
    await expect(decodeImage(Buffer.from('not an image'))).rejects.toBeInstanceOf(BadInputError);
  });
});

describe('tiny, narrow and one-colour images give defined results', () => {
  const shapes: Array<[number, number]> = [[1, 1], [2, 2], [1, 200], [200, 1], [3, 500], [500, 3]];
  it.each(shapes)('%i x %i', async (w, h) => {
    const image = imageFrom(w, h, (x, y) => [(x * 37) % 256, (y * 53) % 256, ((x + y) * 11) % 256]);
    expectValidLabels(felzenszwalb(image));
    expectValidLabels(felzenszwalb(image, { variant: 'opencv' }));
    expectValidLabels(slic(image));
    const boxes = selectiveSearch(image, { mode: 'fast' }).boxes;
    expect(boxes).toContainEqual([0, 0, w, h]);
    for (const b of randomBoxes(w, h, new Rng(1), { count: 5 })) {
      expect(b[0]).toBeGreaterThanOrEqual(0);
      expect(b[2]).toBeLessThanOrEqual(w);
      expect(b[2]).toBeGreaterThan(b[0]);
    }
    for (const preset of PRESET_NAMES) {
      const out = await propose(image, preset);
      for (const b of out.boxes) expect(b[2] <= w + 1e-9 && b[3] <= h + 1e-9).toBe(true);
    }
  });

  it('a one-colour image is one segment and one whole-image box', () => {
    const image = flat(64, 48);
    expect(felzenszwalb(image).count).toBe(1);
    expect(felzenszwalb(image, { variant: 'opencv' }).count).toBe(1);
    expect(selectiveSearch(image, { mode: 'quality' }).boxes).toEqual([[0, 0, 64, 48]]);
    // SLIC keeps its grid on a flat image (every distance is spatial), as skimage does
    expect(slic(image, { nSegments: 12 }).count).toBeGreaterThan(1);
  });

  it('rejects impossible parameters with the field name', () => {
    const image = flat(8, 8);
    expect(() => felzenszwalb(image, { minSize: -1 })).toThrow(/felzenszwalb\.minSize/);
    expect(() => slic(image, { nSegments: 0 })).toThrow(/slic\.nSegments/);
    expect(() => selectiveSearch(image, { mode: 'turbo' as never })).toThrow(/selectiveSearch\.mode/);
    expect(() => selectiveSearch({ width: 4, height: 4, channels: 3, data: new Uint8Array(10) })).toThrow(/expected 48 bytes/);
  });
});
