import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cocoEvaluate, COCO_STAT_NAMES, type CocoDetection, type CocoGroundTruth } from '../../stages/downstream/metrics/coco-eval.js';
import { fromCocoRle, type CocoRle } from '../../stages/downstream/metrics/rle.js';
import { BadInputError } from '../../core/errors.js';

/** Scenes and the numbers pycocotools printed for them (test/fixtures/downstream/make_coco_fixtures.py). */
interface Scene {
  name: string;
  iouType: 'bbox' | 'segm';
  imageIds: number[];
  categoryIds: number[];
  groundTruth: Array<Omit<CocoGroundTruth, 'segmentation'> & { segmentation?: CocoRle }>;
  detections: Array<Omit<CocoDetection, 'segmentation'> & { segmentation?: CocoRle }>;
  expected: { stats: number[]; perCategory: Array<{ categoryId: number; AP: number; AP50: number; AR100: number }> };
}

const fixture = JSON.parse(readFileSync(new URL('../fixtures/downstream/coco-eval.json', import.meta.url), 'utf8')) as { scenes: Scene[] };

function run(scene: Scene) {
  return cocoEvaluate({
    iouType: scene.iouType,
    imageIds: scene.imageIds,
    categoryIds: scene.categoryIds,
    groundTruth: scene.groundTruth.map((g) => ({ ...g, segmentation: g.segmentation && fromCocoRle(g.segmentation) })),
    detections: scene.detections.map((d) => ({ ...d, segmentation: d.segmentation && fromCocoRle(d.segmentation) })),
  });
}

describe('cocoEvaluate equals pycocotools COCOeval', () => {
  it('covers every edge case the fixture promises', () => {
    const names = fixture.scenes.map((s) => s.name);
    for (const n of ['boxes-crowd', 'boxes-empty-images', 'boxes-outside-and-zero-area', 'boxes-many-detections-with-ties', 'boxes-empty-predictions', 'masks-with-boxes-and-crowd']) {
      expect(names).toContain(n);
    }
  });

  for (const scene of fixture.scenes) {
    it(`${scene.name}: all 12 summary stats and per-category AP, bit for bit`, () => {
      const result = run(scene);
      expect(COCO_STAT_NAMES.map((n) => result.stats[n])).toEqual(scene.expected.stats);
      expect(result.perCategory).toEqual(scene.expected.perCategory);
    });
  }

  it('AP is 1 for perfect detections and a detection on an image without objects costs precision', () => {
    const gt: CocoGroundTruth[] = [
      { imageId: 1, categoryId: 1, bbox: [10, 10, 40, 40] },
      { imageId: 2, categoryId: 1, bbox: [0, 0, 120, 120] },
    ];
    const perfect = cocoEvaluate({ iouType: 'bbox', imageIds: [1, 2, 3], categoryIds: [1], groundTruth: gt, detections: gt.map((g) => ({ ...g, bbox: g.bbox!, score: 0.9 })) });
    expect(perfect.stats.AP).toBe(1);
    expect(perfect.stats.APs).toBe(-1); // no small objects: -1, as pycocotools reports
    const withFp = cocoEvaluate({
      iouType: 'bbox',
      imageIds: [1, 2, 3],
      categoryIds: [1],
      groundTruth: gt,
      detections: [...gt.map((g) => ({ ...g, bbox: g.bbox!, score: 0.5 })), { imageId: 3, categoryId: 1, bbox: [0, 0, 10, 10], score: 0.99 }],
    });
    expect(withFp.stats.AP).toBeLessThan(1);
  });

  it('names the detection that points at an unknown image', () => {
    expect(() =>
      cocoEvaluate({ iouType: 'bbox', imageIds: [1], categoryIds: [1], groundTruth: [], detections: [{ imageId: 7, categoryId: 1, bbox: [0, 0, 1, 1], score: 1 }] }),
    ).toThrow(BadInputError);
    expect(() =>
      cocoEvaluate({ iouType: 'bbox', imageIds: [1], categoryIds: [1], groundTruth: [], detections: [{ imageId: 7, categoryId: 1, bbox: [0, 0, 1, 1], score: 1 }] }),
    ).toThrow(/detections\[0\]/);
  });
});
