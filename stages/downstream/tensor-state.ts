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
  for (const [name, v] of vars) tensors.set(name, { dtype: 'F32', shape: [...v.shape], data: bytesOf(v.dataSync() as Float32Array) });
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
    const values = typedArrayOf(t) as Float32Array;
    const value = tf.tensor(values, t.shape, 'float32');
    v.assign(value);
    value.dispose();
  }
}
