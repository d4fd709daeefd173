/**
 * Precise RoI Pooling (stages/engine/ops/prroi_pool.ts) against (1) a cell-by-cell transcription of the CUDA forward
 * kernel (Tete-Xiao/ReSim@b6a36ee lib/prroi_pool/src/prroi_pooling_gpu_impl.cu, PrRoIPoolingForward +
 * PrRoIPoolingMatCalculation), (2) brute-force numerical integration of the bilinear interpolant, (3) closed forms,
 * and its gradient against the same integrals. The ReSim parity fixture checks it against the PyTorch transcription.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import { integralCoefficients, prroiPool } from '../../stages/engine/ops/prroi_pool.js';
import type { RoiBox } from '../../stages/engine/ops/roi_align.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** X[b, h, w, c] from a flat NHWC array, zero outside the map (PrRoIPoolingGetData). */
const at = (x: Float32Array, [, H, W, C]: number[], b: number, h: number, w: number, c: number) => (h < 0 || w < 0 || h >= H! || w >= W! ? 0 : x[((b * H! + h) * W! + w) * C! + c]!);

/** The kernel: unit cells the bin touches, four corners each with the separable integral of (1 − t). */
function kernelForward(x: Float32Array, shape: number[], roi: RoiBox, ph: number, pw: number, scale: number): number[] {
  const C = shape[3]!;
  const [b, x0, y0, x1, y1] = roi;
  const [sw, sh, ew, eh] = [x0 * scale, y0 * scale, x1 * scale, y1 * scale];
  const binH = Math.max(eh - sh, 0) / ph;
  const binW = Math.max(ew - sw, 0) / pw;
  const f = (lo: number, hi: number) => hi - 0.5 * hi * hi - lo + 0.5 * lo * lo;
  const out: number[] = [];
  for (let i = 0; i < ph; i++) {
    for (let j = 0; j < pw; j++) {
      const [ws, hs] = [sw + binW * j, sh + binH * i];
      const [we, he] = [ws + binW, hs + binH];
      const area = Math.max(0, binW * binH);
      for (let c = 0; c < C; c++) {
        if (area === 0) {
          out.push(0);
          continue;
        }
        let sum = 0;
        for (let wi = Math.floor(ws); wi < Math.ceil(we); wi++) {
          for (let hi = Math.floor(hs); hi < Math.ceil(he); hi++) {
            const [cy0, cx0, cy1, cx1] = [Math.max(hs, hi), Math.max(ws, wi), Math.min(he, hi + 1), Math.min(we, wi + 1)];
            sum += at(x, shape, b, hi, wi, c) * f(cx0 - wi, cx1 - wi) * f(cy0 - hi, cy1 - hi);
            sum += at(x, shape, b, hi, wi + 1, c) * f(wi + 1 - cx1, wi + 1 - cx0) * f(cy0 - hi, cy1 - hi);
            sum += at(x, shape, b, hi + 1, wi, c) * f(cx0 - wi, cx1 - wi) * f(hi + 1 - cy1, hi + 1 - cy0);
            sum += at(x, shape, b, hi + 1, wi + 1, c) * f(wi + 1 - cx1, wi + 1 - cx0) * f(hi + 1 - cy1, hi + 1 - cy0);
          }
        }
        out.push(sum / area);
      }
    }
  }
  return out;
}

/** Midpoint-rule average of the bilinear interpolant over [x0, x1] × [y0, y1] (feature units), n × n samples. */
function bruteForce(x: Float32Array, shape: number[], b: number, c: number, [x0, y0, x1, y1]: number[], n = 300): number {
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const y = y0! + ((i + 0.5) * (y1! - y0!)) / n;
    for (let j = 0; j < n; j++) {
      const xx = x0! + ((j + 0.5) * (x1! - x0!)) / n;
      const [h, w] = [Math.floor(y), Math.floor(xx)];
      const [dy, dx] = [y - h, xx - w];
      sum +=
        at(x, shape, b, h, w, c) * (1 - dy) * (1 - dx) + at(x, shape, b, h + 1, w, c) * dy * (1 - dx) + at(x, shape, b, h, w + 1, c) * (1 - dy) * dx + at(x, shape, b, h + 1, w + 1, c) * dy * dx;
    }
  }
  return sum / (n * n);
}

function randomMap(shape: [number, number, number, number], seed: number): { t: tf.Tensor4D; data: Float32Array } {
  const rng = new Rng(seed);
  const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal());
  return { t: tf.tensor4d(data, shape), data };
}

describe('prroiPool', () => {
  const shape: [number, number, number, number] = [2, 7, 9, 3];
  // boxes in image pixels (stride 4): inside, across the right/bottom border, sub-pixel, integer-aligned, tiny
  const rois: RoiBox[] = [
    [0, 3.3, 2.1, 17.9, 19.4],
    [1, 20.5, 10, 40, 31],
    [1, 1, 1, 2.2, 1.5],
    [0, 8, 4, 20, 16],
    [0, 0, 0, 1, 1],
    [1, -3, -2, 5, 6],
  ];

  it('equals a cell-by-cell transcription of the official CUDA forward kernel', () => {
    const { t, data } = randomMap(shape, 1);
    for (const [ph, pw] of [[1, 1], [2, 3]] as const) {
      const out = prroiPool(t, rois, { outputSize: [ph, pw], spatialScale: 0.25 });
      const ours = out.dataSync();
      const ref = rois.flatMap((r) => kernelForward(data, shape, r, ph, pw, 0.25));
      const err = Math.max(...ref.map((v, i) => Math.abs(v - ours[i]!)));
      expect(err, `${ph}x${pw}`).toBeLessThan(1e-5);
      out.dispose();
    }
    t.dispose();
  });

  it('is the exact average of the bilinear interpolant, zero outside the map', () => {
    const { t, data } = randomMap(shape, 2);
    const out = prroiPool(t, rois, { outputSize: 1, spatialScale: 0.25 });
    const ours = out.dataSync();
    rois.forEach((r, k) => {
      for (let c = 0; c < 3; c++) expect(ours[k * 3 + c], `roi ${k} c ${c}`).toBeCloseTo(bruteForce(data, shape, r[0], c, r.slice(1).map((v) => v * 0.25)), 4);
    });
    tf.dispose([t, out]);
  });

  it('returns the value at the centre for a linear map, and 0 for an empty box', () => {
    const [H, W] = [6, 8];
    const lin = tf.tidy(() => tf.add(tf.add(tf.mul(tf.reshape(tf.range(0, H), [1, H, 1, 1]), 0.7), tf.mul(tf.reshape(tf.range(0, W), [1, 1, W, 1]), -1.3)), 2)) as tf.Tensor4D;
    const out = prroiPool(lin, [[0, 1.2, 0.4, 5.9, 4.7], [0, 3, 2, 3, 4]], { outputSize: 1 }).dataSync();
    expect(out[0]).toBeCloseTo(0.7 * ((0.4 + 4.7) / 2) - 1.3 * ((1.2 + 5.9) / 2) + 2, 5);
    expect(out[1]).toBe(0);
    lin.dispose();
  });

  it('1-D coefficients sum to the interval length inside the map', () => {
    const { weight } = integralCoefficients(1.3, 4.8, 10);
    expect(weight.reduce((a, b) => a + b, 0)).toBeCloseTo(3.5, 12);
  });

  it('back-propagates the same integrals to the features (PrRoIPoolingBackward)', () => {
    const { t } = randomMap(shape, 3);
    const g = randomMap([rois.length, 1, 1, 3], 4);
    const grad = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(prroiPool(x as tf.Tensor4D, rois, { outputSize: 1, spatialScale: 0.25 }), g.t)))(t);
    const gd = grad.dataSync();
    // d/dX[b, h, w, c] = Σ_k g[k, c] · coefficient of pixel (h, w) in roi k = Σ_k g[k, c] · avg of a one-hot map's interpolant
    // (every pixel of channel 0; the one-hot map's interpolant is non-zero only near the pixel)
    let worst = 0;
    for (let b = 0; b < shape[0]; b++) {
      for (let h = 0; h < shape[1]; h++) {
        for (let w = 0; w < shape[2]; w++) {
          const onehot = new Float32Array(shape.reduce((a, x) => a * x, 1));
          onehot[((b * shape[1] + h) * shape[2] + w) * 3] = 1;
          const expected = rois.reduce((s, r, k) => (r[0] === b ? s + g.data[k * 3]! * bruteForce(onehot, shape, b, 0, r.slice(1).map((v) => v * 0.25), 200) : s), 0);
          worst = Math.max(worst, Math.abs(gd[((b * shape[1] + h) * shape[2] + w) * 3]! - expected));
        }
      }
    }
    expect(worst).toBeLessThan(1e-4);
    tf.dispose([t, g.t, grad]);
  });
});
