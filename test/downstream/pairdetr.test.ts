/**
 * The evaluation stage's 'pairdetr' task (stages/downstream/pairdetr/) at tiny size: config validation naming the
 * field, inference pairing by hand, the centre branch starting from the `detr` task's weights, a from-scratch training
 * that learns and leaks nothing, an exact resume from an epoch checkpoint, and the task through the evaluation stage.
 * The objective's parity with PyTorch is pairdetr.parity.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseRunConfig } from '../../core/config.js';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { buildBackbone } from '../../stages/downstream/backbone.js';
import { detrHeadConfig } from '../../stages/downstream/detr/task.js';
import type { EvalSample } from '../../stages/downstream/eval-data.js';
import { evaluationConfigSchema, evaluationStage } from '../../stages/downstream/index.js';
import { pairDetrConfigSchema, type PairDetrConfig } from '../../stages/downstream/pairdetr/config.js';
import { PairDetrHead, pairDetrPostprocess } from '../../stages/downstream/pairdetr/pairdetr.js';
import { runPairDetrTask, type PairDetrTaskInput } from '../../stages/downstream/pairdetr/task.js';
import { DetrHead } from '../../stages/engine/detr/detr.js';
import { ParamStore } from '../../stages/engine/params.js';
import { memoryCheckpointer, squareScenes } from './detection-helpers.js';
import { writeSquaresDataset } from './squares-dataset.js';

const SIZE = 32;
const CLASSES = ['red', 'green', 'blue'];

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'pairdetr-downstream-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const samples = (n: number, seed: string): EvalSample[] =>
  squareScenes(n, SIZE, seed).map((s) => ({ ...s, semantic: null, classLabel: s.labels[0]!, iscrowd: Array.from(s.labels, () => false) }));

const small = (over: Partial<PairDetrConfig> = {}): PairDetrConfig =>
  pairDetrConfigSchema.parse({ epochs: 12, batchSize: 4, lr: 1e-3, lrBackbone: 1e-4, hiddenDim: 32, nheads: 2, encLayers: 1, decLayers: 2, dimFeedforward: 64, numQueries: 6, ...over });

function task(over: Partial<PairDetrTaskInput> = {}): PairDetrTaskInput {
  return {
    config: small(),
    seed: 0,
    imageSize: SIZE,
    batchSize: 8,
    classes: CLASSES,
    train: samples(8, 'pairdetr-train'),
    evalSamples: samples(4, 'pairdetr-eval'),
    loadCopy: async () => buildBackbone('resnet-tiny', 0),
    ...over,
  };
}

describe('Pair DETR config', () => {
  const run = (pairdetr: Record<string, unknown>) => () => parseRunConfig({ name: 'p', pretrain: { method: 'densecl' }, evaluation: { tasks: ['pairdetr'], pairdetr } }, 'my.yaml');

  it('defaults cite where they come from; a bad or unknown field is refused naming the file and the field', () => {
    const c = pairDetrConfigSchema.parse({});
    expect(c).toMatchObject({ lr: 1e-4, lrBackbone: 1e-5, weightDecay: 1e-4, clipMaxNorm: 0.1, eosCoef: 0.1, costClass: 1, costBbox: 5, costGiou: 2, pairLossCoef: 1, temperature: 0.1, epochs: 50, lrDropAt: 0.8 });
    for (const [name, field] of Object.entries(pairDetrConfigSchema.def.shape)) expect((field as { description?: string }).description, name).toMatch(/main\.py|detr task|inferred|Conditional DETR/);
    expect(run({ temperature: 0 })).toThrow(ConfigError);
    expect(run({ temperature: 0 })).toThrow(/my\.yaml: evaluation\.pairdetr\.temperature: /);
    expect(run({ tau: 0.2 })).toThrow(/my\.yaml: evaluation\.pairdetr: .*"tau"/);
    expect(run({ pairLossCoef: 'one' })).toThrow(/evaluation\.pairdetr\.pairLossCoef: .*number/);
    expect(run({ hiddenDim: 30, nheads: 4 })).toThrow(/evaluation\.pairdetr\.hiddenDim: pairdetr\.hiddenDim must be even and a multiple of pairdetr\.nheads/);
    expect(parseRunConfig({ name: 'p', pretrain: { method: 'densecl' }, evaluation: { tasks: ['pairdetr'], pairdetr: { temperature: 0.2 } } }).evaluation.pairdetr.temperature).toBe(0.2);
  });

  it('enters the evaluation key only when the task runs', () => {
    const plain = evaluationConfigSchema.parse({ tasks: ['knn'] });
    expect(evaluationStage.keyConfig!(plain)).not.toHaveProperty('pairdetr');
    expect(evaluationStage.keyConfig!(evaluationConfigSchema.parse({ tasks: ['pairdetr'], pairdetr: { temperature: 0.3 } }))).toMatchObject({ pairdetr: { temperature: 0.3 } });
  });
});

describe('Pair DETR pieces', () => {
  it('inference by hand: partner = most similar top-left query, joint class probabilities, keypoint-pair box', () => {
    // One image, two queries per decoder, 2 classes + no-object.
    const x = {
      logitsC: Float32Array.from([2, 0, 1, 0, 0, 3]),
      logitsT: Float32Array.from([0, 0, 0, 0, 4, 0]),
      boxesC: Float32Array.from([0.5, 0.5, 0.9, 0.9, 0.25, 0.75, 0.1, 0.1]),
      corners: Float32Array.from([0.25, 0.375, 0.1, 0.1, 0.6, 0.1, 0.2, 0.2]),
      similarity: Float32Array.from([0.1, 0.9, 0.8, -0.2]), // centre 0 ↔ top-left 1, centre 1 ↔ top-left 0
    };
    const [dets] = pairDetrPostprocess(x, 2, 2, 32);
    const sm = (v: number[]) => v.map((a) => Math.exp(a) / v.reduce((s, b) => s + Math.exp(b), 0));
    const j0 = sm([2, 0, 1]).map((p, c) => (p + sm([0, 4, 0])[c]!) / 2);
    expect(dets![0]!.partner).toBe(1);
    expect(dets![0]!.label).toBe(j0[0]! > j0[1]! ? 0 : 1);
    expect(dets![0]!.score).toBeCloseTo(Math.max(j0[0]!, j0[1]!), 6);
    // centre (0.5, 0.5), corner (0.6, 0.1): x1 = max(2·0.5 − 0.6, 0.6) = 0.6 (clamped), y1 = 2·0.5 − 0.1 = 0.9.
    expect(dets![0]!.box.map((v) => +v.toFixed(4))).toEqual([19.2, 3.2, 19.2, 28.8]);
    expect(dets![1]!.partner).toBe(0);
    // centre (0.25, 0.75), corner (0.25, 0.375): (8, 12, 8, 36).
    expect(dets![1]!.box.map((v) => +v.toFixed(4))).toEqual([8, 12, 8, 36]);
  });

  it('the centre branch starts from the weights the detr task starts from (same seed, same names)', () => {
    const config = detrHeadConfig({ ...small(), pretrainedDetector: false }, 3, 64, null);
    const a = new ParamStore();
    new DetrHead(a.scope(''), config, 'downstream-detr-0');
    const b = new ParamStore();
    new PairDetrHead(b.scope(''), config, 'downstream-detr-0');
    const extra = [...b.vars.keys()].filter((k) => !a.vars.has(k));
    expect(extra.every((k) => /^(decoder_tl|bbox_embed_tl|query_embed_tl)\./.test(k))).toBe(true);
    expect(extra.length).toBeGreaterThan(10);
    for (const [name, v] of a.vars) expect(Array.from(b.get(name).dataSync()), name).toEqual(Array.from(v.dataSync()));
    a.dispose();
    b.dispose();
  });
});

describe('Pair DETR training task', () => {
  it('learns from scratch (loss falls), reports pairdetr.* COCO metrics over every centre query, and leaks nothing', async () => {
    const before = tf.memory().numTensors;
    const losses: number[] = [];
    const out = await runPairDetrTask(task({ onEpoch: (_, loss) => losses.push(loss) }));
    expect(losses).toHaveLength(12);
    expect(losses.at(-1)!).toBeLessThan(losses[0]! * 0.8);
    for (const name of ['pairdetr.AP', 'pairdetr.AP50', 'pairdetr.AR100']) expect(out.metrics[name], name).toBeGreaterThanOrEqual(0);
    expect(out.metrics['pairdetr.finalPairLoss']).toBeGreaterThan(0);
    expect(out.metrics['pairdetr.finalPairLoss']).toBeLessThan(out.metrics['pairdetr.finalLoss']!);
    const predictions = out.predictions as Array<{ detections: unknown[] }>;
    expect(predictions.map((p) => p.detections.length)).toEqual([6, 6, 6, 6]);
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  });

  it('resumes from an epoch checkpoint (weights, both optimizers, shuffling, dropout stream) to the same numbers', async () => {
    const config = small({ epochs: 3 });
    const full = await runPairDetrTask(task({ config, checkpointer: memoryCheckpointer() }));
    const checkpointer = memoryCheckpointer();
    const abort = new AbortController();
    await expect(runPairDetrTask(task({ config, checkpointer, signal: abort.signal, onEpoch: (e) => e === 2 && abort.abort('test') }))).rejects.toThrow();
    expect(checkpointer.saved).toEqual([1, 2]);
    const resumed = await runPairDetrTask(task({ config, checkpointer }));
    expect(checkpointer.saved).toEqual([1, 2, 3]);
    for (const name of ['pairdetr.finalLoss', 'pairdetr.finalPairLoss', 'pairdetr.AP', 'pairdetr.AR100']) expect(resumed.metrics[name], name).toBe(full.metrics[name]);
    expect(resumed.predictions).toEqual(full.predictions);
  });

  it('runs as the evaluation stage\'s pairdetr task', async () => {
    const store = new FileArtifactStore(join(dir, 'stage'));
    const dataset = await writeSquaresDataset(store, { size: SIZE, train: 8, val: 4, seed: 'pairdetr-stage' });
    const cfg = evaluationConfigSchema.parse({ tasks: ['pairdetr'], imageSize: SIZE, backbone: { arch: 'resnet-tiny' }, pairdetr: { epochs: 1, batchSize: 8, hiddenDim: 16, nheads: 2, encLayers: 1, decLayers: 1, dimFeedforward: 32, numQueries: 4 } });
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, cfg);
    expect(ref.result.metrics['pairdetr.AP']).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(ref.result.metrics['pairdetr.finalLoss'])).toBe(true);
  });
});
