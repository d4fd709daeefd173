/**
 * CCOP parity with ChenhongyiYang/CCOP@956b952 `openselfsup/models/ccop.py` (+ `utils/d2_fpn.py`, `utils/pooler.py`),
 * the official modules RUN under PyTorch 1.13 on the CPU. Reference values: test/fixtures/methods/ccop/parity.json, written
 * by `test/fixtures/methods/ccop/make_parity.py` (see its docstring for how to fetch the official code and rerun).
 * The backbone hands given C2..C5 maps (trainable here, so the gradient reaching the backbone is captured), the box
 * pairs, jitter uniforms and dropout masks are the ones PyTorch used, so one `step` exercises exactly the method:
 * FPN with BN, level assignment, RoIAlign, both MLPs with dropout, the curriculum's hardest positive, the three losses,
 * the momentum update and both enqueues (the RoI one variable-length and truncated).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import type { Box, ViewGeometry } from '../../stages/data/geometry.js';
import { ccop, CCOP, curriculum, pairBoxesFromOriginal, type CCOPArgs, type CcopDraws, type DropoutSite } from '../../stages/methods/ccop.js';
import type { BackboneFactory } from '../../stages/methods/shared/contract.js';
import { expectStoreMatches, type Json, loadFixture, loadNeck, loadQueue, nhwc, queueRows, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout } from './parity-helpers.js';

const fixture = loadFixture('ccop');
const { B, size, cIn, fpn, hidden, D, pool, Kimg, Kroi, nJitter } = fixture.sizes as Record<string, number> & { cIn: number[] };
const fa = fixture.args;
const args: CCOPArgs = {
  ...ccop.args.parse({}),
  imgTemperature: fa.imgTemperature,
  roiTemperature: fa.roiTemperature,
  queueSize: Kimg,
  roiQueueSize: Kroi,
  momentum: fa.momentum,
  embedDim: D,
  hiddenDim: hidden,
  roiHiddenDim: hidden,
  fpnChannels: fpn,
  poolSize: pool,
  dropout: fa.dropout,
  nJitter,
  iouThreshold: fa.iouThr,
  jitterXY: fa.jitterXY,
  jitterWH: fa.jitterWH,
  shuffleBnGroups: 1,
};

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** A "backbone" whose C2..C5 are given: trainable variables `backbone.c2..c5` online, constants for the momentum encoder. */
function givenStages(cq: tf.Tensor4D[], ck: tf.Tensor4D[]): BackboneFactory {
  return (store, prefix, seed) => {
    const momentum = String(seed).endsWith('-momentum');
    const vars = cq.map((c, l) => store.add(`${prefix}.c${l + 2}`, c.clone(), { layout: 'same', role: 'weight' }));
    return {
      outChannels: cIn[3]!,
      stride: 32,
      stageChannels: cIn,
      apply: () => {
        throw new Error('CCOP reads applyStages');
      },
      applyStages: () => (momentum ? ck.map((t) => tf.clone(t)) : vars.map((v) => tf.mul(v, 1) as tf.Tensor4D)),
    };
  };
}

const pairsOf = (q: Box[][], k: Box[][]) => q.map((boxes, b) => ({ q: boxes, k: k[b]! }));

/** The draws PyTorch made: aug_boxes' uniforms per image and every dropout keep-mask by site. */
const fixtureDraws: CcopDraws = {
  jitter: (image, n, J) => {
    const { xy, wh } = fixture.inputs.jitter[image] as { xy: Json; wh: Json };
    expect(xy.shape).toEqual([n, J, 2]);
    return { xy: Float32Array.from(xy.data), wh: Float32Array.from(wh.data) };
  },
  dropoutKeep: (site: DropoutSite, rows, cols) => {
    const m = fixture.inputs.dropout[site] as Json;
    expect(m.shape, site).toEqual([rows, cols]);
    return Float32Array.from(m.data);
  },
};

function build(): { method: CCOP; tensors: tf.Tensor[] } {
  const { inputs } = fixture;
  const cq = (inputs.c_q as Json[]).map(nhwc);
  const ck = (inputs.c_k as Json[]).map(nhwc);
  const method = new CCOP(args, givenStages(cq, ck), 1, size);
  loadNeck(method.online, inputs.neck_q);
  loadNeck(method.momentumEncoder, inputs.neck_k);
  const [iq, rq] = [queueRows(inputs.img_queue), queueRows(inputs.roi_queue)];
  loadQueue(method.queues.img, iq, inputs.img_queue_ptr);
  loadQueue(method.queues.roi, rq, inputs.roi_queue_ptr);
  method.draws = () => fixtureDraws;
  method.boxPairs = () => pairsOf(inputs.boxes_q, inputs.boxes_k);
  return { method, tensors: [...cq, ...ck, iq, rq] };
}

const views = () => [tf.zeros([B, size, size, 3]), tf.zeros([B, size, size, 3])] as tf.Tensor4D[];

describe('CCOP parity with ChenhongyiYang/CCOP ccop.py (official modules run under PyTorch)', () => {
  it('matches every loss term, all head gradients, the backbone gradient, the momentum encoder and both queues after one step', () => {
    const { outputs } = fixture;
    const { method, tensors } = build();
    const v = views();
    const { result, grads } = stepCapturing(method, v, {}, fixture.step, fixture.totalSteps);
    const errors: Record<string, number> = {};

    errors.loss = relErr(result.loss, outputs.loss);
    errors.img = relErr(result.parts.img!, outputs.img_loss);
    errors.roi = relErr(result.parts.roi!, outputs.roi_loss);
    errors.intra = relErr(result.parts.intra!, outputs.intra_loss);

    const headGrads = [...grads.keys()].filter((k) => k.startsWith('neck.')).sort();
    expect(headGrads).toEqual(Object.keys(outputs.grads).map((n) => `neck.${n}`).sort());
    let maxHead = 0;
    for (const [name, t] of Object.entries(outputs.grads as Record<string, Json>)) {
      const expected = toOurLayout(`neck.${name}`, t, method.online);
      const e = tensorRelErr(grads.get(`neck.${name}`)!, expected);
      expect(e, `grad ${name}`).toBeLessThan(REL_TOL);
      maxHead = Math.max(maxHead, e);
      expected.dispose();
    }
    errors.headGrads = maxHead;
    let maxBackbone = 0;
    (outputs.grad_c_q as Json[]).forEach((t, l) => {
      const expected = nhwc(t);
      const e = tensorRelErr(grads.get(`backbone.c${l + 2}`)!, expected);
      expect(e, `grad C${l + 2}`).toBeLessThan(REL_TOL);
      maxBackbone = Math.max(maxBackbone, e);
      expected.dispose();
    });
    errors.backboneGrads = maxBackbone;

    errors.momentumEncoder = expectStoreMatches(method.momentumEncoder, outputs.neck_k_after);
    const [iq, rq] = [queueRows(outputs.img_queue_after), queueRows(outputs.roi_queue_after)];
    errors.imgQueue = tensorRelErr(method.queues.img.buffer, iq);
    errors.roiQueue = tensorRelErr(method.queues.roi.buffer, rq);
    expect(method.queues.img.pointer).toBe(outputs.img_queue_ptr_after);
    expect(method.queues.roi.pointer).toBe(outputs.roi_queue_ptr_after);
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(REL_TOL);
    console.info('ccop parity: max relative errors', errors);
    tf.dispose([...tensors, ...v, iq, rq, ...grads.values()]);
    method.dispose();
  });

  it('depends on the box priors: other images\' boxes change the loss and the gradients', () => {
    const { inputs } = fixture;
    const run = (shift: number) => {
      const { method, tensors } = build();
      method.draws = freshDraws; // from the step's Rng (same seed in both runs): the box counts per image differ
      const q = inputs.boxes_q as Box[][];
      const k = inputs.boxes_k as Box[][];
      method.boxPairs = () => pairsOf(q.map((_, b) => q[(b + shift) % B]!), k.map((_, b) => k[(b + shift) % B]!));
      const v = views();
      const out = stepCapturing(method, v, {}, fixture.step, fixture.totalSteps);
      tf.dispose([...tensors, ...v]);
      method.dispose();
      return out;
    };
    const [a, b] = [run(0), run(1)];
    expect(Math.abs(a.result.loss - b.result.loss)).toBeGreaterThan(1e-3);
    for (const name of ['neck.roi_neck.mlp.linear_1.0.weight', 'neck.fpn.fpn_output2.weight', 'backbone.c2']) {
      expect(tensorRelErr(a.grads.get(name)!, b.grads.get(name)!), name).toBeGreaterThan(1e-3);
    }
    tf.dispose([...a.grads.values(), ...b.grads.values()]);
  });

  it('has the sizes the tests assume', () => {
    expect([B, cIn[0], size / 4, size / 4]).toEqual(fixture.inputs.c_q[0].shape);
    expect(fixture.official.commit.startsWith(ccop.code.commit)).toBe(true);
  });
});

/** Draws from the step's Rng (dropout masks with the fixture's p). */
function freshDraws(rng: Rng, p: number): CcopDraws {
  return {
    jitter: (_b, n, J) => ({ xy: Float32Array.from({ length: n * J * 2 }, () => rng.next()), wh: Float32Array.from({ length: n * J * 2 }, () => rng.next()) }),
    dropoutKeep: (_s, rows, cols) => Float32Array.from({ length: rows * cols }, () => (rng.next() >= p ? 1 : 0)),
  };
}

describe('CCOP box pairs and curriculum', () => {
  // A 100×100 image; view 0 = crop [0, 0, 50, 50] → 64 px; view 1 = crop [20, 0, 100, 80] → 64 px, flipped.
  const g0: ViewGeometry = { imageWidth: 100, imageHeight: 100, crop: [0, 0, 50, 50], width: 64, height: 64, flipped: false };
  const g1: ViewGeometry = { imageWidth: 100, imageHeight: 100, crop: [20, 0, 100, 80], width: 64, height: 64, flipped: true };
  const rules = { partThreshold: 0.6, minArea: 144 * (64 / 224) ** 2, maxBoxes: 100, size: 64 };

  it('keeps a box only when it is > 0.6 visible and large enough in both views, same order in both', () => {
    const original: Box[] = [
      [25, 10, 45, 30], // inside both
      [0, 0, 15, 15], // outside view 1
      [30, 30, 31, 31], // too small
      [40, 40, 60, 60], // 25 % in view 0
      [22, 5, 48, 45], // inside both
    ];
    const pairs = pairBoxesFromOriginal(original, g0, g1, rules);
    expect(pairs.q.length).toBe(2);
    [32, 12.8, 57.6, 38.4].forEach((x, j) => expect(pairs.q[0]![j]).toBeCloseTo(x, 6));
    // view 1: x' = 64 − (X − 20)·0.8 → [64 − 20, 64 − 4] = [44, 60]; y' = Y·0.8.
    expect(pairs.k[0]![0]).toBeCloseTo(44);
    expect(pairs.k[0]![2]).toBeCloseTo(60);
    expect(pairs.k[0]![1]).toBeCloseTo(8);
  });

  it('interpolates the curriculum with iter counted from 1', () => {
    const c = curriculum(ccop.args.parse({}), 29, 100);
    expect(c.iouThreshold).toBeCloseTo(0.8 - 0.3 * 0.4);
    expect(c.magXY).toBeCloseTo(0.15 + 0.3 * 0.45);
    expect(c.magWH).toBeCloseTo(0.35 + 0.3 * 1.05);
  });
});
