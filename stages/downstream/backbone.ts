/**
 * The backbone under evaluation: a torchvision-named ResNet from stages/engine, random-init (the
 * baseline) or loaded from a pretraining stage's safetensors file (PyTorch layouts: OIHW convs,
 * [out, in] linears), and frozen feature extraction in eval mode.
 */
import { IncompatibleArtifactError } from '../../core/errors.js';
import type { ArtifactStore } from '../../core/store/index.js';
import { tf } from '../../core/tf.js';
import { RESNET_PRESETS, ResNet, type ResNetPreset } from '../engine/resnet.js';
import { decodeSafetensors, typedArrayOf } from '../engine/safetensors.js';

export function buildBackbone(arch: string, seed: number): ResNet {
  if (!(arch in RESNET_PRESETS)) {
    throw new IncompatibleArtifactError(`unknown backbone architecture '${arch}' (known: ${Object.keys(RESNET_PRESETS).join(', ')})`, 'evaluation.backbone.arch');
  }
  return ResNet.preset(arch as ResNetPreset, {}, `downstream-${seed}`);
}

/**
 * Copy every tensor of the file into the model by state_dict name. Extra tensors (projection
 * heads, `fc.*`) are ignored; a missing or mis-shaped backbone tensor is an error naming it.
 */
export function loadStateDict(model: ResNet, bytes: Uint8Array, source: string): { loaded: number; ignored: string[] } {
  // Plain Uint8Array copy: typedArrayOf's .slice() does not copy a Node Buffer (see tensor-state.ts).
  const { tensors } = decodeSafetensors(new Uint8Array(bytes), source);
  let loaded = 0;
  for (const [name, variable] of model.params.vars) {
    const t = tensors.get(name) ?? tensors.get(`backbone.${name}`) ?? tensors.get(`encoder_q.${name}`);
    if (!t) throw new IncompatibleArtifactError(`no tensor '${name}' (the backbone needs all ${model.params.vars.size} of its tensors)`, source);
    const layout = model.params.info.get(name)?.layout ?? 'same';
    const values = typedArrayOf(t);
    const value = tf.tidy(() => {
      let raw: tf.Tensor;
      if (variable.dtype === 'int32') {
        // BN's num_batches_tracked: int64 in PyTorch files, int32 in tfjs.
        if (values instanceof Float32Array || values instanceof Float64Array) throw new IncompatibleArtifactError(`tensor '${name}' is ${t.dtype}, expected an integer`, source);
        raw = tf.tensor(Int32Array.from(values as ArrayLike<number | bigint>, Number), t.shape, 'int32');
      } else {
        if (!(values instanceof Float32Array)) throw new IncompatibleArtifactError(`tensor '${name}' is ${t.dtype}, expected F32`, source);
        raw = tf.tensor(values, t.shape, 'float32');
      }
      if (layout === 'hwio') return raw.transpose([2, 3, 1, 0]); // OIHW -> HWIO
      if (layout === 'io') return raw.transpose([1, 0]); // [out, in] -> [in, out]
      return raw;
    });
    if (value.shape.join('x') !== variable.shape.join('x')) {
      value.dispose();
      throw new IncompatibleArtifactError(`tensor '${name}' has shape [${t.shape}], the model expects [${variable.shape}] in PyTorch layout`, source);
    }
    variable.assign(value);
    value.dispose();
    loaded++;
  }
  const known = new Set([...model.params.vars.keys()]);
  const ignored = [...tensors.keys()].filter((k) => !known.has(k) && !known.has(k.replace(/^(backbone|encoder_q)\./, '')));
  return { loaded, ignored };
}

export async function loadBackbone(store: ArtifactStore, arch: string, seed: number, backboneKey: string | null): Promise<{ model: ResNet; ignored: string[] }> {
  const model = buildBackbone(arch, seed);
  if (!backboneKey) return { model, ignored: [] };
  const { ignored } = loadStateDict(model, await store.get(backboneKey), store.url(backboneKey));
  return { model, ignored };
}

export interface Features {
  /** N x C global-average-pooled features. */
  pooled: Float32Array;
  /** N x h x w x C last-stage features. */
  dense: Float32Array;
  n: number;
  channels: number;
  h: number;
  w: number;
}

/** Frozen forward pass (BN in eval mode) over samples, `batchSize` at a time. */
export function extractFeatures(model: ResNet, pixels: Float32Array[], size: number, batchSize: number): Features {
  const n = pixels.length;
  const C = model.outChannels;
  let h = 0;
  let w = 0;
  let pooled = new Float32Array(0);
  let dense = new Float32Array(0);
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const [p, d] = tf.tidy(() => {
      const batch = new Float32Array((end - start) * size * size * 3);
      for (let i = start; i < end; i++) batch.set(pixels[i]!, (i - start) * size * size * 3);
      const out = model.apply(tf.tensor4d(batch, [end - start, size, size, 3]), { training: false });
      return [out.pooled.dataSync() as Float32Array, out.dense] as const;
    });
    if (start === 0) {
      h = d.shape[1];
      w = d.shape[2];
      pooled = new Float32Array(n * C);
      dense = new Float32Array(n * h * w * C);
    }
    pooled.set(p, start * C);
    dense.set(d.dataSync() as Float32Array, start * h * w * C);
    d.dispose();
  }
  return { pooled, dense, n, channels: C, h, w };
}
