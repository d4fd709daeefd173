import * as tf from '@tensorflow/tfjs';
import { Conv2d, LayerNorm, Linear } from './layers.js';
import { Initializer, ParamStore, type ParamScope } from './params.js';

/**
 * Vision Transformer with timm/MAE names (`patch_embed.proj.weight`, `cls_token`, `pos_embed`,
 * `blocks.{i}.attn.qkv.weight`, `blocks.{i}.mlp.fc1.weight`, `norm.weight`), pre-norm blocks,
 * LayerNorm eps 1e-6, exact (erf) GELU, and MAE's FIXED 2-D sin-cos position embedding
 * (a non-trainable buffer here; MAE keeps it as a Parameter with requires_grad=False).
 * Initialisation as MAE: xavier_uniform for Linear and the patch projection (viewed 2-D),
 * cls_token ~ N(0, 0.02), zero biases.
 */
export interface VitConfig {
  imageSize: number;
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
}

export const VIT_PRESETS = {
  'vit-tiny': { imageSize: 224, patchSize: 16, embedDim: 192, depth: 12, numHeads: 3, mlpRatio: 4 },
  'vit-small': { imageSize: 224, patchSize: 16, embedDim: 384, depth: 12, numHeads: 6, mlpRatio: 4 },
  /** CPU-sized: 64 px images, 8 px patches (64 tokens), 4 blocks. */
  'vit-micro-64': { imageSize: 64, patchSize: 8, embedDim: 96, depth: 4, numHeads: 3, mlpRatio: 4 },
} as const satisfies Record<string, VitConfig>;

export type VitPreset = keyof typeof VIT_PRESETS;

/** Whether an architecture name is one of the ViT presets (the pretraining, supervised and evaluation stages ask). */
export function isVitPreset(arch: string): arch is VitPreset {
  return Object.hasOwn(VIT_PRESETS, arch);
}

/**
 * MAE's get_2d_sincos_pos_embed(embedDim, gridSize, cls_token=True): [1 + g*g, D]. The first
 * D/2 channels encode the column (w) coordinate, the last D/2 the row (h) coordinate, each as
 * [sin(pos * omega), cos(pos * omega)] with omega_k = 1 / 10000^(k / (D/4)).
 */
export function sincosPositionEmbedding2d(embedDim: number, gridSize: number, clsToken = true): Float32Array {
  if (embedDim % 4 !== 0) throw new Error(`sin-cos position embedding needs embedDim divisible by 4, got ${embedDim}`);
  const quarter = embedDim / 4;
  const rows = gridSize * gridSize + (clsToken ? 1 : 0);
  const out = new Float32Array(rows * embedDim);
  let r = clsToken ? 1 : 0; // the cls row stays zero
  for (let i = 0; i < gridSize; i++) {
    for (let j = 0; j < gridSize; j++, r++) {
      const base = r * embedDim;
      for (let k = 0; k < quarter; k++) {
        const omega = 1 / 10000 ** (k / quarter);
        out[base + k] = Math.sin(j * omega);
        out[base + quarter + k] = Math.cos(j * omega);
        out[base + 2 * quarter + k] = Math.sin(i * omega);
        out[base + 3 * quarter + k] = Math.cos(i * omega);
      }
    }
  }
  return out;
}

function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2))));
}

class Attention {
  readonly qkv: Linear;
  readonly proj: Linear;
  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly dim: number,
    readonly heads: number,
  ) {
    this.qkv = new Linear(scope.child('qkv'), init, dim, dim * 3, { init: 'xavier_uniform' });
    this.proj = new Linear(scope.child('proj'), init, dim, dim, { init: 'xavier_uniform' });
  }
  apply(x: tf.Tensor3D): tf.Tensor3D {
    const [b, n] = x.shape;
    const hd = this.dim / this.heads;
    const qkv = tf.transpose(tf.reshape(this.qkv.apply(x), [b, n, 3, this.heads, hd]), [2, 0, 3, 1, 4]); // [3, B, H, N, hd]
    const [q, k, v] = tf.unstack(qkv, 0) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    const attn = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(hd)), -1);
    const out = tf.reshape(tf.transpose(tf.matMul(attn, v), [0, 2, 1, 3]), [b, n, this.dim]);
    return this.proj.apply(out) as tf.Tensor3D;
  }
}

/** A block's token normalisation, [B, N, D] → [B, N, D]: LayerNorm, or SiameseIM's PermuteBN (BatchNorm over tokens). */
export interface TokenNorm {
  apply(x: tf.Tensor3D): tf.Tensor3D;
}
export type TokenNormFactory = (scope: ParamScope, dim: number) => TokenNorm;
const layerNorm: TokenNormFactory = (scope, dim) => {
  const ln = new LayerNorm(scope, dim);
  return { apply: (x) => ln.apply(x) as tf.Tensor3D };
};

/**
 * timm's pre-norm `Block` (qkv bias, exact GELU, no layer scale, no drop path): x + attn(norm1(x)), then
 * x + mlp(norm2(x)). `norm` builds norm1 and norm2 (default LayerNorm eps 1e-6); exported for decoders built
 * of ViT blocks (SiameseIM's projector and predictor).
 */
export class Block {
  readonly norm1: TokenNorm;
  readonly attn: Attention;
  readonly norm2: TokenNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(scope: ParamScope, init: Initializer, c: Pick<VitConfig, 'embedDim' | 'numHeads' | 'mlpRatio'>, norm: TokenNormFactory = layerNorm) {
    this.norm1 = norm(scope.child('norm1'), c.embedDim);
    this.attn = new Attention(scope.child('attn'), init, c.embedDim, c.numHeads);
    this.norm2 = norm(scope.child('norm2'), c.embedDim);
    const hidden = Math.round(c.embedDim * c.mlpRatio);
    this.fc1 = new Linear(scope.child('mlp').child('fc1'), init, c.embedDim, hidden, { init: 'xavier_uniform' });
    this.fc2 = new Linear(scope.child('mlp').child('fc2'), init, hidden, c.embedDim, { init: 'xavier_uniform' });
  }
  apply(x: tf.Tensor3D): tf.Tensor3D {
    const h = tf.add(x, this.attn.apply(this.norm1.apply(x))) as tf.Tensor3D;
    return tf.add(h, this.fc2.apply(gelu(this.fc1.apply(this.norm2.apply(h))))) as tf.Tensor3D;
  }
}

export interface VitOutput {
  /** All tokens after the final norm (before it with `finalNorm: false`): [B, 1 + kept patches, D] (cls first). */
  tokens: tf.Tensor3D;
  cls: tf.Tensor2D;
  /** Patch tokens [B, kept, D]; with no masking reshape to [B, g, g, D] for a dense map. */
  patches: tf.Tensor3D;
}

export class VisionTransformer {
  readonly params: ParamStore;
  readonly gridSize: number;
  readonly numPatches: number;
  private readonly patchProj: Conv2d;
  private readonly blocks: Block[] = [];
  private readonly norm: LayerNorm;

  constructor(
    readonly config: VitConfig,
    seed: number | string = 0,
    params = new ParamStore(),
    prefix = '',
  ) {
    if (config.imageSize % config.patchSize !== 0) throw new Error(`vit: imageSize ${config.imageSize} is not a multiple of patchSize ${config.patchSize}`);
    if (config.embedDim % config.numHeads !== 0) throw new Error(`vit: embedDim ${config.embedDim} is not divisible by numHeads ${config.numHeads}`);
    this.params = params;
    this.gridSize = config.imageSize / config.patchSize;
    this.numPatches = this.gridSize * this.gridSize;
    const init = new Initializer(`vit:${seed}`);
    const root = params.scope(prefix);
    // MAE: xavier_uniform on the projection viewed as [D, 3*p*p]: fan_in = 3p^2, fan_out = D (not D*p^2).
    const p = config.patchSize;
    const bound = Math.sqrt(6 / (3 * p * p + config.embedDim));
    this.patchProj = new Conv2d(root.child('patch_embed').child('proj'), init, { inChannels: 3, outChannels: config.embedDim, kernelSize: p, stride: p, padding: 0, bias: true });
    const projInit = init.uniform([p, p, 3, config.embedDim], bound);
    this.patchProj.weight.assign(projInit);
    projInit.dispose();
    root.add('cls_token', init.truncNormal([1, 1, config.embedDim], 0.02), { layout: 'same', role: 'token' });
    root.add('pos_embed', tf.tensor3d(sincosPositionEmbedding2d(config.embedDim, this.gridSize), [1, this.numPatches + 1, config.embedDim]), { layout: 'same', role: 'buffer' });
    for (let i = 0; i < config.depth; i++) this.blocks.push(new Block(root.child('blocks').child(i), init, config));
    this.norm = new LayerNorm(root.child('norm'), config.embedDim);
    this.prefix = prefix;
  }

  private readonly prefix: string;

  static preset(name: VitPreset, overrides: Partial<VitConfig> = {}, seed: number | string = 0): VisionTransformer {
    const base = VIT_PRESETS[name];
    if (!base) throw new Error(`unknown ViT preset '${String(name)}' (known: ${Object.keys(VIT_PRESETS).join(', ')})`);
    return new VisionTransformer({ ...base, ...overrides }, seed);
  }

  private param(local: string): tf.Variable {
    return this.params.get(this.prefix ? `${this.prefix}.${local}` : local);
  }

  /**
   * x: [B, H, W, 3] NHWC. `keep` [B, K] int32 patch indices (row-major over the patch grid) keeps
   * only those patches after adding position embeddings, as MAE's random masking does.
   * `finalNorm: false` returns the last block's tokens without the final `norm` (SiameseIM's encoders have none).
   */
  apply(x: tf.Tensor4D, opts: { keep?: tf.Tensor2D; finalNorm?: boolean } = {}): VitOutput {
    const [b, h, w] = x.shape;
    if (h !== this.config.imageSize || w !== this.config.imageSize) throw new Error(`ViT built for ${this.config.imageSize}px input, got ${h}x${w}`);
    const d = this.config.embedDim;
    let patches = tf.reshape(this.patchProj.apply(x), [b, this.numPatches, d]) as tf.Tensor3D;
    const pos = this.param('pos_embed');
    patches = tf.add(patches, tf.slice(pos, [0, 1, 0], [1, this.numPatches, d]));
    if (opts.keep) patches = tf.gather(patches, opts.keep, 1, 1) as tf.Tensor3D;
    const cls = tf.add(this.param('cls_token'), tf.slice(pos, [0, 0, 0], [1, 1, d]));
    let tokens = tf.concat([tf.tile(cls, [b, 1, 1]), patches], 1) as tf.Tensor3D;
    for (const block of this.blocks) tokens = block.apply(tokens);
    if (opts.finalNorm ?? true) tokens = this.norm.apply(tokens) as tf.Tensor3D;
    const n = tokens.shape[1];
    return {
      tokens,
      cls: tf.reshape(tf.slice(tokens, [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D,
      patches: tf.slice(tokens, [0, 1, 0], [b, n - 1, d]) as tf.Tensor3D,
    };
  }

  dispose(): void {
    this.params.dispose();
  }
}
