import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { sampleResizedCrop, VIEW_PRESETS, type CropParams } from '../../stages/data/augment.js';
import { Rng } from '../../core/rng.js';
import { shardConfigSchema, shardStage, type ViewGeometry } from '../../stages/data/index.js';
import { proposalConfigSchema, proposalStage } from '../../stages/proposals/index.js';
import { boxesInImage, cropWithRetry, IMAGENET_MEAN, IMAGENET_STD, loadProposals, MethodBatchFeeder, proposalBoxesInView, regionsInView } from '../../stages/pretrain/feeder.js';

const dir = mkdtempSync(join(tmpdir(), 'densepipe-feeder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('MethodBatchFeeder', () => {
  it('gives the declared views, normalised, with their geometry, and the same batches again from a saved cursor', async () => {
    const store = new FileArtifactStore(join(dir, 'views'));
    const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref.result;
    // Three views of two sizes (a multi-crop method's shape), plus labels.
    const views = [...VIEW_PRESETS.mocoV2(24), { ...VIEW_PRESETS.mocoV2(16)[0]! }];
    const options = { store, datasetManifestKey: dataset.datasetManifestKey, split: 'train', seed: 3, batchSize: 5, views, numClasses: dataset.classes.length };
    const feeder = await MethodBatchFeeder.open(options);
    const first = await feeder.nextBatch();
    const second = await feeder.nextBatch();
    await feeder.close();
    expect(first.views.map((v) => v.length)).toEqual([5 * 24 * 24 * 3, 5 * 24 * 24 * 3, 5 * 16 * 16 * 3]);
    expect(first.viewSizes).toEqual([[24, 24], [24, 24], [16, 16]]);
    expect(first.geometry.map((g) => g.length)).toEqual([5, 5, 5]);
    expect(first.geometry[2]![0]!.width).toBe(16);
    expect(first.labels!.length).toBe(5 * dataset.classes.length);
    expect(first.labels!.every((x) => x === 0 || x === 1)).toBe(true);
    expect(first.proposals).toBeUndefined();
    expect(first.next).toEqual({ epoch: 0, position: 5 });
    expect(second.next).toEqual({ epoch: 0, position: 10 });
    // Views are independent draws: the two views of a batch differ.
    expect(Buffer.from(first.views[0]!.buffer).equals(Buffer.from(first.views[1]!.buffer))).toBe(false);
    // [0, 1] pixels after Normalize(mean, std) lie in [−mean/std, (1−mean)/std] per channel.
    for (let i = 0; i < first.views[0]!.length; i++) {
      const c = i % 3;
      expect(first.views[0]![i]!).toBeGreaterThanOrEqual(-IMAGENET_MEAN[c]! / IMAGENET_STD[c]! - 1e-5);
      expect(first.views[0]![i]!).toBeLessThanOrEqual((1 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]! + 1e-5);
    }
    const resumed = await MethodBatchFeeder.open(options, first.next);
    const again = await resumed.nextBatch();
    await resumed.close();
    for (let v = 0; v < 3; v++) expect(Buffer.from(again.views[v]!.buffer).equals(Buffer.from(second.views[v]!.buffer))).toBe(true);
    expect(again.geometry).toEqual(second.geometry);
  });

  it('hands each view the proposals of its images, mapped through crop, flip and resize', async () => {
    const store = new FileArtifactStore(join(dir, 'proposals'));
    const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref;
    const refs = [];
    for (const shardKey of dataset.result.splits.train!.shardKeys) refs.push((await runStage(proposalStage, localContext(store), { dataset, shardKey }, proposalConfigSchema.parse({ preset: 'r2o' }))).ref);
    const byKey = await loadProposals(store, refs.map((r) => r.result), true);
    expect(byKey.size).toBe(dataset.result.splits.train!.samples);
    const needs = { kind: 'regions' as const, boxes: { minVisible: 0.5, minSize: 2, maxPerView: 10 } };
    const feeder = await MethodBatchFeeder.open({ store, datasetManifestKey: dataset.result.datasetManifestKey, split: 'train', seed: 1, batchSize: 4, views: VIEW_PRESETS.mocoV2(32), proposals: { byKey, needs } });
    const batch = await feeder.nextBatch();
    await feeder.close();
    expect(batch.proposals!.length).toBe(2);
    for (let v = 0; v < 2; v++) {
      for (let b = 0; b < 4; b++) {
        const { boxes, regions } = batch.proposals![v]![b]!;
        expect(boxes.length).toBeLessThanOrEqual(10);
        for (const [x0, y0, x1, y1] of boxes) {
          expect(x0).toBeGreaterThanOrEqual(0);
          expect(y1).toBeLessThanOrEqual(32);
          expect(x1 - x0).toBeGreaterThanOrEqual(2);
          expect(y1 - y0).toBeGreaterThanOrEqual(2);
        }
        expect(regions!.length).toBe(32 * 32);
        expect(regions!.some((r) => r >= 0)).toBe(true);
      }
    }
  });
});

describe('proposals in a view', () => {
  // A 100×50 image; the view is the crop [20, 10, 60, 50) resized to 20×20 (scale 0.5), flipped.
  const g: ViewGeometry = { imageWidth: 100, imageHeight: 50, crop: [20, 10, 60, 50], width: 20, height: 20, flipped: true };
  const rules = { minVisible: 0.6, minSize: 3, maxPerView: 2 };

  it('maps boxes into the view, mirrors them, clips, and keeps them by the visible-area and size rules in stored order', () => {
    const record = { key: 'k', width: 100, height: 50, rawCount: 4, boxes: [
      [30, 20, 40, 30], // inside: → x (30−20)/2 = 5..10 → flipped 10..15; y 5..10
      [0, 0, 30, 20], // 1/3 of its area visible: dropped
      [50, 40, 54, 48], // inside but 2 view px wide: dropped by minSize
      [22, 12, 58, 48], // inside: kept (second)
      [20, 10, 60, 50], // a third keeper: cut by maxPerView
    ] as [number, number, number, number][] };
    expect(proposalBoxesInView(boxesInImage(record, { width: 100, height: 50 }), g, rules)).toEqual([[10, 5, 15, 10], [1, 1, 19, 19]]);
  });

  it('rescales boxes computed on a resized copy of the image', () => {
    const record = { key: 'k', width: 50, height: 25, rawCount: 1, boxes: [[15, 10, 20, 15]] as [number, number, number, number][] };
    expect(proposalBoxesInView(boxesInImage(record, { width: 100, height: 50 }), g, rules)).toEqual([[10, 5, 15, 10]]);
  });

  it('resamples a region label map into the view by nearest neighbour, mirrored', () => {
    // Labels: column index // 10 of the original (0..9), so the view's columns show 2..5 mirrored.
    const labels = new Int32Array(100 * 50).map((_, i) => Math.floor((i % 100) / 10));
    const out = regionsInView({ width: 100, height: 50, labels }, { width: 100, height: 50 }, g);
    // View column x ↔ original column 60 − 2·(x + 0.5).
    expect(Array.from(out.slice(0, 20))).toEqual(Array.from({ length: 20 }, (_, x) => Math.floor((60 - 2 * (x + 0.5)) / 10)));
  });
});

describe('crop retries against the boxes (CCOP)', () => {
  const rule = { maxTries: 10, minBoxes: 1, minVisible: 0.6 };
  const SCALE: [number, number] = [0.1, 0.3], RATIO: [number, number] = [3 / 4, 4 / 3];
  const keeps = (c: CropParams, [x0, y0, x1, y1]: [number, number, number, number]) => {
    const w = Math.min(x1, c.j + c.w) - Math.max(x0, c.j), h = Math.min(y1, c.i + c.h) - Math.max(y0, c.i);
    return w > 0 && h > 0 && (w * h) / ((x1 - x0) * (y1 - y0)) > 0.6;
  };

  it('redraws until a box is more than 0.6 inside, where one plain draw often misses it', () => {
    const box: [number, number, number, number] = [10, 10, 30, 30]; // a small box in a corner of a 200×200 image
    let plainHits = 0, retryHits = 0;
    for (let s = 0; s < 200; s++) {
      if (keeps(sampleResizedCrop(new Rng(s), 200, 200, SCALE, RATIO), box)) plainHits++;
      if (keeps(cropWithRetry([box], rule)(new Rng(s), 200, 200, SCALE, RATIO), box)) retryHits++;
    }
    expect(plainHits).toBeLessThan(60);
    expect(retryHits).toBeGreaterThan(plainHits * 2);
  });

  it('takes the first draw when the image has no box, and the later of equals when no crop qualifies', () => {
    const plain = sampleResizedCrop(new Rng(7), 200, 200, SCALE, RATIO);
    expect(cropWithRetry([], rule)(new Rng(7), 200, 200, SCALE, RATIO)).toEqual(plain);
    // A box as large as the image: no crop of ≤ 30 % of the area keeps 60 % of it, so every try keeps 0 and the last wins.
    const rng = new Rng(7), replay = new Rng(7);
    const chosen = cropWithRetry([[0, 0, 200, 200]], rule)(rng, 200, 200, SCALE, RATIO);
    let last: CropParams | null = null;
    for (let t = 0; t < rule.maxTries; t++) last = sampleResizedCrop(replay, 200, 200, SCALE, RATIO);
    expect(chosen).toEqual(last);
  });
});
