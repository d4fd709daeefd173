/**
 * The backbone under evaluation, random-init (the baseline) or loaded from a pretraining stage's
 * safetensors file (PyTorch layouts: OIHW convs, [out, in] linears), and frozen feature extraction.
 *
 * Two families share one interface, `EvalBackbone`, so every task runs on either:
 *   ResNet (torchvision names)  pooled = global average of C5, dense = C5, stages = C2..C5 (the
 *                               engine's ResNet satisfies the interface as it is);
 *   ViT    (timm names)         pooled = the class token (or the mean of the patch tokens,
 *                               `evaluation.backbone.pooling`), dense = the patch tokens as a
 *                               [B, g, g, D] map (stride = patch size), stages = [dense]: the
 *                               detector builds its levels from that one map (ViTDet's simple
 *                               feature pyramid, detection/simple-pyramid.ts).
 * A ViT is built at the evaluation's image size; a file whose position embedding was made for
 * another grid has its patch rows resampled bicubically, as MAE's `interpolate_pos_embed`.
 */
import { IncompatibleArtifactError } from '../../core/errors.js';
import type { ArtifactStore } from '../../core/store/index.js';
import { tf } from '../../core/tf.js';
import type { ForwardOptions } from '../engine/layers.js';
import type { ParamStore } from '../engine/params.js';
import { RESNET_PRESETS, ResNet, type ResNetPreset } from '../engine/resnet.js';
import { decodeSafetensors, typedArrayOf } from '../engine/safetensors.js';
import { isVitPreset, VIT_PRESETS, VisionTransformer } from '../engine/vit.js';

/**
 * How a ViT's image-level feature is read. 'cls': the class token after the final norm, what MoCo v3
 * (Chen et al. 2021, §4: "the [CLS] token") and MAE (He et al. 2022, §A.2 linear probing, "the class
 * token ... for training the classifier in linear probing") probe; 'mean': the mean of the patch
 * tokens (MAE's global pooling, its fine-tuning default), here after the final norm.
 */
export const VIT_POOLINGS = ['cls', 'mean'] as const;
export type VitPooling = (typeof VIT_POOLINGS)[number];

export interface BackboneOutput {
  /** [B, C] image-level feature. */
  pooled: tf.Tensor2D;
  /** [B, h, w, C] last feature map. */
  dense: tf.Tensor4D;
  /** The maps a detector may use, finest first (ResNet C2..C5; ViT: the one patch-token map). */
  stages: tf.Tensor4D[];
}

/** What the evaluation tasks need of a backbone. */
export interface EvalBackbone {
  /** 'vit' for a Vision Transformer; absent for a ResNet (the engine's ResNet is an EvalBackbone as it is). */
  readonly family?: 'vit';
  readonly params: ParamStore;
  /** Channels of `pooled` and `dense`. */
  readonly outChannels: number;
  /** Channels of each map in `stages`. */
  readonly stageChannels: number[];
  apply(x: tf.Tensor4D, opts: ForwardOptions): BackboneOutput;
  dispose(): void;
}

/** The engine's ViT as an evaluation backbone (no masking; `training` changes nothing: no dropout, no BN). */
export class VitBackbone implements EvalBackbone {
  readonly family = 'vit' as const;
  readonly params: ParamStore;
  readonly outChannels: number;
  readonly stageChannels: number[];
  /** Stride of `dense` w.r.t. the input. */
  readonly patchSize: number;
  constructor(
    readonly vit: VisionTransformer,
    readonly pooling: VitPooling = 'cls',
  ) {
    this.params = vit.params;
    this.outChannels = vit.config.embedDim;
    this.stageChannels = [vit.config.embedDim];
    this.patchSize = vit.config.patchSize;
  }
  apply(x: tf.Tensor4D, _opts?: ForwardOptions): BackboneOutput {
    const out = this.vit.apply(x);
    const g = this.vit.gridSize;
    const dense = tf.reshape(out.patches, [x.shape[0], g, g, this.outChannels]) as tf.Tensor4D;
    const pooled = this.pooling === 'cls' ? out.cls : (tf.mean(out.patches, 1) as tf.Tensor2D);
    return { pooled, dense, stages: [dense] };
  }
  dispose(): void {
    this.vit.dispose();
  }
}

const knownArchs = () => [...Object.keys(RESNET_PRESETS), ...Object.keys(VIT_PRESETS)].join(', ');

/** A ResNet preset at random init (seeded); what the evaluation's ResNet path always built. */
export function buildBackbone(arch: string, seed: number): ResNet {
  if (!Object.hasOwn(RESNET_PRESETS, arch)) {
    throw new IncompatibleArtifactError(`unknown backbone architecture '${arch}' (known: ${knownArchs()})`, 'evaluation.backbone.arch');
  }
  return ResNet.preset(arch as ResNetPreset, {}, `downstream-${seed}`);
}

export interface EvalBackboneOptions {
  /** The evaluation's input size (a ViT is built for it: a multiple of its patch size). */
  imageSize: number;
  /** ViT only; default 'cls'. */
  pooling?: VitPooling;
}

/** Either family's preset at random init (seeded): the random-init baseline, and the model a file is loaded into. */
export function buildEvalBackbone(arch: string, seed: number, o: EvalBackboneOptions): EvalBackbone {
  if (!isVitPreset(arch)) return buildBackbone(arch, seed);
  const preset = VIT_PRESETS[arch];
  if (o.imageSize % preset.patchSize !== 0) {
    throw new IncompatibleArtifactError(`${arch} has ${preset.patchSize} px patches: evaluation.imageSize ${o.imageSize} is not a multiple of it`, 'evaluation.imageSize');
  }
  return new VitBackbone(new VisionTransformer({ ...preset, imageSize: o.imageSize }, `downstream-${seed}`), o.pooling ?? 'cls');
}

/**
 * Bicubic resampling of a square grid of vectors, [gIn * gIn, D] -> [gOut * gOut, D], as
 * torch.nn.functional.interpolate(mode='bicubic', align_corners=False) (Keys' cubic with
 * A = -0.75, source = (dst + 0.5) * in / out - 0.5, border indices clamped), which MAE's
 * util/pos_embed.py interpolate_pos_embed and timm's resample_abs_pos_embed apply to the patch
 * rows of a position embedding.
 */
export function resampleGridBicubic(values: Float32Array, gIn: number, gOut: number, dim: number): Float32Array {
  const A = -0.75;
  const near = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const far = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  const taps = (o: number) => {
    const real = ((o + 0.5) * gIn) / gOut - 0.5;
    const i0 = Math.floor(real);
    const t = real - i0;
    const w = [far(t + 1), near(t), near(1 - t), far(2 - t)];
    const idx = [-1, 0, 1, 2].map((d) => Math.min(gIn - 1, Math.max(0, i0 + d)));
    return { w, idx };
  };
  const along = Array.from({ length: gOut }, (_, o) => taps(o));
  // Along x first (rows of the input), then along y, each in float64.
  const rows = new Float64Array(gIn * gOut * dim);
  for (let y = 0; y < gIn; y++) {
    for (let x = 0; x < gOut; x++) {
      const { w, idx } = along[x]!;
      for (let c = 0; c < dim; c++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += w[k]! * values[(y * gIn + idx[k]!) * dim + c]!;
        rows[(y * gOut + x) * dim + c] = s;
      }
    }
  }
  const out = new Float32Array(gOut * gOut * dim);
  for (let y = 0; y < gOut; y++) {
    const { w, idx } = along[y]!;
    for (let x = 0; x < gOut; x++) {
      for (let c = 0; c < dim; c++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += w[k]! * rows[(idx[k]! * gOut + x) * dim + c]!;
        out[(y * gOut + x) * dim + c] = s;
      }
    }
  }
  return out;
}

/** A [1, 1 + G*G, D] position embedding (class row first) brought to [1, 1 + g*g, D]; null when the shapes are not both of that form. */
function resamplePosEmbed(values: Float32Array, fileShape: number[], modelShape: number[]): Float32Array | null {
  const [b, n, d] = fileShape;
  const [mb, mn, md] = modelShape;
  if (fileShape.length !== 3 || modelShape.length !== 3 || b !== 1 || mb !== 1 || d !== md) return null;
  const gIn = Math.round(Math.sqrt(n! - 1));
  const gOut = Math.round(Math.sqrt(mn! - 1));
  if (gIn * gIn !== n! - 1 || gOut * gOut !== mn! - 1 || gIn < 1) return null;
  const out = new Float32Array(mn! * d!);
  out.set(values.subarray(0, d!), 0);
  out.set(resampleGridBicubic(values.subarray(d!), gIn, gOut, d!), d!);
  return out;
}

/**
 * Copy every tensor of the file into the model by state_dict name. Extra tensors (projection
 * heads, `fc.*`) are ignored; a missing or mis-shaped backbone tensor is an error naming it. A
 * ViT's `pos_embed` made for another grid is resampled (see resampleGridBicubic).
 */
export function loadStateDict(model: { params: ParamStore }, bytes: Uint8Array, source: string): { loaded: number; ignored: string[]; resampled: string[] } {
  // Plain Uint8Array copy: typedArrayOf's .slice() does not copy a Node Buffer (see tensor-state.ts).
  const { tensors } = decodeSafetensors(new Uint8Array(bytes), source);
  let loaded = 0;
  const resampled: string[] = [];
  for (const [name, variable] of model.params.vars) {
    const t = tensors.get(name) ?? tensors.get(`backbone.${name}`) ?? tensors.get(`encoder_q.${name}`);
    if (!t) throw new IncompatibleArtifactError(`no tensor '${name}' (the backbone needs all ${model.params.vars.size} of its tensors)`, source);
    const layout = model.params.info.get(name)?.layout ?? 'same';
    let values = typedArrayOf(t);
    let shape = t.shape;
    if (name.endsWith('pos_embed') && values instanceof Float32Array && shape.join('x') !== variable.shape.join('x')) {
      const r = resamplePosEmbed(values, shape, variable.shape);
      if (r) {
        values = r;
        shape = variable.shape;
        resampled.push(`${name} [${t.shape}] -> [${variable.shape}]`);
      }
    }
    const value = tf.tidy(() => {
      let raw: tf.Tensor;
      if (variable.dtype === 'int32') {
        // BN's num_batches_tracked: int64 in PyTorch files, int32 in tfjs.
        if (values instanceof Float32Array || values instanceof Float64Array) throw new IncompatibleArtifactError(`tensor '${name}' is ${t.dtype}, expected an integer`, source);
        raw = tf.tensor(Int32Array.from(values as ArrayLike<number | bigint>, Number), shape, 'int32');
      } else {
        if (!(values instanceof Float32Array)) throw new IncompatibleArtifactError(`tensor '${name}' is ${t.dtype}, expected F32`, source);
        raw = tf.tensor(values, shape, 'float32');
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
  return { loaded, ignored, resampled };
}

export async function loadBackbone(
  store: ArtifactStore,
  arch: string,
  seed: number,
  backboneKey: string | null,
  options: EvalBackboneOptions,
): Promise<{ model: EvalBackbone; ignored: string[]; resampled: string[] }> {
  const model = buildEvalBackbone(arch, seed, options);
  if (!backboneKey) return { model, ignored: [], resampled: [] };
  try {
    const { ignored, resampled } = loadStateDict(model, await store.get(backboneKey), store.url(backboneKey));
    return { model, ignored, resampled };
  } catch (err) {
    model.dispose();
    throw err;
  }
}

export interface Features {
  /** N x C pooled features (ResNet: global average of C5; ViT: class token or mean patch token). */
  pooled: Float32Array;
  /** N x h x w x C last-map features. */
  dense: Float32Array;
  n: number;
  channels: number;
  h: number;
  w: number;
}

/** Frozen forward pass (BN in eval mode) over samples, `batchSize` at a time. */
export function extractFeatures(model: EvalBackbone, pixels: Float32Array[], size: number, batchSize: number): Features {
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
