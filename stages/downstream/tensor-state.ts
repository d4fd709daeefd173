/**
 * Named float32 tensors <-> safetensors bytes, for fine-tuning checkpoints (head weights, backbone
 * weights when fine-tuned, optimizer slots). Restoring checks that names and shapes agree, so a
 * checkpoint from another configuration is refused instead of half-loaded.
 */
import { IncompatibleArtifactError } from '../../core/errors.js';
import { tf } from '../../core/tf.js';
import { bytesOf, decodeSafetensors, encodeSafetensors, typedArrayOf, type SafeTensor } from '../engine/safetensors.js';

export function encodeVariables(vars: Map<string, tf.Variable>): Uint8Array {
  const tensors = new Map<string, SafeTensor>();
  for (const [name, v] of vars) {
    // BN's num_batches_tracked is int32; everything else float32.
    const values = v.dtype === 'int32' ? (v.dataSync() as Int32Array) : (v.dataSync() as Float32Array);
    tensors.set(name, { dtype: v.dtype === 'int32' ? 'I32' : 'F32', shape: [...v.shape], data: bytesOf(values) });
  }
  return encodeSafetensors(tensors);
}

export function restoreVariables(vars: Map<string, tf.Variable>, bytes: Uint8Array, source: string): void {
  // A plain Uint8Array copy: engine's typedArrayOf uses .slice(), which on a Node Buffer (what stores
  // return) is a view of the shared pool, not a copy.
  const { tensors } = decodeSafetensors(new Uint8Array(bytes), source);
  for (const [name, v] of vars) {
    const t = tensors.get(name);
    if (!t) throw new IncompatibleArtifactError(`checkpoint has no tensor '${name}'`, source);
    if (t.shape.join('x') !== v.shape.join('x')) throw new IncompatibleArtifactError(`checkpoint tensor '${name}' is [${t.shape}], expected [${v.shape}]`, source);
    const expected = v.dtype === 'int32' ? 'I32' : 'F32';
    if (t.dtype !== expected) throw new IncompatibleArtifactError(`checkpoint tensor '${name}' is ${t.dtype}, expected ${expected}`, source);
    const value = tf.tensor(typedArrayOf(t) as Float32Array | Int32Array, t.shape, v.dtype);
    v.assign(value);
    value.dispose();
  }
}
