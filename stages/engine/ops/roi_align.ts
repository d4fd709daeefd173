import * as tf from '@tensorflow/tfjs';

/**
 * torchvision.ops.roi_align on NHWC features.
 *
 * Semantics follow torchvision's CPU kernel (roi_align_kernel.cpp):
 * - box (x1, y1, x2, y2) is scaled by `spatialScale`; with `aligned` the corners are shifted by
 *   -0.5 (pixel centres); without it the RoI size is clamped to at least 1x1.
 * - each output bin averages a grid of sampling points; `samplingRatio > 0` fixes the grid to
 *   ratio x ratio, otherwise (0 or -1) it is adaptive: ceil(roi_size / output_size) per axis.
 * - a sampling point outside [-1, size] contributes 0 but still counts in the average; inside,
 *   coordinates below 0 are clamped to 0 and bilinear weights use the clamped cell.
 *
 * Implementation: the sampling plan (which feature pixels, with which weights, feed which output
 * cell) depends only on the boxes, so it is computed in JS, and the features are combined with
 * gather + unsortedSegmentSum. Both ops have gradients, so d(output)/d(features) matches
 * torchvision's backward; boxes are treated as constants (as every method here uses them).
 */
export interface RoiAlignOptions {
  /** Output bins [height, width] (or one number for both). */
  outputSize: number | [number, number];
  /** Feature-map pixels per box unit (1/stride); default 1. */
  spatialScale?: number;
  /** Sampling points per bin and axis; <= 0 means adaptive. Default -1 (torchvision's default). */
  samplingRatio?: number;
  /** Half-pixel-corrected coordinates (torchvision `aligned=True`, Detectron2 ROIAlignV2). Default false. */
  aligned?: boolean;
}

/** One RoI: [batchIndex, x1, y1, x2, y2], as torchvision's Tensor[K, 5] rows. */
export type RoiBox = [number, number, number, number, number];

export interface SamplingPlan {
  /** Row of the [B*H*W, C] feature matrix per entry. */
  indices: Int32Array;
  weights: Float32Array;
  /** Output cell (k * ph * pw + y * pw + x) per entry. */
  cells: Int32Array;
  numCells: number;
}

export function roiAlignPlan(boxes: RoiBox[], featureShape: [number, number, number, number], o: RoiAlignOptions): SamplingPlan {
  const [batch, height, width] = featureShape;
  const [ph, pw] = typeof o.outputSize === 'number' ? [o.outputSize, o.outputSize] : o.outputSize;
  if (!(ph >= 1 && pw >= 1 && Number.isInteger(ph) && Number.isInteger(pw))) throw new Error(`roiAlign: outputSize must be positive integers, got ${String(o.outputSize)}`);
  const scale = o.spatialScale ?? 1;
  const ratio = o.samplingRatio ?? -1;
  const offset = o.aligned ? 0.5 : 0;
  const indices: number[] = [];
  const weights: number[] = [];
  const cells: number[] = [];
  boxes.forEach((box, k) => {
    if (box.length !== 5) throw new Error(`roiAlign: box ${k} must be [batchIndex, x1, y1, x2, y2], got ${box.length} numbers`);
    const b = box[0];
    if (!Number.isInteger(b) || b < 0 || b >= batch) throw new Error(`roiAlign: box ${k} has batch index ${b}, features have batch ${batch}`);
    const startW = box[1] * scale - offset;
    const startH = box[2] * scale - offset;
    let roiW = box[3] * scale - offset - startW;
    let roiH = box[4] * scale - offset - startH;
    if (!o.aligned) {
      roiW = Math.max(roiW, 1);
      roiH = Math.max(roiH, 1);
    }
    const binH = roiH / ph;
    const binW = roiW / pw;
    const gridH = ratio > 0 ? ratio : Math.ceil(roiH / ph);
    const gridW = ratio > 0 ? ratio : Math.ceil(roiW / pw);
    const count = Math.max(gridH * gridW, 1);
    const base = b * height * width;
    for (let py = 0; py < ph; py++) {
      for (let px = 0; px < pw; px++) {
        const cell = (k * ph + py) * pw + px;
        for (let iy = 0; iy < gridH; iy++) {
          const y = startH + py * binH + ((iy + 0.5) * binH) / gridH;
          for (let ix = 0; ix < gridW; ix++) {
            const x = startW + px * binW + ((ix + 0.5) * binW) / gridW;
            addBilinear(y, x, height, width, 1 / count, (row, w) => {
              indices.push(base + row);
              weights.push(w);
              cells.push(cell);
            });
          }
        }
      }
    }
  });
  return { indices: Int32Array.from(indices), weights: Float32Array.from(weights), cells: Int32Array.from(cells), numCells: boxes.length * ph * pw };
}

/** torchvision's bilinear_interpolate, emitting (row, weight) for the non-zero corners. */
function addBilinear(yIn: number, xIn: number, height: number, width: number, scale: number, emit: (row: number, w: number) => void): void {
  if (yIn < -1 || yIn > height || xIn < -1 || xIn > width) return;
  let y = yIn <= 0 ? 0 : yIn;
  let x = xIn <= 0 ? 0 : xIn;
  let yLow = Math.floor(y);
  let xLow = Math.floor(x);
  let yHigh: number;
  let xHigh: number;
  if (yLow >= height - 1) {
    yHigh = yLow = height - 1;
    y = yLow;
  } else yHigh = yLow + 1;
  if (xLow >= width - 1) {
    xHigh = xLow = width - 1;
    x = xLow;
  } else xHigh = xLow + 1;
  const ly = y - yLow;
  const lx = x - xLow;
  const hy = 1 - ly;
  const hx = 1 - lx;
  const corners: Array<[number, number]> = [
    [yLow * width + xLow, hy * hx],
    [yLow * width + xHigh, hy * lx],
    [yHigh * width + xLow, ly * hx],
    [yHigh * width + xHigh, ly * lx],
  ];
  for (const [row, w] of corners) if (w !== 0) emit(row, w * scale);
}

/**
 * features [B, H, W, C] -> [K, outH, outW, C]. `boxes` as rows [batchIndex, x1, y1, x2, y2]
 * (a [K, 5] tensor is read back to JS).
 */
export function roiAlign(features: tf.Tensor4D, boxes: RoiBox[] | tf.Tensor2D, o: RoiAlignOptions): tf.Tensor4D {
  const rows = Array.isArray(boxes) ? boxes : (boxes.arraySync() as RoiBox[]);
  const [ph, pw] = typeof o.outputSize === 'number' ? [o.outputSize, o.outputSize] : o.outputSize;
  const [b, h, w, c] = features.shape;
  const plan = roiAlignPlan(rows, [b, h, w, c], o);
  return tf.tidy(() => {
    if (plan.indices.length === 0) return tf.zeros([rows.length, ph, pw, c]) as tf.Tensor4D;
    const flat = tf.reshape(features, [b * h * w, c]);
    const gathered = tf.gather(flat, tf.tensor1d(plan.indices, 'int32'));
    const weighted = tf.mul(gathered, tf.tensor2d(plan.weights, [plan.weights.length, 1]));
    const summed = tf.unsortedSegmentSum(weighted, tf.tensor1d(plan.cells, 'int32'), plan.numCells);
    return tf.reshape(summed, [rows.length, ph, pw, c]) as tf.Tensor4D;
  });
}
