import * as tf from '@tensorflow/tfjs';
import { IncompatibleArtifactError } from '../../core/errors.js';
import { canonicalJson } from '../../core/hash.js';
import type { Optimizer } from './optim.js';
import type { ParamStore } from './params.js';
import type { MemoryQueue } from './queue.js';
import { bytesOf, decodeSafetensors, encodeSafetensors, typedArrayOf, type SafeDtype, type SafeTensor } from './safetensors.js';

/**
 * Training state = named tensor groups (model weights, EMA weights, optimizer slots, queues)
 * plus small numbers (step, RNG states, queue pointers, optimizer step counts), written as one
 * safetensors-style file. Tensors are keyed `<component>/<name>`; everything else lives in the
 * string metadata as JSON.
 */
export const TRAINING_STATE_FORMAT = 'densepipe.training-state/v1';

/** One checkpointed part of the training state. */
export interface CheckpointComponent {
  tensors: Map<string, tf.Variable>;
  /** Integer/float scalars that are not tensors (queue pointer, optimizer step count). */
  counters?(): Record<string, number>;
  loadCounters?(counters: Record<string, number>): void;
}

export interface TrainingStateSpec {
  /**
   * What this state belongs to: model architecture, method, anything whose change makes the
   * state meaningless. Compared field by field on restore; any difference is refused.
   */
  signature: Record<string, unknown>;
  components: Record<string, CheckpointComponent>;
}

export interface TrainingStateValues {
  step: number;
  /** core/rng.ts Rng.state values by stream name. */
  rng: Record<string, number>;
  /** Small JSON the caller wants back (epoch, data cursor, loss history tail). */
  extra: Record<string, unknown>;
}

export function paramsComponent(store: ParamStore): CheckpointComponent {
  return { tensors: store.vars };
}

export function optimizerComponent(optimizer: Optimizer): CheckpointComponent {
  return { tensors: optimizer.slots(), counters: () => optimizer.counters(), loadCounters: (c) => optimizer.loadCounters(c) };
}

/** Several queues (DenseCL has two) in one component: tensors by queue name, pointers as counters. */
export function queuesComponent(queues: MemoryQueue[]): CheckpointComponent {
  const byName = new Map(queues.map((q) => [q.name, q]));
  if (byName.size !== queues.length) throw new Error('queuesComponent: queue names must be unique');
  return {
    tensors: new Map(queues.map((q) => [q.name, q.buffer])),
    counters: () => Object.fromEntries(queues.map((q) => [q.name, q.pointer])),
    loadCounters: (c) => {
      for (const q of queues) {
        const p = c[q.name];
        if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p >= q.size) {
          throw new IncompatibleArtifactError(`pointer of queue '${q.name}' is ${String(p)}, expected an integer in [0, ${q.size})`, 'checkpoint');
        }
        q.pointer = p;
      }
    },
  };
}

const DTYPE_TO_SAFE: Partial<Record<tf.DataType, SafeDtype>> = { float32: 'F32', int32: 'I32', bool: 'BOOL' };

/** Serialise the current values (reads every tensor; call between steps). */
export async function encodeTrainingState(spec: TrainingStateSpec, values: TrainingStateValues): Promise<Uint8Array> {
  if (!Number.isInteger(values.step) || values.step < 0) throw new Error(`encodeTrainingState: step must be an integer >= 0, got ${values.step}`);
  const tensors = new Map<string, SafeTensor>();
  const counters: Record<string, Record<string, number>> = {};
  for (const [component, part] of Object.entries(spec.components)) {
    if (component.includes('/')) throw new Error(`encodeTrainingState: component name '${component}' must not contain '/'`);
    for (const [name, v] of part.tensors) {
      const dtype = DTYPE_TO_SAFE[v.dtype];
      if (!dtype) throw new Error(`encodeTrainingState: ${component}/${name} has unsupported dtype ${v.dtype}`);
      const data = (await v.data()) as Float32Array | Int32Array | Uint8Array;
      tensors.set(`${component}/${name}`, { dtype, shape: [...v.shape], data: bytesOf(data) });
    }
    if (part.counters) counters[component] = part.counters();
  }
  return encodeSafetensors(tensors, {
    format: TRAINING_STATE_FORMAT,
    signature: canonicalJson(spec.signature),
    step: String(values.step),
    rng: JSON.stringify(values.rng),
    counters: JSON.stringify(counters),
    extra: JSON.stringify(values.extra),
  });
}

/**
 * Validate EVERYTHING against `spec` first (format, signature, the exact tensor name set, shapes,
 * dtypes, counters), then assign. A mismatch throws IncompatibleArtifactError listing what
 * differs, and nothing has been modified: never a silent partial load.
 */
export function restoreTrainingState(bytes: Uint8Array, spec: TrainingStateSpec, source = 'checkpoint'): TrainingStateValues {
  const { tensors, metadata } = decodeSafetensors(bytes, source);
  const fail = (msg: string): never => {
    throw new IncompatibleArtifactError(msg, source);
  };
  if (metadata.format !== TRAINING_STATE_FORMAT) fail(`not a densepipe training state (format ${JSON.stringify(metadata.format)}, expected ${TRAINING_STATE_FORMAT})`);
  const parse = (field: string): unknown => {
    try {
      return JSON.parse(metadata[field] ?? '');
    } catch {
      return fail(`metadata field '${field}' is missing or not JSON`);
    }
  };
  const savedSignature = parse('signature') as Record<string, unknown>;
  const signatureDiff = diffSignature(savedSignature, spec.signature);
  if (signatureDiff.length) fail(`checkpoint belongs to another model/method: ${signatureDiff.join('; ')}`);

  const problems: string[] = [];
  const expected = new Map<string, tf.Variable>();
  for (const [component, part] of Object.entries(spec.components)) {
    for (const [name, v] of part.tensors) expected.set(`${component}/${name}`, v);
  }
  const missing = [...expected.keys()].filter((k) => !tensors.has(k));
  const unexpected = [...tensors.keys()].filter((k) => !expected.has(k));
  if (missing.length) problems.push(`missing tensors (${missing.length}): ${preview(missing)}`);
  if (unexpected.length) problems.push(`unexpected tensors (${unexpected.length}): ${preview(unexpected)}`);
  const mismatched: string[] = [];
  for (const [key, v] of expected) {
    const saved = tensors.get(key);
    if (!saved) continue;
    if (saved.shape.join('x') !== v.shape.join('x') || saved.dtype !== DTYPE_TO_SAFE[v.dtype]) {
      mismatched.push(`${key}: saved ${saved.dtype}[${saved.shape}] vs model ${DTYPE_TO_SAFE[v.dtype] ?? v.dtype}[${v.shape}]`);
    }
  }
  if (mismatched.length) problems.push(`shape/dtype mismatches (${mismatched.length}): ${preview(mismatched)}`);
  if (problems.length) fail(problems.join('; '));

  const step = Number(metadata.step);
  if (!Number.isInteger(step) || step < 0) fail(`metadata 'step' is ${JSON.stringify(metadata.step)}, not an integer >= 0`);
  const rng = parse('rng') as Record<string, number>;
  const counters = parse('counters') as Record<string, Record<string, number>>;
  const extra = parse('extra') as Record<string, unknown>;
  for (const [component, part] of Object.entries(spec.components)) {
    if (part.loadCounters && !counters[component]) fail(`counters for component '${component}' are missing`);
  }

  // Build every new value before touching any variable, so a late failure leaves the model intact.
  const newValues = new Map<tf.Variable, tf.Tensor>();
  try {
    for (const [key, v] of expected) {
      const saved = tensors.get(key)!;
      const arr = typedArrayOf(saved);
      newValues.set(v, tf.tensor(arr as Float32Array | Int32Array | Uint8Array, saved.shape, v.dtype));
    }
  } catch (err) {
    for (const t of newValues.values()) t.dispose();
    throw err;
  }
  // Counters first: their validation (queue pointer range) may still refuse the checkpoint.
  try {
    for (const [component, part] of Object.entries(spec.components)) part.loadCounters?.(counters[component]!);
  } catch (err) {
    for (const t of newValues.values()) t.dispose();
    throw err;
  }
  for (const [v, t] of newValues) {
    v.assign(t);
    t.dispose();
  }
  return { step, rng, extra };
}

/** Read only the step/metadata of a state file (for logs and `densepipe status`). */
export function peekTrainingState(bytes: Uint8Array, source = 'checkpoint'): { step: number; signature: Record<string, unknown>; tensorCount: number } {
  const { tensors, metadata } = decodeSafetensors(bytes, source);
  if (metadata.format !== TRAINING_STATE_FORMAT) throw new IncompatibleArtifactError(`not a densepipe training state`, source);
  let signature: Record<string, unknown>;
  try {
    signature = JSON.parse(metadata.signature ?? '');
  } catch {
    throw new IncompatibleArtifactError(`metadata field 'signature' is missing or not JSON`, source);
  }
  return { step: Number(metadata.step), signature, tensorCount: tensors.size };
}

function diffSignature(saved: Record<string, unknown>, current: Record<string, unknown>): string[] {
  const keys = new Set([...Object.keys(saved ?? {}), ...Object.keys(current)]);
  const out: string[] = [];
  for (const k of [...keys].sort()) {
    const a = saved?.[k] === undefined ? undefined : canonicalJson(saved[k]);
    const b = current[k] === undefined ? undefined : canonicalJson(current[k]);
    if (a !== b) out.push(`${k}: checkpoint ${a ?? '(absent)'} vs now ${b ?? '(absent)'}`);
  }
  return out;
}

function preview(items: string[], n = 6): string {
  return items.slice(0, n).join(', ') + (items.length > n ? `, ... (+${items.length - n} more)` : '');
}
