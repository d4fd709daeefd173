import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStage } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { BadInputError } from '../../core/errors.js';
import { createTrainLoader, planEpoch, shardStage, viewsTransform, VIEW_PRESETS, type DatasetManifest, type LoaderCursor, type ShardConfig } from '../../stages/data/index.js';
import { quietContext, tempDir } from './helpers.js';

let store: FileArtifactStore;
let manifestKey: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  const t = await tempDir('loader');
  cleanup = t.cleanup;
  store = new FileArtifactStore(t.dir);
  const config = { source: { kind: 'synthetic', size: 'tiny', seed: 7 }, shardSamples: 16 } as ShardConfig;
  manifestKey = (await runStage(shardStage, quietContext(store), {}, config)).ref.result.datasetManifestKey;
});
afterAll(() => cleanup());

async function keysOf(loader: Awaited<ReturnType<typeof createTrainLoader>>, cursor?: LoaderCursor, limit = Infinity, untilEpoch = (cursor?.epoch ?? 0) + 1) {
  const keys: string[] = [];
  let last: LoaderCursor | undefined;
  for await (const item of loader.iterate(cursor, { untilEpoch })) {
    keys.push(item.key);
    last = item.cursor;
    if (keys.length >= limit) break;
  }
  return { keys, last };
}

describe('training loader', () => {
  it('hands out every sample once per epoch, in an order fixed by (seed, epoch)', async () => {
    const a = await createTrainLoader({ store, dataset: manifestKey, seed: 1, shuffleBuffer: 32 });
    const b = await createTrainLoader({ store, dataset: manifestKey, seed: 1, shuffleBuffer: 32 });
    const e0 = (await keysOf(a)).keys;
    expect(e0).toHaveLength(96);
    expect(new Set(e0).size).toBe(96);
    expect((await keysOf(b)).keys).toEqual(e0);
    const e1 = (await keysOf(a, { epoch: 1, position: 0 })).keys;
    expect(new Set(e1)).toEqual(new Set(e0));
    expect(e1).not.toEqual(e0);
    const otherSeed = await createTrainLoader({ store, dataset: manifestKey, seed: 2, shuffleBuffer: 32 });
    expect((await keysOf(otherSeed)).keys).not.toEqual(e0);
  });

  it('gives workers disjoint parts that cover the split', async () => {
    const parts = await Promise.all([0, 1, 2].map(async (worker) => (await keysOf(await createTrainLoader({ store, dataset: manifestKey, seed: 1, worker, numWorkers: 3 }))).keys));
    const all = parts.flat();
    expect(all).toHaveLength(96);
    expect(new Set(all).size).toBe(96);
    parts.forEach((p) => expect(p.length).toBeGreaterThan(0));
  });

  it('resumes mid-epoch exactly where it stopped, without refetching finished shards', async () => {
    const loader = await createTrainLoader({ store, dataset: manifestKey, seed: 4, shuffleBuffer: 24, transform: viewsTransform(VIEW_PRESETS.pixpro(24)) });
    // Stop right after the first-read shard's last sample is handed out, so one shard is finished.
    const plan = planEpoch(loader.manifest.splits.train!.shards, 4, 0, 0, 1, 24);
    const stopAt = 1 + Math.max(...plan.order.flatMap((r, t) => (r.shard === plan.shards[0] ? [t] : [])));
    expect(stopAt).toBeLessThan(96);
    const reference: { key: string; crop: unknown }[] = [];
    for await (const item of loader.iterate({ epoch: 0, position: 0 }, { untilEpoch: 2 })) reference.push({ key: item.key, crop: item.value.views[1]!.applied.crop });

    // Stop there, keep only the JSON cursor, continue with a fresh loader.
    const first: typeof reference = [];
    let cursor: LoaderCursor | undefined;
    for await (const item of loader.iterate({ epoch: 0, position: 0 })) {
      first.push({ key: item.key, crop: item.value.views[1]!.applied.crop });
      cursor = item.cursor;
      if (first.length === stopAt) break;
    }
    const saved = JSON.parse(JSON.stringify(cursor)) as LoaderCursor;
    expect(saved).toEqual({ epoch: 0, position: stopAt });
    const gets: string[] = [];
    const countingStore = Object.create(store, { get: { value: (key: string) => (gets.push(key), store.get(key)) } }) as FileArtifactStore;
    const resumed = await createTrainLoader({ store: countingStore, dataset: manifestKey, seed: 4, shuffleBuffer: 24, transform: viewsTransform(VIEW_PRESETS.pixpro(24)) });
    const rest: typeof reference = [];
    for await (const item of resumed.iterate(saved, { untilEpoch: 2 })) rest.push({ key: item.key, crop: item.value.views[1]!.applied.crop });
    expect([...first, ...rest]).toEqual(reference);

    // Shards whose samples were all handed out before the cursor are not read again.
    const done = plan.shards.filter((s) => plan.order.slice(stopAt).every((r) => r.shard !== s));
    expect(done.length).toBeGreaterThan(0);
    const epoch0Gets = gets.slice(0, gets.length - plan.shards.length);
    for (const s of done) expect(epoch0Gets).not.toContain(loader.manifest.splits.train!.shards[s]!.key);
  });

  it('decodes boxes, masks and semantic maps along with the image', async () => {
    const loader = await createTrainLoader({ store, dataset: manifestKey, seed: 0, split: 'val' });
    for await (const { value } of loader.iterate(undefined, { untilEpoch: 1 })) {
      expect(value.image.width).toBe(64);
      expect(value.boxes.length).toBe(value.labels.length * 4);
      expect(value.masks.every((m) => m && m.length === 64 * 64)).toBe(true);
      const labelsInMap = new Set(value.semantic!);
      for (const l of value.labels) expect(labelsInMap.has(l + 1)).toBe(true);
    }
  });

  it('refuses a shard whose bytes no longer match the manifest, naming it', async () => {
    const manifest = await getJson<DatasetManifest>(store, manifestKey);
    const tampered: DatasetManifest = JSON.parse(JSON.stringify(manifest));
    tampered.splits.train!.shards[0]!.sha256 = '0'.repeat(64);
    const loader = await createTrainLoader({ store, dataset: tampered, seed: 0 });
    await expect(keysOf(loader)).rejects.toThrow(BadInputError);
    await expect(keysOf(loader)).rejects.toThrow(manifest.splits.train!.shards[0]!.key);
    await expect(createTrainLoader({ store, dataset: manifestKey, seed: 0, split: 'nope' })).rejects.toThrow(/no split "nope"/);
  });
});
