import { describe, expect, it } from 'vitest';
import { localContext, runStage, type StageRef } from '../../core/stage.js';
import { BadInputError } from '../../core/errors.js';
import { getJson } from '../../core/store/index.js';
import { packShard, readShardFromStore } from '../../core/webdataset.js';
import { decodeLabelPng, proposalConfigSchema, proposalStage, type ProposalsFile, type ProposalResult } from '../../stages/proposals/index.js';
import { pngOf, scene, tempStore } from './helpers.js';

const SHARD = 'datasets/test/shards/train-000000.tar';

async function storeWithShard(count: number, extra: Array<{ key: string; files: Record<string, Uint8Array> }> = []) {
  const store = await tempStore();
  const samples = [];
  for (let i = 0; i < count; i++) {
    samples.push({ key: `img${String(i).padStart(3, '0')}`, files: { png: await pngOf(scene(96 + 8 * i, 72, i)), json: Buffer.from('{}') } });
  }
  await store.put(SHARD, await packShard([...samples, ...extra]));
  const dataset: StageRef<{ splits: Record<string, { shardKeys: string[] }> }> = {
    stage: 'data',
    hash: 'testdataset',
    manifestKey: 'stages/data/testdataset/manifest.json',
    result: { splits: { train: { shardKeys: [SHARD] } } },
  };
  return { store, dataset };
}

describe('proposal stage', () => {
  it('writes every sample\'s boxes, on worker threads, and reuses the output by key', async () => {
    const { store, dataset } = await storeWithShard(5);
    const config = proposalConfigSchema.parse({ preset: 'detreg', workers: 2 });
    const first = await runStage(proposalStage, localContext(store), { dataset, shardKey: SHARD }, config);
    const result: ProposalResult = first.ref.result;
    expect(result.images).toBe(5);
    const file = await getJson<ProposalsFile>(store, result.proposalsKey);
    expect(file.samples.map((s) => s.key)).toEqual(['img000', 'img001', 'img002', 'img003', 'img004']);
    for (const s of file.samples) {
      expect(s.boxes.length).toBeGreaterThan(0);
      expect(s.boxes.length).toBeLessThanOrEqual(30);
      for (const [x1, y1, x2, y2] of s.boxes) {
        expect(x1).toBeGreaterThanOrEqual(0);
        expect(y1).toBeGreaterThanOrEqual(0);
        expect(x2).toBeLessThanOrEqual(s.width);
        expect(y2).toBeLessThanOrEqual(s.height);
        expect(x2).toBeGreaterThan(x1);
      }
    }
    expect(result.boxes).toBe(file.samples.reduce((n, s) => n + s.boxes.length, 0));
    // same inputs and an equivalent config (thread count is not part of the key): cached
    const again = await runStage(proposalStage, localContext(store), { dataset, shardKey: SHARD }, { ...config, workers: 1 });
    expect(again.cached).toBe(true);
    // the thread count does not change the result: rerun in a fresh store on the calling thread
    const fresh = await storeWithShard(5);
    const inline = await runStage(proposalStage, localContext(fresh.store), { dataset: fresh.dataset, shardKey: SHARD }, { ...config, workers: 1 });
    expect(inline.cached).toBe(false);
    expect(inline.ref.hash).toBe(first.ref.hash);
    expect((await getJson<ProposalsFile>(fresh.store, inline.ref.result.proposalsKey)).samples).toEqual(file.samples);
  });

  it('resumes from its checkpoint after a cancelled attempt and gives the same result', async () => {
    const { store, dataset } = await storeWithShard(6);
    const config = proposalConfigSchema.parse({ preset: 'ccop', workers: 1, checkpointEvery: 2, seed: 3 });
    const abort = new AbortController();
    const ctx = localContext(store, { signal: abort.signal, onProgress: (u) => u.step === 4 && abort.abort('test') });
    await expect(runStage(proposalStage, ctx, { dataset, shardKey: SHARD }, config)).rejects.toThrow(/cancelled/);
    const logs: string[] = [];
    const resumed = await runStage(proposalStage, { ...localContext(store), log: (m) => logs.push(m) }, { dataset, shardKey: SHARD }, config);
    expect(logs.some((m) => /resuming .* after 4 images/.test(m))).toBe(true);
    const fresh = await storeWithShard(6);
    const clean = await runStage(proposalStage, localContext(fresh.store), { dataset: fresh.dataset, shardKey: SHARD }, config);
    const a = await getJson<ProposalsFile>(store, resumed.ref.result.proposalsKey);
    const b = await getJson<ProposalsFile>(fresh.store, clean.ref.result.proposalsKey);
    expect(a.samples).toEqual(b.samples);
  });

  it('stores label maps for SLIC (R2O) as a WebDataset tar of 16-bit PNGs', async () => {
    const { store, dataset } = await storeWithShard(3);
    const config = proposalConfigSchema.parse({ preset: 'r2o', workers: 1 });
    const { ref } = await runStage(proposalStage, localContext(store), { dataset, shardKey: SHARD }, config);
    expect(ref.result.segmentsKey).toBeDefined();
    const file = await getJson<ProposalsFile>(store, ref.result.proposalsKey);
    const maps = [];
    for await (const sample of readShardFromStore(store, ref.result.segmentsKey!)) maps.push(sample);
    expect(maps.map((m) => m.key)).toEqual(file.samples.map((s) => s.key));
    for (const [i, m] of maps.entries()) {
      const seg = await decodeLabelPng(m.files['seg.png']!);
      expect([seg.width, seg.height]).toEqual([224, 224]);
      const distinct = new Set(seg.labels);
      expect(Math.min(...distinct)).toBe(0);
      expect(distinct.size).toBe(file.samples[i]!.segmentCount);
      expect(file.samples[i]!.boxes.length).toBe(distinct.size);
    }
    expect(await store.list(`${ref.manifestKey.replace(/manifest\.json$/, '')}segment-parts/`)).toEqual([]);
  });

  it('rejects a shard outside the dataset, a bad config, and a sample without an image', async () => {
    const { store, dataset } = await storeWithShard(1, [{ key: 'noimage', files: { json: Buffer.from('{}') } }]);
    const ok = proposalConfigSchema.parse({ preset: 'updetr-random', workers: 1 });
    await expect(runStage(proposalStage, localContext(store), { dataset, shardKey: 'elsewhere.tar' }, ok)).rejects.toThrow(BadInputError);
    await expect(runStage(proposalStage, localContext(store), { dataset, shardKey: SHARD }, { ...ok, preset: 'nope' } as never)).rejects.toThrow(/preset/);
    await expect(runStage(proposalStage, localContext(store), { dataset, shardKey: SHARD }, ok)).rejects.toThrow(/noimage: sample has no image member/);
  });
});

describe('worker pool', () => {
  it('turns a worker-side error into a rejected job and keeps serving', async () => {
    const { workerPoolRunner, presets } = await import('../../stages/proposals/index.js');
    const runner = await workerPoolRunner(1);
    try {
      const image = scene(40, 30, 2);
      const bad = { key: 'x', seed: 0, recipe: { ...presets.felzenszwalb, felzenszwalb: { minSize: -3 } }, image: { ...image, data: image.data.slice() }, originalWidth: 40, originalHeight: 30 };
      await expect(runner.run(bad)).rejects.toThrow(/felzenszwalb\.minSize/);
      const good = await runner.run({ ...bad, recipe: presets.felzenszwalb, image: { ...image, data: image.data.slice() } });
      expect(good.segments!.count).toBeGreaterThan(0);
    } finally {
      await runner.close();
    }
  });
});
