/**
 * The pretraining stage end to end on a tiny dataset: an interrupted-then-resumed run reproduces the
 * uninterrupted run's losses exactly, memory stays flat across steps, and the outputs are loadable.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { shardConfigSchema, shardStage } from '../../stages/data/index.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';
import { pretrainConfigSchema, pretrainStage, type PretrainConfigInput, type PretrainInputs, type LossPoint } from '../../stages/pretrain/index.js';

/** The shard stage's built-in synthetic dataset ('tiny': 96 training images of 64 px in 2 shards). */
async function makeDataset(store: FileArtifactStore): Promise<PretrainInputs> {
  const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref;
  return { dataset };
}

const tiny = (method: 'mocov2' | 'densecl', extra: PretrainConfigInput = {}) =>
  pretrainConfigSchema.parse({
    method,
    backbone: { arch: 'resnet-tiny' },
    batchSize: 4,
    steps: 4,
    queueSize: 16,
    embedDim: 8,
    hiddenDim: 16,
    imageSize: 32,
    shuffleBnGroups: 2,
    optimizer: { baseLr: 2 },
    checkpointEvery: { steps: 2 },
    backend: 'tensorflow',
    ...extra,
  });

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'densepipe-pretrain-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each(['mocov2', 'densecl'] as const)('pretrain stage (%s)', (method) => {
  it('resumes from a checkpoint to the same losses as an uninterrupted run, with flat memory', async () => {
    const full = new FileArtifactStore(join(dir, `${method}-full`));
    const inputs = await makeDataset(full);
    const tensorCounts: number[] = [];
    const uninterrupted = await runStage(pretrainStage, localContext(full, { onProgress: (u) => u.step && tensorCounts.push(tf.memory().numTensors) }), inputs, tiny(method));
    const curveFull = (await getJson<{ points: LossPoint[] }>(full, uninterrupted.ref.result.lossCurveKey)).points;
    expect(curveFull.map((p) => p.step)).toEqual([1, 2, 3, 4]);
    // InfoNCE is positive and bounded by ln(1 + K·e^(2/τ)) (positive at −1/τ, every negative at +1/τ);
    // the steps differ from each other.
    for (const p of curveFull) expect(p.loss).toBeGreaterThan(0);
    for (const p of curveFull) expect(p.loss).toBeLessThan(Math.log(1 + 16 * Math.exp(2 / 0.2)));
    expect(new Set(curveFull.map((p) => p.loss)).size).toBe(4);
    if (method === 'densecl') expect(curveFull[0]!.dense! + curveFull[0]!.single!).toBeCloseTo(curveFull[0]!.loss, 5);
    expect(uninterrupted.ref.result.resumedFromStep).toBe(0);
    // Every step leaves exactly as many live tensors as the one before.
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);

    // Same run, cancelled after step 3 (a checkpoint exists at step 2), then resumed.
    const broken = new FileArtifactStore(join(dir, `${method}-resumed`));
    await makeDataset(broken);
    const abort = new AbortController();
    const firstTry = runStage(pretrainStage, localContext(broken, { signal: abort.signal, onProgress: (u) => u.step === 3 && abort.abort('test') }), inputs, tiny(method));
    await expect(firstTry).rejects.toThrow(/cancelled/);
    const resumed = await runStage(pretrainStage, localContext(broken), inputs, tiny(method));
    expect(resumed.ref.result.resumedFromStep).toBe(2);
    const curveResumed = (await getJson<{ points: LossPoint[] }>(broken, resumed.ref.result.lossCurveKey)).points;
    expect(curveResumed).toEqual(curveFull);
    expect(resumed.ref.result.finalLoss).toBe(uninterrupted.ref.result.finalLoss);

    // Backbone export: torchvision names, PyTorch layouts, identical after resume.
    const a = decodeSafetensors(await full.get(uninterrupted.ref.result.backboneKey));
    const b = decodeSafetensors(await broken.get(resumed.ref.result.backboneKey));
    expect(a.tensors.get('conv1.weight')!.shape).toEqual([8, 3, 3, 3]);
    expect([...a.tensors.keys()].some((k) => k.startsWith('neck.'))).toBe(false);
    expect(Buffer.from(b.tensors.get('layer4.0.conv2.weight')!.data).equals(Buffer.from(a.tensors.get('layer4.0.conv2.weight')!.data))).toBe(true);
  });
});

describe('pretrain config', () => {
  it('has defaults for everything and rejects unknown keys', () => {
    const c = pretrainConfigSchema.parse({});
    expect(c.method).toBe('densecl');
    expect(c.temperature).toBe(0.2);
    expect(c.lossLambda).toBe(0.5);
    expect(() => pretrainConfigSchema.parse({ temprature: 0.1 })).toThrow(/temprature/);
  });

  it('refuses a queue that is not a multiple of the batch, naming the field', () => {
    const inputs = { dataset: { stage: 'shard', hash: 'h', manifestKey: 'm', result: { datasetManifestKey: 'd', splits: { train: { shardKeys: ['a'], samples: 100 } } } } };
    expect(() => pretrainStage.validate!(inputs, tiny('mocov2', { queueSize: 18 }))).toThrow(/pretrain\.queueSize/);
    expect(() => pretrainStage.validate!(inputs, tiny('mocov2', { split: 'val' }))).toThrow(/no split 'val'/);
  });
});
