/**
 * The evaluation stage's 'detr' task (stages/downstream/detr/) at tiny size: DETR's PostProcess and targets, a
 * from-scratch fine-tune that learns and leaks nothing, an exact resume from an epoch checkpoint, loading a pretrained
 * detector export as detr_main.py --pretrain does, and the whole chain UP-DETR pretraining → evaluation stage with
 * the run's exported detector.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../../cli/env.js';
import { loadRunConfig } from '../../core/config.js';
import { IncompatibleArtifactError } from '../../core/errors.js';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { shardConfigSchema, shardStage } from '../../stages/data/index.js';
import { buildBackbone } from '../../stages/downstream/backbone.js';
import { detrConfigSchema, type DetrConfig } from '../../stages/downstream/detr/config.js';
import { detrHeadConfig, detrPostprocess, detrTargets, loadPretrainedDetector, readDetector, runDetrTask, type DetrTaskInput } from '../../stages/downstream/detr/task.js';
import type { EvalSample } from '../../stages/downstream/eval-data.js';
import { evaluationConfigSchema, evaluationStage } from '../../stages/downstream/index.js';
import { DetrHead } from '../../stages/engine/detr/detr.js';
import { exportStateDict } from '../../stages/engine/export.js';
import { ParamStore } from '../../stages/engine/params.js';
import { pretrainConfigSchema, pretrainStage } from '../../stages/pretrain/index.js';
import { memoryCheckpointer, squareScenes } from './detection-helpers.js';

const SIZE = 32;
const CLASSES = ['red', 'green', 'blue'];

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'detr-downstream-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const samples = (n: number, seed: string): EvalSample[] =>
  squareScenes(n, SIZE, seed).map((s) => ({ ...s, semantic: null, classLabel: s.labels[0]!, iscrowd: Array.from(s.labels, () => false) }));

const small = (over: Partial<DetrConfig> = {}): DetrConfig => detrConfigSchema.parse({ epochs: 12, batchSize: 4, lr: 1e-3, lrBackbone: 1e-4, hiddenDim: 32, nheads: 2, encLayers: 1, decLayers: 2, dimFeedforward: 64, numQueries: 6, ...over });

function task(over: Partial<DetrTaskInput> = {}): DetrTaskInput {
  return {
    config: small(),
    seed: 0,
    imageSize: SIZE,
    batchSize: 8,
    classes: CLASSES,
    train: samples(8, 'detr-train'),
    evalSamples: samples(4, 'detr-eval'),
    loadCopy: async () => buildBackbone('resnet-tiny', 0),
    detector: null,
    ...over,
  };
}

describe('DETR downstream pieces', () => {
  it('PostProcess: softmax score of the best object class (no-object left out), cxcywh → xyxy pixels', () => {
    // One image, two queries, 2 classes + no-object.
    const logits = Float32Array.from([1, 2, 5, 3, 0, 0]);
    const boxes = Float32Array.from([0.5, 0.5, 0.5, 0.25, 0.25, 0.75, 0.5, 0.5]);
    const [dets] = detrPostprocess(logits, boxes, 2, 2, 32);
    const z = Math.exp(1) + Math.exp(2) + Math.exp(5);
    expect(dets![0]!.label).toBe(1);
    expect(dets![0]!.score).toBeCloseTo(Math.exp(2) / z, 6);
    expect(dets![0]!.box).toEqual([8, 12, 24, 20]);
    expect(dets![1]!.label).toBe(0);
    expect(dets![1]!.score).toBeCloseTo(Math.exp(3) / (Math.exp(3) + 2), 6);
  });

  it('targets: crowd objects and empty boxes dropped, boxes normalised (cx, cy, w, h)', () => {
    const s = { ...samples(1, 'x')[0]!, boxes: Float32Array.from([0, 0, 16, 8, 4, 4, 4, 10, 8, 8, 24, 24]), labels: Int32Array.from([2, 1, 0]), iscrowd: [false, false, true] };
    expect(detrTargets(s, 32)).toEqual({ labels: [2], boxes: [[0.25, 0.125, 0.5, 0.25]] });
  });

  it('loads a pretrained detector export as detr_main.py --pretrain: every tensor but class_embed, extra heads ignored', async () => {
    const shape = { dModel: 16, nHead: 2, numEncoderLayers: 1, numDecoderLayers: 2, dimFeedforward: 32, dropout: 0.1, activation: 'relu' as const, normalizeBefore: true, returnIntermediateDec: true, numQueries: 4, backboneChannels: 48 };
    const source = new ParamStore();
    new DetrHead(source.scope(''), detrHeadConfig(small(), 2, 48, shape), 'pretext');
    source.add('patch2query.weight', tf.ones([48, 16]), { layout: 'io', role: 'weight' });
    const bytes = await exportStateDict(source, { metadata: { schema: 'densepipe.detr/v1', detr: JSON.stringify(shape) } });
    const read = readDetector(bytes, 'detector.safetensors');
    expect(read.shape).toEqual(shape);
    const target = new ParamStore();
    new DetrHead(target.scope(''), detrHeadConfig(small(), CLASSES.length, 48, read.shape), 'fresh');
    const before = target.get('class_embed.weight').dataSync().slice();
    loadPretrainedDetector(target, read.tensors, 'detector.safetensors');
    for (const name of ['transformer.decoder.layers.1.self_attn.in_proj_weight', 'query_embed.weight', 'input_proj.weight', 'bbox_embed.layers.2.bias']) {
      expect(Array.from(target.get(name).dataSync()), name).toEqual(Array.from(source.get(name).dataSync()));
    }
    // A fresh classifier for the downstream classes (3 + no-object, not the pretext's 2 + 1).
    expect(target.get('class_embed.weight').shape).toEqual([16, 4]);
    expect(Array.from(target.get('class_embed.weight').dataSync())).toEqual(Array.from(before));
    expect(() => readDetector(new Uint8Array(bytes.length).fill(0), 'x')).toThrow(IncompatibleArtifactError);
    // A detector pretrained on a backbone of another width is refused before training.
    await expect(runDetrTask(task({ detector: { bytes, source: 'detector.safetensors' } }))).rejects.toThrow(/48-channel backbone, the evaluated one has 64/);
    source.dispose();
    target.dispose();
  });
});

describe('DETR fine-tuning task', () => {
  it('learns from scratch (loss falls), reports detr.* COCO metrics over every query, and leaks nothing', async () => {
    const before = tf.memory().numTensors;
    const losses: number[] = [];
    const out = await runDetrTask(task({ onEpoch: (_, loss) => losses.push(loss) }));
    expect(losses).toHaveLength(12);
    expect(losses.at(-1)!).toBeLessThan(losses[0]! * 0.8);
    for (const name of ['detr.AP', 'detr.AP50', 'detr.AR100']) expect(out.metrics[name], name).toBeGreaterThanOrEqual(0);
    expect(out.metrics['detr.pretrainedDetector']).toBe(0);
    const predictions = out.predictions as Array<{ detections: unknown[] }>;
    expect(predictions.map((p) => p.detections.length)).toEqual([6, 6, 6, 6]);
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  });

  it('resumes from an epoch checkpoint (weights, both optimizers, shuffling, dropout stream) to the same numbers', async () => {
    const config = small({ epochs: 4 });
    const full = await runDetrTask(task({ config, checkpointer: memoryCheckpointer() }));
    const checkpointer = memoryCheckpointer();
    const abort = new AbortController();
    await expect(runDetrTask(task({ config, checkpointer, signal: abort.signal, onEpoch: (e) => e === 2 && abort.abort('test') }))).rejects.toThrow();
    expect(checkpointer.saved).toEqual([1, 2]);
    const resumed = await runDetrTask(task({ config, checkpointer }));
    expect(checkpointer.saved).toEqual([1, 2, 3, 4]);
    for (const name of ['detr.finalLoss', 'detr.AP', 'detr.AR100']) expect(resumed.metrics[name], name).toBe(full.metrics[name]);
    expect(resumed.predictions).toEqual(full.predictions);
  });
});

describe('UP-DETR pretraining → DETR fine-tune (pretrain and evaluation stages)', () => {
  it('the evaluation stage fine-tunes the detector the UP-DETR run exported', async () => {
    const store = new FileArtifactStore(join(dir, 'chain'));
    const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref;
    const { config } = await loadRunConfig(join(projectRoot(), 'configs', 'methods', 'updetr.yaml'));
    const pretrain = pretrainConfigSchema.parse({ ...config.pretrain, steps: 2, backend: 'tensorflow' });
    const trained = (await runStage(pretrainStage, localContext(store), { dataset }, pretrain)).ref;
    const detectorKey = trained.result.exports?.detector;
    expect(detectorKey).toMatch(/detector\.safetensors$/);
    const { tensors, shape } = readDetector(await store.get(detectorKey!), detectorKey!);
    expect([...tensors.keys()].some((k) => k.startsWith('backbone.'))).toBe(false);
    expect(tensors.has('patch2query.weight') && tensors.has('feature_align.layers.1.bias') && tensors.has('transformer.encoder.norm.weight')).toBe(true);
    expect(shape).toMatchObject({ dModel: 16, numQueries: 8, normalizeBefore: true, numClasses: 2 });
    const evaluation = evaluationConfigSchema.parse({ tasks: ['detr'], imageSize: 32, maxSamplesPerSplit: 16, backbone: { arch: 'resnet-tiny' }, detr: { epochs: 1, batchSize: 8 } });
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: trained }, evaluation);
    expect(ref.result.metrics['detr.pretrainedDetector']).toBe(1);
    expect(ref.result.metrics['detr.AP']).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(ref.result.metrics['detr.finalLoss'])).toBe(true);
  });
});
