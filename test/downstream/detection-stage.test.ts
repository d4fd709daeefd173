import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localContext, runStage, type StageRef } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { initBackend } from '../../core/tf.js';
import { evaluationConfigSchema, evaluationStage, type EvaluationConfig } from '../../stages/downstream/index.js';
import { SQUARE_CLASSES, writeSquaresDataset, storeWithDatasetCopy } from './squares-dataset.js';
import { cancelEvaluationAt } from './cancel-evaluation.js';

const SIZE = 32;
let dir: string;
let dataset: StageRef<{ splits: Record<string, { shardKeys: string[]; samples: number }>; classes: string[] }>;

beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'detection-stage-'));
  dataset = await writeSquaresDataset(new FileArtifactStore(join(dir, 'data')), { size: SIZE, train: 24, val: 12, seed: 'detection-stage' });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const storeWithDataset = (name: string) => storeWithDatasetCopy(dir, name);

function config(detection: Record<string, unknown> = {}): EvaluationConfig {
  return evaluationConfigSchema.parse({
    tasks: ['detection'],
    imageSize: SIZE,
    backbone: { arch: 'resnet-tiny' },
    detection: { epochs: 3, batchSize: 8, channels: 16, groupNormGroups: 4, towerConvs: 1, ...detection },
  });
}

describe('evaluationStage detection task', () => {
  it('stores COCO box metrics, a per-class table and per-image predictions', async () => {
    const store = await storeWithDataset('plain');
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, config());
    const m = ref.result.metrics;
    for (const name of ['det.AP', 'det.AP50', 'det.AP75', 'det.APs', 'det.AR100']) {
      expect(m[name], name).toBeGreaterThanOrEqual(0);
      expect(m[name], name).toBeLessThanOrEqual(1);
    }
    expect(m['det.secondsPerEpoch']).toBeGreaterThan(0);
    expect(m['det.imagesPerSecond']).toBeGreaterThan(0);
    const perClass = await getJson<{ detection: { classes: string[]; AP: unknown[]; support: number[]; mode: string } }>(store, ref.result.perClassKey!);
    expect(perClass.detection.classes).toEqual(SQUARE_CLASSES);
    expect(perClass.detection.mode).toBe('finetune');
    expect(perClass.detection.AP).toHaveLength(3);
    const predictions = await getJson<{ detection: Array<{ key: string; detections: Array<{ bbox: number[]; category: string; score: number }> }> }>(store, ref.result.predictionsKey!);
    expect(predictions.detection).toHaveLength(12);
    for (const d of predictions.detection.flatMap((p) => p.detections)) {
      expect(SQUARE_CLASSES).toContain(d.category);
      expect(d.bbox).toHaveLength(4);
    }
  });

  it('a run cancelled mid-training resumes from its epoch checkpoint and ends with the same numbers', async () => {
    const cfg = config();
    const reference = await runStage(evaluationStage, localContext(await storeWithDataset('reference')), { dataset, backbone: null }, cfg);
    const store = await storeWithDataset('killed');
    expect(await cancelEvaluationAt(store, { dataset, backbone: null }, cfg, 'detection: epoch 1/3')).toMatchObject({ task: 'detection', epoch: 1 });
    const resumed = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, cfg);
    for (const name of ['det.finalLoss', 'det.AP', 'det.AP50', 'det.AR100']) expect(resumed.ref.result.metrics[name], name).toBe(reference.ref.result.metrics[name]);
  });

  it('with masks: also scores instance masks (segm) and stores them as COCO RLE strings', async () => {
    const store = await storeWithDataset('masks');
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, config({ masks: true, epochs: 2 }));
    for (const name of ['mask.AP', 'mask.AP50', 'mask.AR100', 'det.AP']) {
      expect(ref.result.metrics[name], name).toBeGreaterThanOrEqual(0);
      expect(ref.result.metrics[name], name).toBeLessThanOrEqual(1);
    }
    const perClass = await getJson<{ detection: { maskAP: unknown[] } }>(store, ref.result.perClassKey!);
    expect(perClass.detection.maskAP).toHaveLength(3);
    const predictions = await getJson<{ detection: Array<{ detections: Array<{ segmentation?: { size: number[]; counts: string } }> }> }>(store, ref.result.predictionsKey!);
    const all = predictions.detection.flatMap((p) => p.detections);
    expect(all.length).toBeGreaterThan(0);
    for (const d of all) expect(d.segmentation?.size).toEqual([SIZE, SIZE]);
  });

  it('refuses a head width that GroupNorm cannot split, naming the field', () => {
    expect(() => config({ channels: 10, groupNormGroups: 4 })).toThrow(/groupNormGroups/);
  });
});
