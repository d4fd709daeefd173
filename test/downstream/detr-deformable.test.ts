/**
 * The 'detr' task's Deformable DETR kind (DETReg's fine-tune, stages/downstream/detr/task.ts) at tiny size: Deformable DETR's PostProcess against the official module's output
 * (test/fixtures/downstream/deformable/make_postprocess.py), a DetReg export (made by the method at its smallScale sizes
 * on resnet-tiny) loaded as DETReg main.py --pretrain does, fine-tuned a few steps with flat memory and scored by the
 * COCO evaluation, the reference_points / sampling_offsets rate multiple, an exact resume, the from-scratch arm, the
 * low-data subsets (the stage's `evaluation.labelFraction`) and the plain-DETR cache key.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IncompatibleArtifactError } from '../../core/errors.js';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { buildBackbone } from '../../stages/downstream/backbone.js';
import { deformableFinetuneSchema, detrConfigSchema } from '../../stages/downstream/detr/config.js';
import { deformableDetrConfig, deformablePostprocess, loadPretrainedDeformable, readDetectorExport, runDetrTask, type DetrTaskInput } from '../../stages/downstream/detr/task.js';
import { labelSubset, type EvalSample } from '../../stages/downstream/eval-data.js';
import { evaluationConfigSchema, evaluationStage } from '../../stages/downstream/index.js';
import type { EpochCheckpointer } from '../../stages/downstream/training.js';
import { DeformableDetr } from '../../stages/engine/detr/deformable.js';
import { exportStateDict } from '../../stages/engine/export.js';
import { ParamStore } from '../../stages/engine/params.js';
import { DetReg, detreg, detregArgs } from '../../stages/methods/detreg.js';
import { resnetBackbone } from '../../stages/pretrain/index.js';
import { squareScenes } from './detection-helpers.js';
import { writeSquaresDataset } from './squares-dataset.js';

const SIZE = 32;
const CLASSES = ['red', 'green', 'blue'];

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'detr-deformable-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const samples = (n: number, seed: string): EvalSample[] =>
  squareScenes(n, SIZE, seed).map((s) => ({ ...s, semantic: null, classLabel: s.labels[0]!, iscrowd: Array.from(s.labels, () => false) }));

/** A DetReg run's `exports.detector` as the pretrain stage writes it (DetReg at its smallScale sizes on resnet-tiny). */
async function detregExport(seed: number): Promise<{ bytes: Uint8Array; method: DetReg }> {
  const method = new DetReg(detregArgs.parse(detreg.smallScale!.args), { seed, backbone: resnetBackbone('resnet-tiny') });
  const e = method.exports.detector!;
  const bytes = await exportStateDict(e.store, { ...(e.exclude ? { exclude: e.exclude } : {}), metadata: { method: 'detreg', steps: '0', ...(e.metadata ?? {}) } });
  return { bytes, method };
}

function task(over: Partial<DetrTaskInput> = {}): DetrTaskInput {
  return {
    config: detrConfigSchema.parse({ epochs: 2, batchSize: 4 }),
    seed: 0,
    imageSize: SIZE,
    batchSize: 8,
    classes: CLASSES,
    train: samples(8, 'deformable-train'),
    evalSamples: samples(4, 'deformable-eval'),
    loadCopy: async () => buildBackbone('resnet-tiny', 0),
    detector: null,
    ...over,
  };
}

/** Epoch checkpoints kept in memory (every saved epoch), as the stage keeps them in the store. */
function memoryCheckpointer(): EpochCheckpointer & { saved: Array<Map<string, tf.Tensor>>; dispose(): void } {
  const saved: Array<Map<string, tf.Tensor>> = [];
  let last: { epoch: number; rngState: number; stepCount: number } | null = null;
  return {
    saved,
    async load() {
      if (!last) return null;
      const values = saved.at(-1)!;
      return { ...last, restore: (vars) => vars.forEach((v, k) => v.assign(values.get(k)!)) };
    },
    async save(epoch, vars, rngState, stepCount) {
      last = { epoch, rngState, stepCount };
      saved.push(new Map([...vars].map(([k, v]) => [k, tf.keep(v.clone())])));
    },
    dispose: () => saved.forEach((m) => tf.dispose([...m.values()])),
  };
}

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

describe('Deformable DETR PostProcess', () => {
  it('equals the official PostProcess (sigmoid, top 100 of Q × C, query = i // C, label = i % C, xyxy pixels)', () => {
    const f = JSON.parse(readFileSync(new URL('../fixtures/downstream/deformable/postprocess.json', import.meta.url), 'utf8'));
    const { Q, C, size, topK } = f.sizes as { B: number; Q: number; C: number; size: number; topK: number };
    const dets = deformablePostprocess(Float32Array.from(f.logits.data), Float32Array.from(f.boxes.data), Q, C, size, topK);
    expect(dets).toHaveLength(2);
    dets.forEach((image, i) => {
      expect(image).toHaveLength(100);
      expect(image.map((d) => d.label)).toEqual(f.labels[i]);
      const scores: number[] = f.scores[i].data;
      const boxes: number[] = f.xyxy[i].data;
      image.forEach((d, j) => {
        expect(Math.abs(d.score - scores[j]!) / scores[j]!).toBeLessThan(1e-6);
        d.box.forEach((v, k) => expect(Math.abs(v - boxes[j * 4 + k]!)).toBeLessThan(1e-4));
      });
    });
    // Fewer pairs than topK: every pair, highest first.
    const few = deformablePostprocess(Float32Array.from([0, 3, -1, 2]), Float32Array.from([0.5, 0.5, 0.2, 0.2, 0.25, 0.25, 0.5, 0.5]), 2, 2, 10, 100)[0]!;
    expect(few.map((d) => d.label)).toEqual([1, 1, 0, 0]);
    [4, 4, 6, 6].forEach((v, k) => expect(few[0]!.box[k]).toBeCloseTo(v, 5));
    [0, 0, 5, 5].forEach((v, k) => expect(few[1]!.box[k]).toBeCloseTo(v, 5));
    expect(few[2]!.score).toBeCloseTo(0.5, 7);
  });
});

describe('low-data settings (evaluation.labelFraction, DETReg --filter_pct) and cache keys', () => {
  it('the fine-tune trains on a seeded subset of the training split: deterministic, round(n · f) images, none refused', () => {
    const train = samples(200, 'fraction');
    const tenth = labelSubset(train, 0.1, 7);
    expect(tenth).toHaveLength(20);
    expect(labelSubset(train, 0.1, 7)).toEqual(tenth);
    expect(labelSubset(train, 0.1, 8)).not.toEqual(tenth);
    // Split order kept; at 1 % of 200 (2 images) every class present still gets one image (3), never none.
    expect(tenth.map((s) => train.indexOf(s))).toEqual(tenth.map((s) => train.indexOf(s)).sort((x, y) => x - y));
    const one = labelSubset(train, 0.01, 7);
    expect(new Set(one.map((s) => s.classLabel))).toEqual(new Set(train.map((s) => s.classLabel)));
    expect(one).toHaveLength(3);
    // A fraction outside (0, 1] is refused naming the field (by the schema, and by labelSubset itself).
    for (const bad of [0, 1.5]) {
      expect(() => labelSubset(train, bad, 7)).toThrow(/^evaluation\.labelFraction: /);
      expect(() => evaluationConfigSchema.parse({ tasks: ['detr'], labelFraction: bad })).toThrow(/labelFraction/);
    }
  });

  it('the plain DETR config parses to the same fields as before (its cache key is unchanged); kind / deformable enter only when given', () => {
    const plainFields = ['batchSize', 'bboxLossCoef', 'clipMaxNorm', 'costBbox', 'costClass', 'costGiou', 'decLayers', 'dimFeedforward', 'dropout', 'encLayers', 'eosCoef', 'epochs', 'giouLossCoef', 'hiddenDim', 'lr', 'lrBackbone', 'lrDropAt', 'nheads', 'numQueries', 'preNorm', 'pretrainedDetector', 'weightDecay'];
    const key = (detr: Record<string, unknown>) => evaluationStage.keyConfig!(evaluationConfigSchema.parse({ tasks: ['detr'], detr })) as { detr: Record<string, unknown> };
    expect(Object.keys(key({}).detr).sort()).toEqual(plainFields.sort());
    expect(Object.keys(key({ kind: 'deformable' }).detr).sort()).toEqual([...plainFields, 'kind'].sort());
    expect(key({ deformable: { lr: 1e-4 } }).detr.deformable).toMatchObject({ lr: 1e-4, lrBackbone: 2e-5, lrLinearProjMult: 0.1, costClass: 2, clsLossCoef: 2, topK: 100 });
    expect(() => detrConfigSchema.parse({ deformable: { hiddenDim: 48 } })).toThrow(/multiple of 32/);
  });

  it('the evaluation stage runs the deformable fine-tune on a 10 % subset (stage wiring)', async () => {
    const store = new FileArtifactStore(join(dir, 'stage'));
    const dataset = await writeSquaresDataset(store, { size: SIZE, train: 40, val: 8, seed: 'deformable-stage' });
    const config = evaluationConfigSchema.parse({ tasks: ['detr'], imageSize: SIZE, labelFraction: 0.1, backbone: { arch: 'resnet-tiny' }, detr: { kind: 'deformable', epochs: 1, batchSize: 4, deformable: { numQueries: 8 } } });
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, config);
    const m = ref.result.metrics;
    expect(m['eval.trainSamples']).toBe(4);
    expect(m['detr.deformable']).toBe(1);
    expect(m['detr.pretrainedDetector']).toBe(0);
    expect(m['detr.AP']).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(m['detr.finalLoss'])).toBe(true);
  });
});

describe('DetReg export → Deformable DETR fine-tune', () => {
  it('loads every tensor but class_embed.*, ignores feature_embed.*, refuses a mismatched file', async () => {
    const { bytes, method } = await detregExport(3);
    const read = readDetectorExport(bytes, 'detector.safetensors');
    expect(read.kind).toBe('deformable');
    if (read.kind !== 'deformable') throw new Error('unreachable');
    expect(read.shape).toMatchObject({ dModel: 32, nHead: 2, numEncoderLayers: 2, numDecoderLayers: 3, numFeatureLevels: 4, encNPoints: 2, decNPoints: 2, numQueries: 16, numClasses: 91, backboneChannels: [16, 32, 64] });
    expect([...read.tensors.keys()].some((k) => k.startsWith('backbone.'))).toBe(false);

    const target = new ParamStore();
    new DeformableDetr(target.scope(''), deformableDetrConfig(deformableFinetuneSchema.parse({}), CLASSES.length, [16, 32, 64], read.shape), 'fresh');
    const fresh = new Map([...target.vars].map(([k, v]) => [k, v.dataSync().slice()]));
    const report = loadPretrainedDeformable(target, read.tensors, 'detector.safetensors');
    expect(report.fresh).toEqual(['class_embed.0.bias', 'class_embed.0.weight']);
    expect(report.ignored).toEqual(['class_embed.0.bias', 'class_embed.0.weight', 'feature_embed.layers.0.bias', 'feature_embed.layers.0.weight', 'feature_embed.layers.1.bias', 'feature_embed.layers.1.weight']);
    expect(report.loaded.length + report.fresh.length).toBe(target.vars.size);
    for (const name of report.loaded) expect(Array.from(target.get(name).dataSync()), name).toEqual(Array.from(method.online.get(name).dataSync()));
    // The randomly initialised tensors differ between the two seeds, so equality above is the load's doing.
    for (const name of ['query_embed.weight', 'transformer.level_embed', 'input_proj.3.0.weight', 'transformer.decoder.layers.1.linear1.weight', 'bbox_embed.0.layers.0.weight']) {
      expect(report.loaded, name).toContain(name);
      expect(Array.from(fresh.get(name)!), name).not.toEqual(Array.from(method.online.get(name).dataSync()));
    }
    // A fresh classifier for the 3 downstream classes (the pretext's had 91).
    expect(target.get('class_embed.0.weight').shape).toEqual([32, 3]);
    expect(Array.from(target.get('class_embed.0.weight').dataSync())).toEqual(Array.from(fresh.get('class_embed.0.weight')!));
    // Any other unknown tensor is refused (strict but for class_embed / feature_embed).
    const extra = new Map(read.tensors).set('transformer.unknown', { shape: [1], values: [0] });
    expect(() => loadPretrainedDeformable(target, extra, 'detector.safetensors')).toThrow(/unexpected: transformer\.unknown/);
    target.dispose();

    // A plain 'detr' kind asked of a deformable export, and a backbone whose levels differ, are refused before training.
    await expect(runDetrTask(task({ config: detrConfigSchema.parse({ kind: 'detr' }), detector: { bytes, source: 'detector.safetensors' } }))).rejects.toThrow(/^evaluation\.detr\.kind: /);
    await expect(runDetrTask(task({ detector: { bytes, source: 'detector.safetensors' }, loadCopy: async () => buildBackbone('resnet18-w16-cifar', 0) }))).rejects.toThrow(IncompatibleArtifactError);
    method.dispose();
  });

  it('fine-tunes the exported detector (reference_points / sampling_offsets at lr × 0.1), COCO-scored, leaking nothing; resumes exactly', async () => {
    const { bytes, method } = await detregExport(5);
    const detector = { bytes, source: 'detector.safetensors' };
    // One step per epoch: the first epoch's checkpoint holds the weights after one AdamW step.
    const config = detrConfigSchema.parse({ epochs: 2, batchSize: 8 });
    const before = tf.memory().numTensors;
    const checkpointer = memoryCheckpointer();
    const losses: number[] = [];
    const out = await runDetrTask(task({ config, detector, checkpointer, onEpoch: (_, loss) => losses.push(loss) }));
    expect(losses).toHaveLength(2);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(out.metrics['detr.deformable']).toBe(1);
    expect(out.metrics['detr.pretrainedDetector']).toBe(1);
    for (const name of ['detr.AP', 'detr.AP50', 'detr.AR100']) expect(out.metrics[name], name).toBeGreaterThanOrEqual(0);
    expect(out.perClass).toMatchObject({ kind: 'deformable', fresh: ['class_embed.0.bias', 'class_embed.0.weight'] });
    // PostProcess keeps min(100, Q · C) = 16 · 3 pairs per image.
    expect((out.predictions as Array<{ detections: unknown[] }>).map((p) => p.detections.length)).toEqual([48, 48, 48, 48]);

    // AdamW's first step moves every parameter by about lr (|m̂ / √v̂| = 1): 2e-4, and 2e-5 for the linear projections.
    const first = checkpointer.saved[0]!;
    const moved = (name: string) => maxAbsDiff(first.get(`detr.${name}`)!, method.online.get(name));
    expect(moved('query_embed.weight')).toBeGreaterThan(1.5e-4);
    expect(moved('query_embed.weight')).toBeLessThan(2.1e-4);
    for (const name of ['transformer.reference_points.weight', 'transformer.encoder.layers.0.self_attn.sampling_offsets.weight', 'transformer.decoder.layers.2.cross_attn.sampling_offsets.bias']) {
      expect(moved(name), name).toBeGreaterThan(1.5e-5);
      expect(moved(name), name).toBeLessThan(2.1e-5);
    }
    // The backbone's layer2-4 train at 2e-5, conv1 / layer1 stay frozen.
    const backbone = buildBackbone('resnet-tiny', 0);
    expect(maxAbsDiff(first.get('backbone.layer3.0.conv1.weight')!, backbone.params.get('layer3.0.conv1.weight'))).toBeLessThan(2.1e-5);
    expect(maxAbsDiff(first.get('backbone.layer3.0.conv1.weight')!, backbone.params.get('layer3.0.conv1.weight'))).toBeGreaterThan(1.5e-5);
    expect(maxAbsDiff(first.get('backbone.layer1.0.conv1.weight')!, backbone.params.get('layer1.0.conv1.weight'))).toBe(0);
    backbone.dispose();
    checkpointer.dispose();
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);

    // Killed after epoch 1, retried: the same numbers as the uninterrupted run.
    const resumable = memoryCheckpointer();
    const abort = new AbortController();
    await expect(runDetrTask(task({ config, detector, checkpointer: resumable, signal: abort.signal, onEpoch: (e) => e === 1 && abort.abort('test') }))).rejects.toThrow();
    const resumed = await runDetrTask(task({ config, detector, checkpointer: resumable }));
    for (const name of ['detr.finalLoss', 'detr.AP', 'detr.AR100']) expect(resumed.metrics[name], name).toBe(out.metrics[name]);
    expect(resumed.predictions).toEqual(out.predictions);
    resumable.dispose();
    method.dispose();
  });

  it('the from-scratch arm: the same deformable detector with a random transformer at detr.deformable sizes; a pretrained one can be declined', async () => {
    const before = tf.memory().numTensors;
    // A DetReg run's export declined (pretrainedDetector false): its backbone with a fresh deformable transformer.
    const { bytes, method } = await detregExport(7);
    method.dispose();
    const config = detrConfigSchema.parse({ kind: 'deformable', pretrainedDetector: false, epochs: 1, batchSize: 4, deformable: { numQueries: 8 } });
    const out = await runDetrTask(task({ config, detector: { bytes, source: 'detector.safetensors' } }));
    expect(out.metrics['detr.deformable']).toBe(1);
    expect(out.metrics['detr.pretrainedDetector']).toBe(0);
    expect(Number.isFinite(out.metrics['detr.finalLoss'])).toBe(true);
    expect(out.perClass).toMatchObject({ kind: 'deformable' });
    expect(out.perClass).not.toHaveProperty('loaded');
    expect((out.predictions as Array<{ detections: unknown[] }>).map((p) => p.detections.length)).toEqual([24, 24, 24, 24]);
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  });
});
