/**
 * The evaluation stage on a ViT (issue 16): a tiny random ViT (vit-micro-64 at 32 px, a 4x4 patch
 * grid) through every task a ResNet gets (kNN and linear probe on the class token, semantic
 * segmentation and unsupervised segmentation on the patch-token map, FCOS detection through
 * ViTDet's simple feature pyramid), a "pretrained" ViT file made at another image size (its
 * position embedding resampled to the evaluation's grid), and the refusals that name the field.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localContext, runStage, type StageRef } from '../../core/stage.js';
import { getJson } from '../../core/store/index.js';
import { initBackend } from '../../core/tf.js';
import { evaluationConfigSchema, evaluationStage, type EvaluationConfig } from '../../stages/downstream/index.js';
import { exportStateDict } from '../../stages/engine/export.js';
import { VisionTransformer, VIT_PRESETS } from '../../stages/engine/vit.js';
import { backboneMetadata } from '../../stages/pretrain/backbone-card.js';
import { SQUARE_CLASSES, storeWithDatasetCopy, writeSquaresDataset } from './squares-dataset.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { parseRunConfig } from '../../core/config.js';
import { METHODS } from '../../stages/methods/index.js';
import type { MethodModule } from '../../stages/methods/shared/contract.js';

const SIZE = 32;
const ARCH = 'vit-micro-64';
let dir: string;
let dataset: StageRef<{ splits: Record<string, { shardKeys: string[]; samples: number }>; classes: string[] }>;

beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'vit-eval-'));
  dataset = await writeSquaresDataset(new FileArtifactStore(join(dir, 'data')), { size: SIZE, train: 36, val: 12, seed: 'vit-eval' });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(over: Record<string, unknown> = {}): EvaluationConfig {
  return evaluationConfigSchema.parse({
    imageSize: SIZE,
    backbone: { arch: ARCH },
    tasks: ['knn', 'linear', 'semseg', 'unsup-seg', 'detection'],
    linear: { epochs: 2, batchSize: 12 },
    semseg: { epochs: 1, batchSize: 12, hidden: 16 },
    detection: { epochs: 1, batchSize: 12, channels: 16, groupNormGroups: 4, towerConvs: 1 },
    ...over,
  });
}

const inUnit = (m: Record<string, number>, names: string[]) => {
  for (const name of names) {
    expect(m[name], name).toBeGreaterThanOrEqual(0);
    expect(m[name], name).toBeLessThanOrEqual(1);
  }
};

describe('evaluationStage on a ViT', () => {
  it('runs kNN, linear probe, semseg, unsupervised segmentation and detection on a random-init ViT', async () => {
    const store = await storeWithDatasetCopy(dir, 'random');
    const logs: string[] = [];
    const ctx = { ...localContext(store), log: (m: string) => logs.push(m) };
    const { ref } = await runStage(evaluationStage, ctx, { dataset, backbone: null }, config());
    const m = ref.result.metrics;
    inUnit(m, ['knn.top1', 'linear.top1', 'semseg.mIoU', 'unsup-seg.mIoU', 'det.AP', 'det.AP50']);
    expect(m['linear.finalLoss']).toBeGreaterThan(0);
    expect(m['det.finalLoss']).toBeGreaterThan(0);
    expect(m['det.positivesPerImage']).toBeGreaterThan(0);
    expect(logs.join('\n')).toMatch(/ViT features: cls pooling/);
    const perClass = await getJson<{ semseg: { classes: string[] }; detection: { mode: string } }>(store, ref.result.perClassKey!);
    expect(perClass.semseg.classes).toEqual(['background', ...SQUARE_CLASSES]);
    expect(perClass.detection.mode).toBe('finetune');
  });

  it('evaluates a pretrained ViT file made at another image size (pos_embed resampled), frozen detection and fine-tuned semseg, mean pooling', async () => {
    const store = await storeWithDatasetCopy(dir, 'pretrained');
    const vit = new VisionTransformer({ ...VIT_PRESETS[ARCH], imageSize: 16 }, 'pretrained');
    const backboneKey = 'runs/p/backbone.safetensors';
    await store.put(backboneKey, await exportStateDict(vit.params, { metadata: backboneMetadata({ arch: ARCH, method: 'siameseim', steps: 1, imageSize: 16 }) }));
    vit.dispose();
    const backbone = { stage: 'pretrain', hash: 'p', manifestKey: 'runs/p/manifest.json', result: { backboneKey, backboneArch: ARCH } };
    const logs: string[] = [];
    const ctx = { ...localContext(store), log: (m: string) => logs.push(m) };
    const cfg = config({ tasks: ['knn', 'semseg', 'detection'], backbone: { arch: ARCH, pooling: 'mean' }, semseg: { mode: 'finetune', epochs: 1, batchSize: 12, hidden: 16 }, detection: { mode: 'frozen', epochs: 1, batchSize: 12, channels: 16, groupNormGroups: 4, towerConvs: 1 } });
    const { ref } = await runStage(evaluationStage, ctx, { dataset, backbone }, cfg);
    inUnit(ref.result.metrics, ['knn.top1', 'semseg.mIoU', 'det.AP']);
    expect(logs.join('\n')).toMatch(/position embedding resampled.*pos_embed \[1,5,96\] -> \[1,17,96\]/);
    expect(logs.join('\n')).toMatch(/ViT features: mean pooling/);
  });

  it("follows a ViT method's backbone: its default preset when the config names none, else the named one", () => {
    const vitMethods = Object.entries(METHODS).filter(([, m]) => (m as MethodModule).architecture === 'vit').map(([name]) => name);
    expect(vitMethods.length).toBeGreaterThan(0);
    for (const method of vitMethods) expect(parseRunConfig({ pretrain: { method } }).evaluation.backbone.arch, method).toBe('vit-micro-64');
    expect(parseRunConfig({ pretrain: { method: vitMethods[0], backbone: { arch: 'vit-tiny' } } }).evaluation.backbone.arch).toBe('vit-tiny');
    expect(parseRunConfig({ pretrain: { method: 'mocov2' } }).evaluation.backbone.arch).toBe('resnet18-w16-cifar');
  });

  it('refuses DETR tasks on a ViT, ViT pooling on a ResNet, and an image size off the patch grid, naming the field', () => {
    const inputs = { dataset, backbone: null };
    expect(() => evaluationStage.validate!(inputs, config({ tasks: ['knn', 'detr'] }))).toThrow(/detr.*ViT/);
    expect(() => evaluationStage.validate!(inputs, config({ backbone: { arch: 'resnet-tiny', pooling: 'cls' } }))).toThrow(/ResNet/);
    expect(() => evaluationStage.validate!(inputs, config({ imageSize: 36 }))).toThrow(/multiple of it/);
    // Detection max-pools the patch grid by 2: a 3x3 grid (24 px) cannot.
    expect(() => evaluationStage.validate!(inputs, config({ imageSize: 24 }))).toThrow(/multiple of 16/);
    expect(() => evaluationStage.validate!(inputs, config({ imageSize: 24, tasks: ['knn'] }))).not.toThrow();
  });
});
