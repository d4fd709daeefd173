/**
 * Shared pieces of the per-method parity tests (test/methods/NAME.parity.test.ts): PyTorch layouts → ours,
 * relative errors, weight loading, gradient capture. Reference values: test/fixtures/methods/NAME/parity.json.
 */
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import type { ParamStore } from '../../stages/engine/params.js';
import type { MemoryQueue } from '../../stages/engine/queue.js';
import type { FeatureBackbone, MethodBatch, MethodInstance, NamedGradients, StepResult } from '../../stages/methods/shared/contract.js';

export const REL_TOL = 1e-4;

/** A method's fixture, written by its generator (see the `generator` field). */
export function loadFixture<T = any>(method: string): T {
  return JSON.parse(readFileSync(new URL(`../fixtures/methods/${method}/parity.json`, import.meta.url), 'utf8')) as T;
}

export interface Json { shape: number[]; data: number[] }

/** NCHW (PyTorch) → NHWC (ours). */
export function nhwc(t: Json): tf.Tensor4D {
  return tf.tidy(() => tf.transpose(tf.tensor4d(t.data, t.shape as [number, number, number, number]), [0, 2, 3, 1]));
}

/** A state_dict tensor → our layout for a parameter named `name` in the ParamStore. */
export function toOurLayout(name: string, t: Json, store: ParamStore): tf.Tensor {
  const layout = store.info.get(name)!.layout;
  const x = tf.tensor(t.data, t.shape);
  if (layout === 'io') return tf.transpose(x); // Linear [out, in] → [in, out]
  if (layout === 'hwio') return tf.transpose(x, [2, 3, 1, 0]); // Conv [out, in, kh, kw] → [kh, kw, in, out]
  return x;
}

export function loadNeck(store: ParamStore, state: Record<string, Json>): void {
  for (const [name, t] of Object.entries(state)) {
    const ours = `neck.${name}`;
    const value = toOurLayout(ours, t, store);
    store.get(ours).assign(value);
    value.dispose();
  }
}

/** The [D, K] official buffer as our [K, D] rows. */
export function queueRows(t: Json): tf.Tensor2D {
  return tf.tidy(() => tf.transpose(tf.tensor2d(t.data, t.shape as [number, number])));
}

export function loadQueue(queue: MemoryQueue, rows: tf.Tensor2D, pointer: number): void {
  queue.buffer.assign(rows);
  queue.pointer = pointer;
}

export function relErr(ours: number, ref: number): number {
  return Math.abs(ours - ref) / Math.max(Math.abs(ref), 1e-12);
}

/** max |a−b| / max |b|: relative error of a whole tensor. */
export function tensorRelErr(ours: tf.Tensor, ref: tf.Tensor): number {
  expect(ours.shape).toEqual(ref.shape);
  return tf.tidy(() => tf.max(tf.abs(tf.sub(ours, ref))).dataSync()[0]! / Math.max(tf.max(tf.abs(ref)).dataSync()[0]!, 1e-12));
}

/** Every `neck.*` tensor of the store against the reference state, within REL_TOL; returns the largest error. */
export function expectStoreMatches(store: ParamStore, state: Record<string, Json>): number {
  let max = 0;
  for (const [name, t] of Object.entries(state)) {
    const ref = toOurLayout(`neck.${name}`, t, store);
    const e = tensorRelErr(store.get(`neck.${name}`), ref);
    expect(e, name).toBeLessThan(REL_TOL);
    max = Math.max(max, e);
    ref.dispose();
  }
  return max;
}

export function expectGradsMatch(grads: NamedGradients, store: ParamStore, ref: Record<string, Json>): void {
  expect([...grads.keys()].sort()).toEqual(Object.keys(ref).map((n) => `neck.${n}`).sort());
  for (const [name, t] of Object.entries(ref)) {
    const expected = toOurLayout(`neck.${name}`, t, store);
    expect(tensorRelErr(grads.get(`neck.${name}`)!, expected), `grad ${name}`).toBeLessThan(REL_TOL);
    expected.dispose();
  }
}

/** The "backbone" of these tests: its input already is the feature map (C channels). */
export const identityBackbone = (C: number): FeatureBackbone => ({ outChannels: C, apply: (x) => tf.clone(x) });

/** One step of a built method on given "views" (feature maps), capturing the gradients handed to the optimizer. */
export function stepCapturing(method: MethodInstance, views: tf.Tensor4D[], extra: Partial<MethodBatch> = {}, step = 0, totalSteps = 1): { result: StepResult; grads: NamedGradients } {
  let grads: NamedGradients = new Map();
  const result = method.step({ views, geometry: [], ...extra }, { step, totalSteps, rng: new Rng(1), applyGradients: (g) => (grads = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]))) });
  return { result, grads };
}
