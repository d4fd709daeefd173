import * as tf from '@tensorflow/tfjs';
import { IncompatibleArtifactError } from '../../core/errors.js';
import type { ParamStore } from './params.js';
import { bytesOf, encodeSafetensors, type SafeTensor } from './safetensors.js';

export interface ExportOptions {
  /** Only tensors whose name starts with this prefix, with the prefix removed (e.g. 'encoder_q.'). */
  stripPrefix?: string;
  /** Drop tensors by name after prefix stripping (e.g. the `fc.` head of a pretraining model). */
  exclude?: (name: string) => boolean;
  /** String metadata stored in the file's `__metadata__` (method, step, source run). */
  metadata?: Record<string, string>;
}

/**
 * Backbone weights as a standard safetensors file with PyTorch state_dict names and layouts:
 * conv kernels HWIO -> OIHW, linear weights [in, out] -> [out, in], BN `num_batches_tracked`
 * as int64. `torchvision.models.resnet18().load_state_dict(safetensors.torch.load_file(p))`
 * accepts it as is for a ResNet-18 built by this engine.
 */
export async function exportStateDict(store: ParamStore, options: ExportOptions = {}): Promise<Uint8Array> {
  const tensors = new Map<string, SafeTensor>();
  const prefix = options.stripPrefix ?? '';
  for (const [fullName, v] of store.vars) {
    if (!fullName.startsWith(prefix)) continue;
    const name = fullName.slice(prefix.length);
    if (options.exclude?.(name)) continue;
    const info = store.info.get(fullName)!;
    const converted = tf.tidy(() => {
      if (info.layout === 'hwio') return tf.transpose(v, [3, 2, 0, 1]);
      if (info.layout === 'io') return tf.transpose(v, [1, 0]);
      return tf.clone(v);
    });
    const data = await converted.data();
    converted.dispose();
    if (name.endsWith('num_batches_tracked')) {
      tensors.set(name, { dtype: 'I64', shape: [...converted.shape], data: bytesOf(BigInt64Array.from(data as Int32Array, (x) => BigInt(x))) });
    } else if (v.dtype === 'float32') {
      tensors.set(name, { dtype: 'F32', shape: [...converted.shape], data: bytesOf(data as Float32Array) });
    } else if (v.dtype === 'int32') {
      tensors.set(name, { dtype: 'I32', shape: [...converted.shape], data: bytesOf(data as Int32Array) });
    } else {
      throw new Error(`exportStateDict: '${fullName}' has unsupported dtype ${v.dtype}`);
    }
  }
  if (tensors.size === 0) throw new Error(`exportStateDict: no tensors under prefix '${prefix}'`);
  return encodeSafetensors(tensors, { format: 'pt', ...(options.metadata ?? {}) });
}

/** A tensor in PyTorch layout, as read from a state_dict (safetensors file or JSON fixture). */
export interface TorchTensor {
  shape: number[];
  values: ArrayLike<number>;
}

/**
 * Load PyTorch-layout weights into a ParamStore (OIHW -> HWIO, [out, in] -> [in, out]).
 * Strict like `load_state_dict(strict=True)`: the name sets must match and every shape must
 * agree, otherwise nothing is loaded and the error lists the differences.
 * `skip` names tensors of the store to leave untouched (e.g. a fixed `pos_embed`).
 */
export function importStateDict(store: ParamStore, tensors: Map<string, TorchTensor>, options: { skip?: (name: string) => boolean; source?: string } = {}): void {
  const source = options.source ?? 'state_dict';
  const wanted = [...store.vars.keys()].filter((k) => !options.skip?.(k));
  const missing = wanted.filter((k) => !tensors.has(k));
  const unexpected = [...tensors.keys()].filter((k) => !store.vars.has(k) && !options.skip?.(k));
  const problems: string[] = [];
  if (missing.length) problems.push(`missing: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`);
  if (unexpected.length) problems.push(`unexpected: ${unexpected.slice(0, 8).join(', ')}${unexpected.length > 8 ? ', ...' : ''}`);
  const converted = new Map<string, tf.Tensor>();
  for (const name of wanted) {
    const t = tensors.get(name);
    if (!t) continue;
    const v = store.get(name);
    const layout = store.info.get(name)!.layout;
    const torchShape = layout === 'hwio' ? [v.shape[3], v.shape[2], v.shape[0], v.shape[1]] : layout === 'io' ? [v.shape[1], v.shape[0]] : v.shape;
    if (t.shape.join('x') !== torchShape.join('x')) {
      problems.push(`${name}: file [${t.shape}] vs model [${torchShape}]`);
      continue;
    }
    const values = v.dtype === 'int32' ? Int32Array.from(t.values as ArrayLike<number>, Number) : Float32Array.from(t.values);
    converted.set(
      name,
      tf.tidy(() => {
        const raw = tf.tensor(values, t.shape, v.dtype);
        if (layout === 'hwio') return tf.transpose(raw, [2, 3, 1, 0]);
        if (layout === 'io') return tf.transpose(raw, [1, 0]);
        return raw;
      }),
    );
  }
  if (problems.length) {
    tf.dispose([...converted.values()]);
    throw new IncompatibleArtifactError(`state_dict does not fit the model: ${problems.join('; ')}`, source);
  }
  for (const [name, value] of converted) {
    store.get(name).assign(value);
    value.dispose();
  }
}
