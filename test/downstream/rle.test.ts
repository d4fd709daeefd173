import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { boxIou, maskIou, rleArea, rleDecode, rleEncode, rleFromString, rleToBbox, rleToString } from '../../stages/downstream/metrics/rle.js';
import { numpyMean } from '../../stages/downstream/metrics/numpy-sum.js';

interface MaskCase {
  height: number;
  width: number;
  bits: string | null;
  counts: string;
  uncompressed: number[];
  area: number;
  bbox: number[];
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/downstream/rle.json', import.meta.url), 'utf8')) as {
  masks: MaskCase[];
  iou: { dt: number[][]; gt: number[][]; height: number; width: number; crowd: number[]; expected: number[][] };
  boxIou: { boxes: number[][]; dt: number; crowd: number[]; expected: number[][] };
  numpyMeans: Array<{ values: number[]; mean: number }>;
};

describe('COCO RLE equals pycocotools.mask', () => {
  for (const [i, c] of fixture.masks.entries()) {
    it(`mask ${i} (${c.height}x${c.width}): encode, string form, area, bbox, decode`, () => {
      const rle = c.bits
        ? rleEncode(Array.from(c.bits, (ch) => Number(ch)), c.height, c.width)
        : { height: c.height, width: c.width, counts: c.uncompressed };
      expect(rle.counts).toEqual(c.uncompressed);
      expect(rleToString(rle.counts)).toBe(c.counts);
      expect(rleFromString(c.counts)).toEqual(c.uncompressed);
      expect(rleArea(rle)).toBe(c.area);
      expect(rleToBbox(rle)).toEqual(c.bbox);
      const decoded = rleDecode(rle);
      if (c.bits) expect(Array.from(decoded).join('')).toBe(c.bits);
      expect(rleEncode(decoded, c.height, c.width).counts).toEqual(c.uncompressed);
    });
  }

  it('mask IoU with crowd ground truth', () => {
    const { height, width } = fixture.iou;
    const toRle = (counts: number[]) => ({ height, width, counts });
    const iou = maskIou(fixture.iou.dt.map(toRle), fixture.iou.gt.map(toRle), fixture.iou.crowd.map(Boolean));
    expect(iou).toEqual(fixture.iou.expected);
  });

  it('box IoU with crowd and zero-width boxes', () => {
    const { boxes, dt, crowd, expected } = fixture.boxIou;
    expect(boxIou(boxes.slice(0, dt), boxes, crowd.map(Boolean))).toEqual(expected);
  });

  it('refuses runs that do not cover the mask', () => {
    expect(() => rleDecode({ height: 2, width: 2, counts: [1, 2] })).toThrow(/cover 3 pixels/);
  });
});

describe('numpyMean reproduces np.mean bit for bit (pairwise summation)', () => {
  for (const { values, mean } of fixture.numpyMeans) {
    it(`${values.length} values`, () => expect(numpyMean(values)).toBe(mean));
  }
});
