/**
 * Semantic segmentation with an FCN-style head (Long et al. 2015; the "FCN" head of mmseg's
 * self-supervised benchmarks, shrunk for CPU): conv3x3(C -> hidden) + ReLU + conv1x1(hidden -> K),
 * logits bilinearly upsampled to the label resolution, per-pixel cross-entropy that skips the
 * ignore index. `frozen` trains the head on cached backbone features; `finetune` trains the
 * backbone too (BatchNorm in training mode), the protocol of the dense SSL papers' VOC/Cityscapes
 * numbers. On a ViT the features are its patch tokens as a [g, g, D] map (stride = patch size).
 */
import { tf } from '../../core/tf.js';
import { Conv2d } from '../engine/layers.js';
import { Initializer, ParamStore } from '../engine/params.js';
import type { EvalBackbone, Features } from './backbone.js';
import { IGNORE_INDEX } from './metrics/segmentation.js';
import { sgdTrainingOptions, trainLoop, type SgdTrainingOptions } from './training.js';

export interface SemsegOptions extends SgdTrainingOptions {
  mode: 'frozen' | 'finetune';
  hidden: number;
  seed: number;
}

export class FcnHead {
  readonly params = new ParamStore();
  private readonly conv: Conv2d;
  private readonly classifier: Conv2d;
  constructor(inChannels: number, hidden: number, readonly numClasses: number, seed: number) {
    const init = new Initializer(`fcn-head-${seed}`);
    this.conv = new Conv2d(this.params.scope('decode.conv'), init, { inChannels, outChannels: hidden, kernelSize: 3, bias: true, init: 'torch_default' });
    this.classifier = new Conv2d(this.params.scope('decode.cls'), init, { inChannels: hidden, outChannels: numClasses, kernelSize: 1, bias: true, init: 'torch_default' });
  }
  /** Logits at the label resolution `size`. */
  apply(features: tf.Tensor4D, size: number): tf.Tensor4D {
    const logits = this.classifier.apply(tf.relu(this.conv.apply(features)));
    return tf.image.resizeBilinear(logits, [size, size], false);
  }
}

/** Mean cross-entropy over pixels whose label is not the ignore index. */
export function maskedPixelCrossEntropy(logits: tf.Tensor4D, labels: tf.Tensor3D, numClasses: number): tf.Scalar {
  return tf.tidy(() => {
    const valid = tf.notEqual(labels, IGNORE_INDEX);
    const safe = tf.where(valid, labels, tf.zerosLike(labels));
    const perPixel = tf.losses.softmaxCrossEntropy(tf.oneHot(safe.toInt(), numClasses), logits, undefined, undefined, tf.Reduction.NONE);
    const w = valid.toFloat();
    return tf.div(tf.sum(tf.mul(perPixel, w)), tf.maximum(tf.sum(w), 1)) as tf.Scalar;
  });
}

export async function trainSemanticSegmentation(
  model: EvalBackbone,
  train: { pixels: Float32Array[]; labels: Uint8Array[]; features: Features | null },
  size: number,
  numClasses: number,
  o: SemsegOptions,
): Promise<{ head: FcnHead; finalLoss: number; secondsPerEpoch: number[] }> {
  const head = new FcnHead(model.outChannels, o.hidden, numClasses, o.seed);
  const params = o.mode === 'finetune' ? new Map([...model.params.vars, ...[...head.params.vars].map(([k, v]) => [`head.${k}`, v] as const)]) : head.params.vars;
  const f = train.features;
  const result = await trainLoop({
    params,
    numSamples: train.pixels.length,
    ...sgdTrainingOptions(o),
    seed: `semseg-${o.mode}-${o.seed}`,
    loss: (indices) => {
      const labels = tf.tensor3d(concat(indices.map((i) => train.labels[i]!)), [indices.length, size, size], 'int32');
      let feats: tf.Tensor4D;
      if (o.mode === 'frozen' && f) {
        const per = f.h * f.w * f.channels;
        const buf = new Float32Array(indices.length * per);
        indices.forEach((i, j) => buf.set(f.dense.subarray(i * per, (i + 1) * per), j * per));
        feats = tf.tensor4d(buf, [indices.length, f.h, f.w, f.channels]);
      } else {
        const x = tf.tensor4d(concatF(indices.map((i) => train.pixels[i]!)), [indices.length, size, size, 3]);
        feats = model.apply(x, { training: true }).dense;
      }
      return maskedPixelCrossEntropy(head.apply(feats, size), labels, numClasses);
    },
  });
  return { head, finalLoss: result.finalLoss, secondsPerEpoch: result.secondsPerEpoch };
}

/** Label maps predicted for `pixels` (eval-mode backbone), batchSize at a time. */
export function predictSegmentation(model: EvalBackbone, head: FcnHead, pixels: Float32Array[], size: number, batchSize: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let s = 0; s < pixels.length; s += batchSize) {
    const chunk = pixels.slice(s, s + batchSize);
    const pred = tf.tidy(() => {
      const x = tf.tensor4d(concatF(chunk), [chunk.length, size, size, 3]);
      return tf.argMax(head.apply(model.apply(x, { training: false }).dense, size), 3).dataSync() as Int32Array;
    });
    for (let i = 0; i < chunk.length; i++) out.push(Uint8Array.from(pred.subarray(i * size * size, (i + 1) * size * size)));
  }
  return out;
}

function concat(parts: Uint8Array[]): Int32Array {
  const out = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function concatF(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
