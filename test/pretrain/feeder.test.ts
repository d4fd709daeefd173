import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { shardConfigSchema, shardStage } from '../../stages/data/index.js';
import { IMAGENET_MEAN, IMAGENET_STD, ViewBatchFeeder } from '../../stages/pretrain/feeder.js';

const dir = mkdtempSync(join(tmpdir(), 'densepipe-feeder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ViewBatchFeeder', () => {
  it('gives two normalised views per image and the same batches again from a saved cursor', async () => {
    const store = new FileArtifactStore(dir);
    const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref.result;
    const options = { store, datasetManifestKey: dataset.datasetManifestKey, split: 'train', seed: 3, batchSize: 5, imageSize: 24 };
    const feeder = await ViewBatchFeeder.open(options);
    const first = await feeder.nextBatch();
    const second = await feeder.nextBatch();
    await feeder.close();
    expect(first.view0.length).toBe(5 * 24 * 24 * 3);
    expect(first.next).toEqual({ epoch: 0, position: 5 });
    expect(second.next).toEqual({ epoch: 0, position: 10 });
    // Views are independent draws: the two views of a batch differ.
    expect(Buffer.from(first.view0.buffer).equals(Buffer.from(first.view1.buffer))).toBe(false);
    // [0, 1] pixels after Normalize(mean, std) lie in [−mean/std, (1−mean)/std] per channel.
    for (let i = 0; i < first.view0.length; i++) {
      const c = i % 3;
      expect(first.view0[i]!).toBeGreaterThanOrEqual(-IMAGENET_MEAN[c]! / IMAGENET_STD[c]! - 1e-5);
      expect(first.view0[i]!).toBeLessThanOrEqual((1 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]! + 1e-5);
    }
    const resumed = await ViewBatchFeeder.open(options, first.next);
    const again = await resumed.nextBatch();
    await resumed.close();
    expect(Buffer.from(again.view0.buffer).equals(Buffer.from(second.view0.buffer))).toBe(true);
    expect(Buffer.from(again.view1.buffer).equals(Buffer.from(second.view1.buffer))).toBe(true);
  });
});
