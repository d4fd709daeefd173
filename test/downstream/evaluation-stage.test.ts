import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localContext, runStage, type StageRef } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { initBackend } from '../../core/tf.js';
import { SQUARE_CLASSES, writeSquaresDataset, storeWithDatasetCopy } from './squares-dataset.js';
import { cancelEvaluationAt } from './cancel-evaluation.js';
import { evaluationConfigSchema, evaluationStage, type EvaluationConfig } from '../../stages/downstream/index.js';

const SIZE = 32;

let dir: string;
let dataset: StageRef<{ splits: Record<string, { shardKeys: string[]; samples: number }>; classes: string[] }>;

beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'downstream-'));
  const store = new FileArtifactStore(join(dir, 'data'));
  dataset = await writeSquaresDataset(store, { size: SIZE, train: 60, val: 20, seed: 'eval-stage' });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const storeWithDataset = (name: string) => storeWithDatasetCopy(dir, name);

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
    expect(m['knn.top1']).toBeGreaterThan(0.5);
    const stored = await getJson<{ metrics: Record<string, number> }>(store, ref.result.metricsKey);
    expect(stored.metrics['knn.top1']).toBe(m['knn.top1']);
    const perClass = await getJson<{ semseg: { classes: string[]; IoU: Array<number | null> } }>(store, ref.result.perClassKey!);
    expect(perClass.semseg.classes).toEqual(['background', ...SQUARE_CLASSES]);
    const predictions = await getJson<{ knn: Array<{ key: string }> }>(store, ref.result.predictionsKey!);
    expect(predictions.knn).toHaveLength(20);
  });

  it('a run cancelled mid-training resumes from its checkpoint and ends with the same numbers', async () => {
    const cfg = config({ tasks: ['linear'], labelFraction: 0.5 });
    const reference = await runStage(evaluationStage, localContext(await storeWithDataset('a')), { dataset, backbone: null }, cfg);
    const store = await storeWithDataset('b');
    const meta = await cancelEvaluationAt(store, { dataset, backbone: null }, cfg, 'linear: epoch 1/3');
    expect(meta, 'the cancelled run left an epoch checkpoint').toBeDefined();
    expect(meta).toMatchObject({ task: 'linear', epoch: 1 });
    const resumed = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, cfg);
    expect(resumed.ref.result.metrics['linear.top1']).toBe(reference.ref.result.metrics['linear.top1']);
    expect(resumed.ref.result.metrics['linear.finalLoss']).toBe(reference.ref.result.metrics['linear.finalLoss']);
    expect(resumed.ref.result.metrics['eval.trainSamples']).toBe(30);
  });

  it('refuses unknown splits and unknown tasks with the field named', () => {
    expect(() => evaluationStage.validate!({ dataset, backbone: null }, config({ evalSplit: 'test' }))).toThrow(/no split 'test'/);
    // Every task of the schema is implemented since detection landed; an unknown name fails the schema.
    expect(() => config({ tasks: ['keypoints'] })).toThrow(/tasks/);
  });
});
