import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localContext, runStage, type StageRef } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { initBackend } from '../../core/tf.js';
import { packShard } from '../../core/webdataset.js';
import { Rng } from '../../core/rng.js';
import { encodeImage } from '../../stages/data/image.js';
import { objectWithMask } from '../../stages/data/sample.js';
import { evaluationConfigSchema, evaluationStage, type EvaluationConfig } from '../../stages/downstream/index.js';

const SIZE = 32;
const CLASSES = ['red-square', 'green-square', 'blue-square'];
const COLOURS = [
  [220, 40, 40],
  [40, 200, 40],
  [40, 60, 220],
];

/** One image: grey noise with a large coloured square (its colour is the image's class) and maybe a small second one. */
async function makeSample(rng: Rng, key: string) {
  const data = new Uint8Array(SIZE * SIZE * 3);
  for (let i = 0; i < data.length; i++) data[i] = 100 + rng.int(0, 40);
  const objects = [];
  const n = rng.int(1, 3);
  for (let o = 0; o < n; o++) {
    const label = rng.int(0, 3);
    const side = o === 0 ? rng.int(10, 16) : rng.int(4, 8);
    const x0 = rng.int(0, SIZE - side);
    const y0 = rng.int(0, SIZE - side);
    const mask = new Uint8Array(SIZE * SIZE);
    for (let y = y0; y < y0 + side; y++) {
      for (let x = x0; x < x0 + side; x++) {
        mask[y * SIZE + x] = 1;
        data.set(COLOURS[label]!, (y * SIZE + x) * 3);
      }
    }
    objects.push(objectWithMask(label, mask, SIZE, SIZE, [x0, y0, x0 + side, y0 + side], side * side));
  }
  const json = { schema: 'densepipe.sample/v1', key, source: 'test', width: SIZE, height: SIZE, objects };
  return { key, files: { png: await encodeImage({ width: SIZE, height: SIZE, data }, 'png'), json: Buffer.from(JSON.stringify(json)) } };
}

let dir: string;
let dataset: StageRef<{ splits: Record<string, { shardKeys: string[]; samples: number }>; classes: string[] }>;

beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'downstream-'));
  const store = new FileArtifactStore(join(dir, 'data'));
  const rng = Rng.fromSeed('eval-stage-data');
  const splits: Record<string, { shardKeys: string[]; samples: number }> = {};
  for (const [split, n] of [['train', 30], ['val', 12]] as const) {
    const samples = [];
    for (let i = 0; i < n; i++) samples.push(await makeSample(rng, `${split}-${String(i).padStart(4, '0')}`));
    const key = `datasets/test/${split}-000000.tar`;
    await store.put(key, await packShard(samples));
    splits[split] = { shardKeys: [key], samples: n };
  }
  dataset = { stage: 'dataset', hash: 'test-dataset', manifestKey: 'datasets/test/manifest.json', result: { splits, classes: CLASSES } };
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh store holding only the dataset shards, so each run computes instead of reusing a cached output. */
async function storeWithDataset(name: string): Promise<FileArtifactStore> {
  const store = new FileArtifactStore(join(dir, name));
  const source = new FileArtifactStore(join(dir, 'data'));
  for (const key of await source.list('datasets/')) await store.put(key, await source.get(key));
  return store;
}

function config(over: Record<string, unknown> = {}): EvaluationConfig {
  return evaluationConfigSchema.parse({
    imageSize: SIZE,
    backbone: { arch: 'resnet-tiny' },
    linear: { epochs: 3, batchSize: 8 },
    semseg: { epochs: 2, batchSize: 8, hidden: 16 },
    ...over,
  });
}

describe('evaluationStage', () => {
  it('runs kNN, linear probe, semseg and unsupervised segmentation on a random-init backbone and stores metrics', async () => {
    const store = new FileArtifactStore(join(dir, 'data'));
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, config());
    const m = ref.result.metrics;
    for (const name of ['knn.top1', 'linear.top1', 'semseg.mIoU', 'unsup-seg.mIoU']) {
      expect(m[name], name).toBeGreaterThanOrEqual(0);
      expect(m[name], name).toBeLessThanOrEqual(1);
    }
    // Colour is the class: even random conv features separate it far above chance (1/3).
    expect(m['knn.top1']).toBeGreaterThan(0.6);
    const stored = await getJson<{ metrics: Record<string, number> }>(store, ref.result.metricsKey);
    expect(stored.metrics['knn.top1']).toBe(m['knn.top1']);
    const perClass = await getJson<{ semseg: { classes: string[]; IoU: Array<number | null> } }>(store, ref.result.perClassKey!);
    expect(perClass.semseg.classes).toEqual(['background', ...CLASSES]);
    const predictions = await getJson<{ knn: Array<{ key: string }> }>(store, ref.result.predictionsKey!);
    expect(predictions.knn).toHaveLength(12);
  });

  it('a run cancelled mid-training resumes from its checkpoint and ends with the same numbers', async () => {
    const cfg = config({ tasks: ['linear'], labelFraction: 0.5 });
    const reference = await runStage(evaluationStage, localContext(await storeWithDataset('a')), { dataset, backbone: null }, cfg);
    const store = await storeWithDataset('b');
    const controller = new AbortController();
    const ctx = localContext(store, {
      signal: controller.signal,
      onProgress: (u) => {
        if (u.message === 'linear: epoch 1/3') controller.abort('test kill');
      },
    });
    await expect(runStage(evaluationStage, ctx, { dataset, backbone: null }, cfg)).rejects.toThrow(/cancelled/);
    const pointer = (await store.list('checkpoints/evaluate/')).find((k) => k.endsWith('latest.json'));
    expect(pointer, 'the cancelled run left an epoch checkpoint').toBeDefined();
    expect((await getJson<{ meta: { task: string; epoch: number } }>(store, pointer!)).meta).toMatchObject({ task: 'linear', epoch: 1 });
    const resumed = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, cfg);
    expect(resumed.ref.result.metrics['linear.top1']).toBe(reference.ref.result.metrics['linear.top1']);
    expect(resumed.ref.result.metrics['linear.finalLoss']).toBe(reference.ref.result.metrics['linear.finalLoss']);
    expect(resumed.ref.result.metrics['eval.trainSamples']).toBe(15);
  });

  it('refuses unknown splits and unimplemented tasks with the field named', () => {
    expect(() => evaluationStage.validate!({ dataset, backbone: null }, config({ evalSplit: 'test' }))).toThrow(/no split 'test'/);
    expect(() => evaluationStage.validate!({ dataset, backbone: null }, config({ tasks: ['detection'] }))).toThrow(/evaluation.tasks/);
  });
});
