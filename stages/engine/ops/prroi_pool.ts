import * as tf from '@tensorflow/tfjs';
import type { RoiBox, SamplingPlan } from './roi_align.js';

/**
 * Precise RoI Pooling (Jiang et al., "Acquisition of Localization Confidence for Accurate Object Detection",
 * ECCV 2018) on NHWC features: each output bin is the exact average of the bilinear interpolant of the feature map
 * over the bin,
 *
 *   out[k, i, j, c] = 1/|bin| ∫∫_bin f_c(y, x) dy dx,   f_c(y, x) = Σ_{h, w} X[b_k, h, w, c] · tri(y − h) · tri(x − w),
 *
 * tri(u) = max(0, 1 − |u|), pixel (h, w) sitting at the integer point (h, w) (no half-pixel offset) and zero outside
 * the map. This is what the CUDA kernels of PreciseRoIPooling compute (as vendored in Tete-Xiao/ReSim@b6a36ee
 * `lib/prroi_pool/src/prroi_pooling_gpu_impl.cu`: PrRoIPoolingForward sums PrRoIPoolingMatCalculation over the unit
 * cells a bin touches, then divides by the bin area; PrRoIPoolingBackward spreads top_diff / area with the same
 * coefficients). Box corners are scaled by `spatialScale`; a bin of zero area outputs 0.
 *
 * The interpolant is separable, so a pixel's coefficient is a product of two 1-D integrals,
 *   a_h = ∫_{y0}^{y1} tri(y − h) dy = Φ(y1 − h) − Φ(y0 − h),  Φ the antiderivative of tri (0 below −1, 1 above 1),
 * which is the same number the kernel accumulates cell by cell. As in `roi_align.ts`, the coefficients depend only on
 * the boxes: they are computed in JS (float64) and the features are combined by gather + unsortedSegmentSum, so the
 * gradient with respect to the features is the kernel's backward. Boxes are constants (no coordinate gradient,
 * PrRoIPoolingCoorBackward): every method here detaches them.
 */
export interface PrRoiPoolOptions {
  /** Output bins [height, width] (or one number for both). */
  outputSize: number | [number, number];
  /** Feature-map pixels per box unit (1/stride); default 1. */
  spatialScale?: number;
}

/** Φ(u) = ∫_{−∞}^{u} max(0, 1 − |t|) dt. */
function triIntegral(u: number): number {
  if (u <= -1) return 0;
  if (u <= 0) return 0.5 * (u + 1) * (u + 1);
  if (u < 1) return 1 - 0.5 * (1 - u) * (1 - u);
  return 1;
}

/** The non-zero 1-D coefficients a_h = ∫_{start}^{end} tri(y − h) dy for pixels h in [0, size). */
export function integralCoefficients(start: number, end: number, size: number): { index: number[]; weight: number[] } {
  const index: number[] = [];
  const weight: number[] = [];
  for (let h = Math.max(0, Math.floor(start)); h <= Math.min(size - 1, Math.ceil(end)); h++) {
    const a = triIntegral(end - h) - triIntegral(start - h);
    if (a !== 0) {
      index.push(h);
      weight.push(a);
    }
  }
  return { index, weight };
}

export function prroiPoolPlan(boxes: readonly RoiBox[], featureShape: [number, number, number, number], o: PrRoiPoolOptions): SamplingPlan {
  const [batch, height, width] = featureShape;
  const [ph, pw] = typeof o.outputSize === 'number' ? [o.outputSize, o.outputSize] : o.outputSize;
  if (!(ph >= 1 && pw >= 1 && Number.isInteger(ph) && Number.isInteger(pw))) throw new Error(`prroiPool: outputSize must be positive integers, got ${String(o.outputSize)}`);
  const scale = o.spatialScale ?? 1;
  const indices: number[] = [];
  const weights: number[] = [];
  const cells: number[] = [];
  boxes.forEach((box, k) => {
    if (box.length !== 5) throw new Error(`prroiPool: box ${k} must be [batchIndex, x1, y1, x2, y2], got ${box.length} numbers`);
    const b = box[0];
    if (!Number.isInteger(b) || b < 0 || b >= batch) throw new Error(`prroiPool: box ${k} has batch index ${b}, features have batch ${batch}`);
    const [x0, y0] = [box[1] * scale, box[2] * scale];
    const binH = Math.max(box[4] * scale - y0, 0) / ph;
    const binW = Math.max(box[3] * scale - x0, 0) / pw;
    const area = binH * binW;
    if (area === 0) return; // the kernel writes 0
    for (let i = 0; i < ph; i++) {
      const ys = integralCoefficients(y0 + binH * i, y0 + binH * (i + 1), height);
      for (let j = 0; j < pw; j++) {
        const xs = integralCoefficients(x0 + binW * j, x0 + binW * (j + 1), width);
        const cell = (k * ph + i) * pw + j;
        ys.index.forEach((h, a) => {
          xs.index.forEach((w, c) => {
            indices.push((b * height + h) * width + w);
            weights.push((ys.weight[a]! * xs.weight[c]!) / area);
            cells.push(cell);
          });
        });
      }
    }
  });
  return { indices: Int32Array.from(indices), weights: Float32Array.from(weights), cells: Int32Array.from(cells), numCells: boxes.length * ph * pw };
}

/** features [B, H, W, C] → [K, outH, outW, C]; `boxes` as rows [batchIndex, x1, y1, x2, y2] in box units. */
export function prroiPool(features: tf.Tensor4D, boxes: readonly RoiBox[], o: PrRoiPoolOptions): tf.Tensor4D {
  const [ph, pw] = typeof o.outputSize === 'number' ? [o.outputSize, o.outputSize] : o.outputSize;
  const [b, h, w, c] = features.shape;
  const plan = prroiPoolPlan(boxes, [b, h, w, c], o);
  return tf.tidy(() => {
    if (plan.indices.length === 0) return tf.zeros([boxes.length, ph, pw, c]) as tf.Tensor4D;
    const flat = tf.reshape(features, [b * h * w, c]);
    const gathered = tf.gather(flat, tf.tensor1d(plan.indices, 'int32'));
    const weighted = tf.mul(gathered, tf.tensor2d(plan.weights, [plan.weights.length, 1]));
    const summed = tf.unsortedSegmentSum(weighted, tf.tensor1d(plan.cells, 'int32'), plan.numCells);
    return tf.reshape(summed, [boxes.length, ph, pw, c]) as tf.Tensor4D;
  });
}
