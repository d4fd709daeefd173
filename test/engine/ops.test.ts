import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { gridSampleBilinear } from '../../stages/engine/ops/grid_sample.js';
import { roiAlign, type RoiBox } from '../../stages/engine/ops/roi_align.js';
import ref from '../fixtures/engine/ops_reference.json' with { type: 'json' };

beforeAll(async () => {
  await initBackend('tensorflow');
});

const nchwToNhwc = (a: number[][][][]): tf.Tensor4D => tf.tidy(() => tf.transpose(tf.tensor4d(a), [0, 2, 3, 1]) as tf.Tensor4D);
const nhwcToNchw = (t: tf.Tensor): Float32Array => tf.tidy(() => tf.transpose(t, [0, 3, 1, 2]).dataSync() as Float32Array);

function maxAbsDiff(a: ArrayLike<number>, b: number[]): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('roiAlign against torchvision.ops.roi_align', () => {
  const features = nchwToNhwc(ref.roiAlign.features as number[][][][]);
  const boxes = ref.roiAlign.boxes as RoiBox[];
  for (const c of ref.roiAlign.cases) {
    it(`aligned=${c.aligned} sampling_ratio=${c.samplingRatio} spatial_scale=${c.spatialScale} output=${c.outputSize.join('x')}: values and feature gradient`, () => {
      const opts = { outputSize: c.outputSize as [number, number], spatialScale: c.spatialScale, samplingRatio: c.samplingRatio, aligned: c.aligned };
      const out = roiAlign(features, boxes, opts);
      expect(maxAbsDiff(nhwcToNchw(out), (c.output as number[][][][]).flat(3))).toBeLessThan(1e-5);
      const upstream = nchwToNhwc(c.upstream as number[][][][]);
      const grad = tf.grad((f: tf.Tensor) => tf.sum(tf.mul(roiAlign(f as tf.Tensor4D, boxes, opts), upstream)))(features);
      expect(maxAbsDiff(nhwcToNchw(grad), (c.featureGrad as number[][][][]).flat(3))).toBeLessThan(1e-5);
      tf.dispose([out, upstream, grad]);
    });
  }

  it('rejects a box whose batch index is out of range, naming the box', () => {
    expect(() => roiAlign(features, [[2, 0, 0, 1, 1]], { outputSize: 1 })).toThrow(/box 0 has batch index 2/);
  });
});

describe('gridSampleBilinear against F.grid_sample(bilinear, zeros, align_corners=False)', () => {
  it('matches output, input gradient and grid gradient', () => {
    const g = ref.gridSample;
    const input = nchwToNhwc(g.input as number[][][][]);
    const grid = tf.tensor4d(g.grid as number[][][][]);
    const out = gridSampleBilinear(input, grid);
    expect(maxAbsDiff(nhwcToNchw(out), (g.output as number[][][][]).flat(3))).toBeLessThan(1e-5);
    const upstream = nchwToNhwc(g.upstream as number[][][][]);
    const [dInput, dGrid] = tf.grads((i: tf.Tensor, gr: tf.Tensor) => tf.sum(tf.mul(gridSampleBilinear(i as tf.Tensor4D, gr as tf.Tensor4D), upstream)))([input, grid]);
    expect(maxAbsDiff(nhwcToNchw(dInput!), (g.inputGrad as number[][][][]).flat(3))).toBeLessThan(1e-5);
    expect(maxAbsDiff(dGrid!.dataSync(), (g.gridGrad as number[][][][]).flat(3))).toBeLessThan(1e-4);
    tf.dispose([input, grid, out, upstream, dInput!, dGrid!]);
  });
});
