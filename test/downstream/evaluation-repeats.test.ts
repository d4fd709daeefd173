import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localContext, runStage, type StageRef } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { initBackend } from '../../core/tf.js';
import { evaluationConfigSchema, evaluationStage } from '../../stages/downstream/index.js';
import { writeSquaresDataset } from './squares-dataset.js';

const SIZE = 32;
let dir: string;
let dataset: StageRef<{ splits: Record<string, { shardKeys: string[]; samples: number }>; classes: string[] }>;

beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'eval-repeats-'));
  dataset = await writeSquaresDataset(new FileArtifactStore(join(dir, 'data')), { size: SIZE, train: 24, val: 12, seed: 'repeats' });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (over: Record<string, unknown>) =>
  evaluationConfigSchema.parse({ imageSize: SIZE, backbone: { arch: 'resnet-tiny' }, tasks: ['linear', 'unsup-seg'], linear: { epochs: 2, batchSize: 8 }, ...over });

describe('evaluation repeated over seeds', () => {
  it('gives the mean of the single-seed evaluations and each seed\'s values', async () => {
    const store = new FileArtifactStore(join(dir, 'data'));
    const single = await Promise.all([0, 1].map(async (seed) => (await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, config({ seed }))).ref.result.metrics));
    // The random-init baseline's backbone follows the seed, so the two evaluations differ.
    expect(single[0]!['unsup-seg.mIoU']).not.toBe(single[1]!['unsup-seg.mIoU']);
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, config({ seed: 0, repeats: 2 }));
    const r = ref.result;
    expect(r.seedMetrics?.seeds).toEqual([0, 1]);
    for (const name of ['linear.top1', 'unsup-seg.mIoU']) {
      expect(r.seedMetrics!.metrics[name]).toEqual([single[0]![name], single[1]![name]]);
      expect(r.metrics[name]).toBeCloseTo((single[0]![name]! + single[1]![name]!) / 2, 12);
    }
    // Throughput is not a quality metric: no per-seed values for it.
    expect(r.seedMetrics!.metrics['linear.secondsPerEpoch']).toBeUndefined();
    expect(r.metrics['eval.repeats']).toBe(2);
    const stored = await getJson<{ perSeed: Record<string, number[]> }>(store, r.metricsKey);
    expect(stored.perSeed['unsup-seg.mIoU']).toEqual(r.seedMetrics!.metrics['unsup-seg.mIoU']);
    // Per-class scores and predictions are the first seed's, in its own folder.
    expect(r.perClassKey).toMatch(/\/seed-0\/per-class\.json$/);
    // Each seed's TensorBoard events are a run of their own under the output's tensorboard/ folder, where `densepipe tensorboard` reads.
    const prefix = r.metricsKey.replace(/\/metrics\.json$/, '');
    const events = (await store.list(`${prefix}/tensorboard/`)).filter((k) => k.includes('tfevents')).map((k) => k.slice(prefix.length + '/tensorboard/'.length).split('/')[0]);
    expect([...new Set(events)]).toEqual(['seed-0', 'seed-1']);
  });
});
