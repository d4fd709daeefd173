import * as tf from '@tensorflow/tfjs';
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
