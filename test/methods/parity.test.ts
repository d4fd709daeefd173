/**
 * Loss parity with the official PyTorch code paths on identical inputs and weights.
 * Reference values: test/fixtures/methods/parity.json, made by make_parity.py (see the note there).
 * The backbone is the identity on a given feature map, so these tests exercise exactly the
 * method-specific code: necks, normalisation, correspondence, InfoNCE, λ weighting, momentum update
 * order and queue update, through the same `trainStep` the pretraining stage calls.
 */
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import type { ParamStore } from '../../stages/engine/params.js';
import type { MemoryQueue } from '../../stages/engine/queue.js';
import { DenseCL, DENSECL_DEFAULTS, denseclEmbed, denseclLoss, matchByBackboneSimilarity } from '../../stages/methods/densecl.js';
import { MOCOV2_DEFAULTS, MoCoV2, type FeatureBackbone, type NamedGradients } from '../../stages/methods/mocov2.js';

interface Json { shape: number[]; data: number[] }
const fixture = JSON.parse(readFileSync(new URL('../fixtures/methods/parity.json', import.meta.url), 'utf8'));
const { B, C, h, w, hidden, D, K } = fixture.sizes as Record<string, number>;
const REL_TOL = 1e-4;

/** NCHW (PyTorch) → NHWC (ours). */
function nhwc(t: Json): tf.Tensor4D {
  return tf.tidy(() => tf.transpose(tf.tensor4d(t.data, t.shape as [number, number, number, number]), [0, 2, 3, 1]));
}

/** A state_dict tensor → our layout for a parameter named `name` in the ParamStore. */
function toOurLayout(name: string, t: Json, store: ParamStore): tf.Tensor {
  const layout = store.info.get(name)!.layout;
  const x = tf.tensor(t.data, t.shape);
  if (layout === 'io') return tf.transpose(x); // Linear [out, in] → [in, out]
  if (layout === 'hwio') return tf.transpose(x, [2, 3, 1, 0]); // Conv [out, in, kh, kw] → [kh, kw, in, out]
  return x;
}

function loadNeck(store: ParamStore, state: Record<string, Json>): void {
  for (const [name, t] of Object.entries(state)) {
    const ours = `neck.${name}`;
    const value = toOurLayout(ours, t, store);
    store.get(ours).assign(value);
    value.dispose();
  }
}

/** The [D, K] official buffer as our [K, D] rows. */
function queueRows(t: Json): tf.Tensor2D {
  return tf.tidy(() => tf.transpose(tf.tensor2d(t.data, t.shape as [number, number])));
}

function loadQueue(queue: MemoryQueue, rows: tf.Tensor2D, pointer: number): void {
  queue.buffer.assign(rows);
  queue.pointer = pointer;
}

function relErr(ours: number, ref: number): number {
  return Math.abs(ours - ref) / Math.max(Math.abs(ref), 1e-12);
}

/** max |a−b| / max |b|: relative error of a whole tensor. */
function tensorRelErr(ours: tf.Tensor, ref: tf.Tensor): number {
  expect(ours.shape).toEqual(ref.shape);
  return tf.tidy(() => tf.max(tf.abs(tf.sub(ours, ref))).dataSync()[0]! / Math.max(tf.max(tf.abs(ref)).dataSync()[0]!, 1e-12));
}

function expectStoreMatches(store: ParamStore, state: Record<string, Json>): void {
  for (const [name, t] of Object.entries(state)) {
    const ref = toOurLayout(`neck.${name}`, t, store);
    expect(tensorRelErr(store.get(`neck.${name}`), ref), name).toBeLessThan(REL_TOL);
    ref.dispose();
  }
}

function expectGradsMatch(grads: NamedGradients, store: ParamStore, ref: Record<string, Json>): void {
  expect([...grads.keys()].sort()).toEqual(Object.keys(ref).map((n) => `neck.${n}`).sort());
  for (const [name, t] of Object.entries(ref)) {
    const expected = toOurLayout(`neck.${name}`, t, store);
    expect(tensorRelErr(grads.get(`neck.${name}`)!, expected), `grad ${name}`).toBeLessThan(REL_TOL);
    expected.dispose();
  }
}

/** The "backbone" of these tests: its input already is the feature map. */
const identityBackbone = (): FeatureBackbone => ({ outChannels: C, apply: (x) => tf.clone(x) });

const smallArgs = { temperature: fixture.temperature, queueSize: K, momentum: fixture.momentum, embedDim: D, hiddenDim: hidden, shuffleBnGroups: 1 };

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('MoCo v2 parity with facebookresearch/moco builder.py', () => {
  it('matches loss, gradients, momentum update and queue after one step', () => {
    const { inputs, outputs } = fixture.mocov2;
    const method = new MoCoV2({ ...MOCOV2_DEFAULTS, ...smallArgs }, identityBackbone, 1);
    loadNeck(method.online, inputs.neck_q);
    loadNeck(method.momentumEncoder, inputs.neck_k);
    const queue0 = queueRows(inputs.queue);
    loadQueue(method.queues.queue, queue0, inputs.queue_ptr);
    const [qMap, kMap] = [nhwc(inputs.q_map), nhwc(inputs.k_map)];
    let captured: NamedGradients = new Map();
    const result = method.trainStep(qMap, kMap, (g) => (captured = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]))), new Rng(1));

    expect(relErr(result.loss, outputs.loss)).toBeLessThan(REL_TOL);
    expectGradsMatch(captured, method.online, outputs.grads);
    expectStoreMatches(method.momentumEncoder, outputs.neck_k_after);
    const expectedQueue = queueRows(outputs.queue_after);
    expect(tensorRelErr(method.queues.queue.buffer, expectedQueue)).toBeLessThan(REL_TOL);
    expect(method.queues.queue.pointer).toBe(outputs.queue_ptr_after);
    tf.dispose([queue0, qMap, kMap, expectedQueue, ...captured.values()]);
    method.dispose();
  });
});

describe('DenseCL parity with WXinlong/DenseCL densecl.py', () => {
  it('matches both loss terms, gradients, momentum update and both queues after one step', () => {
    const { inputs, outputs } = fixture.densecl;
    const method = new DenseCL({ ...DENSECL_DEFAULTS, ...smallArgs, lossLambda: fixture.lossLambda }, identityBackbone, 1);
    loadNeck(method.online, inputs.neck_q);
    loadNeck(method.momentumEncoder, inputs.neck_k);
    const q0 = queueRows(inputs.queue);
    const q20 = queueRows(inputs.queue2);
    loadQueue(method.queues.queue, q0, inputs.queue_ptr);
    loadQueue(method.queues.queue2, q20, inputs.queue_ptr);
    const [qMap, kMap] = [nhwc(inputs.q_map), nhwc(inputs.k_map)];
    let captured: NamedGradients = new Map();
    const result = method.trainStep(qMap, kMap, (g) => (captured = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]))), new Rng(1));

    expect(relErr(result.loss, outputs.loss)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.single!, outputs.loss_single)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.dense!, outputs.loss_dense)).toBeLessThan(REL_TOL);
    expectGradsMatch(captured, method.online, outputs.grads);
    expectStoreMatches(method.momentumEncoder, outputs.neck_k_after);
    const [eq, eq2] = [queueRows(outputs.queue_after), queueRows(outputs.queue2_after)];
    expect(tensorRelErr(method.queues.queue.buffer, eq)).toBeLessThan(REL_TOL);
    expect(tensorRelErr(method.queues.queue2.buffer, eq2)).toBeLessThan(REL_TOL);
    expect(method.queues.queue2.pointer).toBe(outputs.queue_ptr_after);
    tf.dispose([q0, q20, qMap, kMap, eq, eq2, ...captured.values()]);
    method.dispose();
  });

  it('matches the argmax correspondence and the gradient reaching the backbone feature map', () => {
    const { inputs, outputs } = fixture.densecl;
    const method = new DenseCL({ ...DENSECL_DEFAULTS, ...smallArgs, lossLambda: fixture.lossLambda }, identityBackbone, 1);
    loadNeck(method.online, inputs.neck_q);
    loadNeck(method.momentumEncoder, outputs.neck_k_after); // the keys come from the updated momentum neck
    const neckQ = method.q.head;
    const neckK = method.k.head;
    const [qMap, kMap] = [nhwc(inputs.q_map), nhwc(inputs.k_map)];
    const [queue, queue2] = [queueRows(inputs.queue), queueRows(inputs.queue2)];
    const keys = denseclEmbed(neckK, kMap);
    const q = denseclEmbed(neckQ, qMap);
    const match = matchByBackboneSimilarity(q.backbone, keys.backbone);
    expect(Array.from(match.dataSync())).toEqual(outputs.match);
    const gradQMap = tf.grad((x: tf.Tensor) => denseclLoss(denseclEmbed(neckQ, x as tf.Tensor4D), keys, queue, queue2, fixture.temperature, fixture.lossLambda).loss)(qMap);
    const expected = nhwc(outputs.grad_q_map);
    expect(tensorRelErr(gradQMap, expected)).toBeLessThan(REL_TOL);
    tf.dispose([qMap, kMap, queue, queue2, match, gradQMap, expected, ...Object.values(keys), ...Object.values(q)]);
    method.dispose();
  });
});

describe('fixture shape', () => {
  it('has the sizes the tests assume', () => {
    expect([B, C, h, w]).toEqual(fixture.densecl.inputs.q_map.shape);
  });
});
