import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../core/tf.js';
import { buildBackbone } from '../../stages/downstream/backbone.js';
import { scoreDetections, scoreMasks } from '../../stages/downstream/detection/evaluate.js';
import { maskTarget, pasteMask } from '../../stages/downstream/detection/masks.js';
import { detect, disposeDetector, trainDetector } from '../../stages/downstream/detection/train.js';
import { POST, detectorOptions, squareScenes } from './detection-helpers.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** 8 x 8 mask whose left half (columns 0-3) is the object. */
const leftHalf = Uint8Array.from({ length: 64 }, (_, p) => (p % 8 < 4 ? 1 : 0));

describe('mask targets and pasting', () => {
  it('bins are foreground when at least 2 of their 2 x 2 sample points are', () => {
    // Box = whole image at resolution 4: bin j samples columns floor(2j + 0.5), floor(2j + 1.5) = 2j, 2j + 1.
    expect([...maskTarget(leftHalf, 8, 8, [0, 0, 8, 8], 4)]).toEqual([1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]);
    // One bin over a 2 x 2 box: its points read pixels (0,0) (1,0) (0,1) (1,1).
    const one = new Uint8Array(4);
    one[0] = 1;
    expect([...maskTarget(one, 2, 2, [0, 0, 2, 2], 1)]).toEqual([0]);
    one[3] = 1;
    expect([...maskTarget(one, 2, 2, [0, 0, 2, 2], 1)]).toEqual([1]);
    expect([...maskTarget(new Uint8Array(64).fill(1), 8, 8, [1, 1, 5, 5], 3)].every((v) => v === 1)).toBe(true);
  });

  it('pasting a target back at its box gives the original mask (axis-aligned object)', () => {
    const target = maskTarget(leftHalf, 8, 8, [0, 0, 8, 8], 4);
    expect([...pasteMask(target, 4, [0, 0, 8, 8], 8, 8)]).toEqual([...leftHalf]);
  });

  it('a full map fills exactly the pixels whose centres are inside the box', () => {
    const pasted = pasteMask(new Float32Array(16).fill(1), 4, [2, 2, 6, 6], 8, 8);
    expect(pasted.reduce((a, v) => a + v, 0)).toBe(16);
    expect(pasted[2 * 8 + 2]).toBe(1);
    expect(pasted[6 * 8 + 6]).toBe(0);
    expect(pasted[1 * 8 + 3]).toBe(0);
  });
});

describe('mask branch training', () => {
  it('overfits a few synthetic images to mask AP50 > 0.5 next to the boxes', async () => {
    const size = 32;
    const scenes = squareScenes(8, size, 'overfit');
    const model = buildBackbone('resnet-tiny', 0);
    const { detector } = await trainDetector(model, scenes, size, 3, detectorOptions({ masks: { resolution: 14, convs: 2 } }));
    const detections = detect(model, detector, scenes.map((s) => s.pixels), 8, POST);
    expect(detections.flat().every((d) => d.mask?.length === size * size)).toBe(true);
    const masks = scoreMasks(scenes, detections, ['r', 'g', 'b'], size);
    expect(masks.metrics['mask.AP50']).toBeGreaterThan(0.5);
    const boxes = scoreDetections(scenes, detections, ['r', 'g', 'b'], size);
    expect(boxes.metrics['det.AP50']).toBeGreaterThan(0.5);
    expect(boxes.predictions[0]!.detections[0]!.segmentation?.size).toEqual([size, size]);
    // With a cap of 1 mask per image only each image's best detection gets one; segm scores just those.
    const capped = detect(model, { ...detector, maskMaxDetections: 1 }, scenes.map((s) => s.pixels), 8, { scoreThreshold: 0.05, preNmsTopK: 1000, nmsIou: 0.6, maxDetections: 100 });
    expect(capped.map((list) => list.filter((d) => d.mask).length)).toEqual(capped.map((list) => Math.min(1, list.length)));
    expect(capped.every((list) => list.length === 0 || list[0]!.mask)).toBe(true);
    expect(scoreMasks(scenes, capped, ['r', 'g', 'b'], size).metrics['mask.AR100']).toBeLessThanOrEqual(masks.metrics['mask.AR100']);
    disposeDetector(detector);
    model.dispose();
  });
});
