import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { bceWithLogits, fcosLosses, giouLossLtrb, sigmoidFocalLoss } from '../../stages/downstream/detection/loss.js';
import { classwiseNms, nms, postprocessImage } from '../../stages/downstream/detection/postprocess.js';
import { locationGrid, pyramidLevels } from '../../stages/downstream/detection/points.js';

const LN2 = Math.log(2);
const value = (t: tf.Tensor) => {
  const v = t.dataSync()[0]!;
  t.dispose();
  return v;
};

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('detection losses (hand-computed)', () => {
  it('focal loss at logit 0: alpha_t * 0.5^2 * ln 2', () => {
    const focal = sigmoidFocalLoss(tf.tensor1d([0, 0]), tf.tensor1d([1, 0]), { alpha: 0.25, gamma: 2 }).dataSync();
    expect(focal[0]).toBeCloseTo(0.25 * 0.25 * LN2, 6);
    expect(focal[1]).toBeCloseTo(0.75 * 0.25 * LN2, 6);
    // gamma 0, alpha 0.5 is half the plain BCE: at logit 2, target 1, BCE = ln(1 + e^-2).
    expect(value(sigmoidFocalLoss(tf.scalar(2), tf.scalar(1), { alpha: 0.5, gamma: 0 }))).toBeCloseTo(0.5 * Math.log1p(Math.exp(-2)), 6);
  });

  it('BCE with logits stays finite for large logits', () => {
    const v = bceWithLogits(tf.tensor1d([100, -100, 0]), tf.tensor1d([0, 1, 0.5])).dataSync();
    expect([...v].map((x) => Math.round(x * 1e4) / 1e4)).toEqual([100, 100, Math.round(LN2 * 1e4) / 1e4]);
  });

  it('GIoU loss on ltrb pairs: identical 0, nested 1 - IoU, disjoint adds the empty share of the enclosing box', () => {
    const pred = tf.tensor2d([
      [1, 1, 1, 1],
      [1, 1, 1, 1],
      [0.5, 0.5, 0.5, 0.5],
      [2, 2, 0, 0],
    ]);
    const target = tf.tensor2d([
      [1, 1, 1, 1],
      [2, 1, 0, 1], // inter 1x2 = 2, union 4 + 4 - 2 = 6, enclosing 3x2 = 6: GIoU = 1/3
      [2, 2, 2, 2], // inter 1, union 16, enclosing 16: GIoU = 1/16
      [0, 0, 2, 2], // disjoint 2x2 squares touching at a corner: IoU 0, enclosing 16, union 8: GIoU = -1/2
    ]);
    const loss = [...giouLossLtrb(pred, target).dataSync()];
    [0, 2 / 3, 15 / 16, 1.5].forEach((want, i) => expect(loss[i], `row ${i}`).toBeCloseTo(want, 6));
  });

  it('fcosLosses: focal over all locations / positives, centerness-weighted GIoU, centerness BCE over positives', () => {
    // 1 image, 3 locations, 1 class. Locations 0 and 1 positive (class 0), location 2 background with an all-zero target.
    const out = {
      classLogits: tf.zeros([1, 3, 1]) as tf.Tensor3D,
      ltrb: tf.tensor3d([[[0.5, 0.5, 0.5, 0.5], [2, 2, 2, 2], [5, 5, 5, 5]]]),
      centernessLogits: tf.tensor2d([[0, 0, 3]]),
    };
    const targets = {
      labels: tf.tensor2d([[0, 0, -1]], [1, 3], 'int32'),
      ltrb: tf.tensor3d([[[1, 1, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]]]),
      centerness: tf.tensor2d([[1, 0.5, 0]]),
    };
    const l = fcosLosses(out, targets, { alpha: 0.25, gamma: 2 });
    // classification: (2 x 0.0625 + 0.1875) ln2 / 2 positives.
    expect(value(l.classification)).toBeCloseTo((0.3125 * LN2) / 2, 6);
    // box: (1 x 0.75 + 0.5 x 0) / (1 + 0.5) = 0.5; the background's degenerate target does not reach it.
    expect(value(l.box)).toBeCloseTo(0.5, 6);
    // centerness: BCE(0, 1) = BCE(0, 0.5) = ln2, averaged over the 2 positives; the background's logit 3 is left out.
    expect(value(l.centerness)).toBeCloseTo(LN2, 6);
    expect(value(l.total)).toBeCloseTo((0.3125 * LN2) / 2 + 0.5 + LN2, 6);
  });

  it('gradients stay finite with background locations whose target box is empty', () => {
    const ltrb = tf.variable(tf.tensor3d([[[1, 1, 1, 1], [0, 0, 0, 0]]]));
    const logits = tf.variable(tf.zeros([1, 2, 2]));
    const ctr = tf.variable(tf.zeros([1, 2]));
    const targets = { labels: tf.tensor2d([[1, -1]], [1, 2], 'int32'), ltrb: tf.tensor3d([[[2, 1, 2, 1], [0, 0, 0, 0]]]), centerness: tf.tensor2d([[0.5, 0]]) };
    const { grads } = tf.variableGrads(() => fcosLosses({ classLogits: logits as unknown as tf.Tensor3D, ltrb: ltrb as unknown as tf.Tensor3D, centernessLogits: ctr as unknown as tf.Tensor2D }, targets, { alpha: 0.25, gamma: 2 }).total);
    for (const g of Object.values(grads)) expect([...g.dataSync()].every(Number.isFinite)).toBe(true);
    // Only the positive location's box gets a gradient.
    expect([...grads[ltrb.name]!.dataSync().slice(4)]).toEqual([0, 0, 0, 0]);
    for (const v of [ltrb, logits, ctr]) v.dispose();
  });
});

describe('non-maximum suppression', () => {
  const boxes = [
    [0, 0, 10, 10], // A 0.9
    [1, 1, 11, 11], // B 0.8: IoU with A = 81 / 119 = 0.68
    [20, 20, 30, 30], // C 0.7
    [0, 0, 10, 5], // D 0.95: IoU with A = 0.5, with B = 36 / 114
  ];
  it('drops boxes overlapping a higher-scoring kept box above the threshold', () => {
    expect(nms(boxes, [0.9, 0.8, 0.7, 0.95], 0.6)).toEqual([3, 0, 2]);
    // At 0.45 D suppresses A (IoU 0.5), and B survives: a suppressed box (A) suppresses nothing.
    expect(nms(boxes, [0.9, 0.8, 0.7, 0.95], 0.45)).toEqual([3, 1, 2]);
    expect(nms(boxes, [0.9, 0.8, 0.7, 0.95], 0.7)).toEqual([3, 0, 1, 2]);
  });
  it('ties keep input order; other classes never suppress each other', () => {
    expect(nms([boxes[0]!, boxes[0]!], [0.5, 0.5], 0.5)).toEqual([0]);
    const dets = [
      { box: [0, 0, 10, 10] as [number, number, number, number], label: 0, score: 0.9 },
      { box: [0, 0, 10, 10] as [number, number, number, number], label: 1, score: 0.8 },
      { box: [1, 0, 10, 10] as [number, number, number, number], label: 0, score: 0.85 },
    ];
    expect(classwiseNms(dets, 0.5)).toEqual([0, 1]);
  });
});

describe('postprocessImage', () => {
  it('thresholds, decodes ltrb at the location, clips to the image and scores sqrt(p_cls * p_ctr)', () => {
    const grid = locationGrid(pyramidLevels(16, [[2, 2]])); // stride 8, locations (4,4) (12,4) (4,12) (12,12)
    const K = 2;
    const logit = (p: number) => Math.log(p / (1 - p));
    const cls = new Float32Array(4 * K).fill(-10);
    cls[1 * K + 1] = logit(0.8); // location (12,4), class 1
    cls[3 * K + 0] = logit(0.5); // location (12,12), class 0
    cls[2 * K + 0] = logit(0.04); // below the 0.05 threshold
    const ltrb = new Float32Array(16).fill(0.25);
    ltrb.set([0.5, 0.25, 1, 1], 4); // (12,4): x0 = 8, y0 = 2, x1 = 20 -> 16, y1 = 12
    const ctr = new Float32Array([0, logit(0.2), 0, logit(0.5)]);
    const dets = postprocessImage(grid, K, cls, ltrb, ctr, 16, { scoreThreshold: 0.05, preNmsTopK: 10, nmsIou: 0.6, maxDetections: 100 });
    expect(dets).toHaveLength(2);
    expect(dets[0]!.label).toBe(0);
    expect(dets[0]!.score).toBeCloseTo(0.5, 6);
    expect(dets[0]!.box).toEqual([10, 10, 14, 14]);
    expect(dets[1]!.label).toBe(1);
    expect(dets[1]!.score).toBeCloseTo(Math.sqrt(0.8 * 0.2), 6);
    expect(dets[1]!.box).toEqual([8, 2, 16, 12]);
    expect(postprocessImage(grid, K, cls, ltrb, ctr, 16, { scoreThreshold: 0.05, preNmsTopK: 1, nmsIou: 0.6, maxDetections: 100 })).toHaveLength(1);
  });
});
