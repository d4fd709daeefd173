/**
 * Shared by the DETR-family engine tests (detr.test.ts, ms_deform_attn.test.ts): fixture tensors in PyTorch layouts →
 * ours, the relative error used for parity (max |ours − ref| / max |ref| over a tensor), and a table of the measured
 * errors (printed with DETR_PARITY_REPORT=1).
 */
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { tf } from '../../core/tf.js';
import type { ParamStore } from '../../stages/engine/params.js';

export const REL_TOL = 1e-4;

export interface Json {
  shape: number[];
  data: number[];
}

export function loadDetrFixture<T = any>(file: string): T {
  return JSON.parse(readFileSync(new URL(`../fixtures/detr/${file}`, import.meta.url), 'utf8')) as T;
}

export const tensor = (t: Json): tf.Tensor => tf.tensor(t.data, t.shape);
/** A 0/1 float mask → bool. */
export const boolMask = (t: Json): tf.Tensor => tf.tidy(() => tf.cast(tensor(t), 'bool'));
/** NCHW → NHWC. */
export const nhwc = (t: Json): tf.Tensor4D => tf.tidy(() => tf.transpose(tensor(t), [0, 2, 3, 1]) as tf.Tensor4D);
/** Sequence-first [L, B, D] → batch-first [B, L, D]. */
export const batchFirst = (t: Json): tf.Tensor3D => tf.tidy(() => tf.transpose(tensor(t), [1, 0, 2]) as tf.Tensor3D);

/** A state_dict tensor in the layout the store keeps `name` in (Linear and in_proj [out, in] → [in, out], conv OIHW → HWIO). */
export function toOurLayout(store: ParamStore, name: string, t: Json): tf.Tensor {
  const info = store.info.get(name);
  if (!info) throw new Error(`no parameter '${name}' in the store`);
  const x = tensor(t);
  if (info.layout === 'same') return x;
  const y = info.layout === 'io' ? tf.transpose(x) : tf.transpose(x, [2, 3, 1, 0]);
  x.dispose();
  return y;
}

/** Load a state_dict (names must be exactly the store's, in the same order). */
export function loadState(store: ParamStore, state: Record<string, Json>, prefix = ''): void {
  expect([...store.vars.keys()]).toEqual(Object.keys(state).map((n) => prefix + n));
  for (const [name, t] of Object.entries(state)) {
    const v = toOurLayout(store, prefix + name, t);
    store.get(prefix + name).assign(v);
    v.dispose();
  }
}

/** max |ours − ref| / max |ref|. */
export function relErr(ours: tf.Tensor, ref: tf.Tensor): number {
  expect(ours.shape).toEqual(ref.shape);
  return tf.tidy(() => tf.max(tf.abs(tf.sub(ours, ref))).dataSync()[0]! / Math.max(tf.max(tf.abs(ref)).dataSync()[0]!, 1e-12));
}

const measured = new Map<string, number>();

/** Assert parity and record the error under `label` (the worst one when a label repeats). */
export function expectClose(label: string, ours: tf.Tensor, ref: tf.Tensor, tol = REL_TOL): number {
  const e = relErr(ours, ref);
  measured.set(label, Math.max(measured.get(label) ?? 0, e));
  expect(e, label).toBeLessThan(tol);
  return e;
}

export function expectScalarClose(label: string, ours: number, ref: number, tol = REL_TOL): void {
  const e = Math.abs(ours - ref) / Math.max(Math.abs(ref), 1e-12);
  measured.set(label, Math.max(measured.get(label) ?? 0, e));
  expect(e, `${label}: ${ours} vs ${ref}`).toBeLessThan(tol);
}

export function printParityReport(title: string): void {
  if (!process.env.DETR_PARITY_REPORT) return;
  const rows = [...measured].map(([k, v]) => `  ${k.padEnd(60)} ${v.toExponential(2)}`);
  console.log(`${title}: max relative error per check\n${rows.join('\n')}`);
}
