/**
 * ReSim parity with Tete-Xiao/ReSim@b6a36ee `moco/builder.py` + `moco/models.py` (FPN, fc) + `moco/datasets.py`
 * (windows), the official modules RUN under PyTorch 1.13 on the CPU, PrRoIPool transcribed from its CUDA kernels.
 * Reference values: test/fixtures/methods/resim/parity.json, written by `test/fixtures/methods/resim/make_parity.py`
 * (see its docstring for how to fetch the official code and rerun). The backbone hands given C3..C5 maps (trainable
 * here, so the gradient reaching the backbone is captured) and the views' geometry is the crops the official dataset
 * code saw, so one `step` exercises exactly the method: windows and their mapping (two of the three images share a
 * flip), FPN, PrRoIPool on P4 and P3, the 3×3-pooled negatives, the ignored windows, the global MoCo term, the
 * momentum update and the enqueue.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import type { Box, ViewGeometry } from '../../stages/data/geometry.js';
import type { BackboneFactory, MethodBatch } from '../../stages/methods/shared/contract.js';
import { queryWindows, ReSim, resim, type ReSimArgs } from '../../stages/methods/resim.js';
import { prroiPool } from '../../stages/engine/ops/prroi_pool.js';
import type { RoiBox } from '../../stages/engine/ops/roi_align.js';
import { expectStoreMatches, type Json, loadFixture, loadNeck, loadQueue, nhwc, queueRows, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout } from './parity-helpers.js';

const fixture = loadFixture('resim');
const { B, size, cIn, fpn, D, K, imageWidth, imageHeight } = fixture.sizes as Record<string, number> & { cIn: number[] };
const args: ReSimArgs = {
  ...resim.args.parse({}),
  temperature: fixture.args.temperature,
  momentum: fixture.args.momentum,
  queueSize: K,
  embedDim: D,
  hiddenDim: cIn[2]!,
  fpnChannels: fpn,
  shuffleBnGroups: 1,
};

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** A "backbone" whose C3..C5 are given: trainable variables `backbone.c3..c5` online, constants for the momentum encoder. */
function givenStages(cq: tf.Tensor4D[], ck: tf.Tensor4D[]): BackboneFactory {
  return (store, prefix, seed) => {
    const momentum = String(seed).endsWith('-momentum');
    const vars = cq.map((c, l) => store.add(`${prefix}.c${l + 3}`, c.clone(), { layout: 'same', role: 'weight' }));
    return {
      outChannels: cIn[2]!,
      stride: 32,
      stageChannels: cIn,
      apply: () => {
        throw new Error('ReSim reads applyStages');
      },
      applyStages: () => (momentum ? ck.map((t) => tf.clone(t)) : vars.map((v) => tf.mul(v, 1) as tf.Tensor4D)),
    };
  };
}

interface Crop {
  flip: boolean;
  q: [number, number, number, number];
  k: [number, number, number, number];
}

/** The official crop (t, l, h, w) is in the frame of the (shared-)flipped image; ours is in the original image. */
function geometryOf([t, l, h, w]: [number, number, number, number], flip: boolean): ViewGeometry {
  const crop: Box = flip ? [imageWidth - l - w, t, imageWidth - l, t + h] : [l, t, l + w, t + h];
  return { imageWidth, imageHeight, crop, width: size, height: size, flipped: flip };
}

const crops = fixture.inputs.crops as Crop[];
const geometry = (): ViewGeometry[][] => [crops.map((c) => geometryOf(c.q, c.flip)), crops.map((c) => geometryOf(c.k, c.flip))];

function build(): { method: ReSim; tensors: tf.Tensor[] } {
  const { inputs } = fixture;
  const cq = (inputs.c_q as Json[]).map(nhwc);
  const ck = (inputs.c_k as Json[]).map(nhwc);
  const method = new ReSim(args, givenStages(cq, ck), 1);
  loadNeck(method.online, inputs.neck_q);
  loadNeck(method.momentumEncoder, inputs.neck_k);
  const queue = queueRows(inputs.queue);
  loadQueue(method.queues.queue, queue, inputs.queue_ptr);
  return { method, tensors: [...cq, ...ck, queue] };
}

const views = () => [tf.zeros([B, size, size, 3]), tf.zeros([B, size, size, 3])] as tf.Tensor4D[];

const maxAbs = (a: number[][][], b: number[][][]) => Math.max(...a.flatMap((img, i) => img.flatMap((box, j) => box.map((x, c) => Math.abs(x - b[i]![j]![c]!)))));

describe('ReSim parity with Tete-Xiao/ReSim builder.py (official modules run under PyTorch)', () => {
  it('computes the official windows, their mapping into view 1 and which are ignored', () => {
    const { method, tensors } = build();
    const v = views();
    const w = method.windows({ views: v, geometry: geometry() });
    for (const level of ['p4', 'p3'] as const) {
      const ref = fixture.outputs.windows[level] as { q: number[][][]; k: number[][][]; labels: number[][] };
      expect(w[level].valid.map((img) => img.map((ok) => (ok ? 0 : -1)))).toEqual(ref.labels);
      expect(maxAbs(w[level].q, ref.q), `${level} query windows`).toBeLessThan(1e-9);
      expect(maxAbs(w[level].k, ref.k), `${level} key windows`).toBeLessThan(1e-9);
    }
    tf.dispose([...tensors, ...v]);
    method.dispose();
  });

  it('pools the same region features (FPN + PrRoIPool) as the official code', () => {
    const { inputs, outputs } = fixture;
    const { method, tensors } = build();
    const v = views();
    const w = method.windows({ views: v, geometry: geometry() });
    // The official key features come from the momentum encoder AFTER its update (it precedes the key forward).
    loadNeck(method.momentumEncoder, outputs.neck_k_after);
    const errors: Record<string, number> = {};
    for (const [side, enc, maps] of [['q', method.q, inputs.c_q], ['k', method.k, inputs.c_k]] as const) {
      const [c3, c4, c5] = (maps as Json[]).map(nhwc);
      const { p4, p3 } = enc.head.fpn.apply(c3!, c4!, c5!);
      for (const [level, map, scale] of [['p4', p4, 1 / 16], ['p3', p3, 1 / 8]] as const) {
        const boxes = w[level][side];
        const rois = boxes.flatMap((bs, b) => bs.map((x): RoiBox => [b, ...x]));
        const pooled = tf.reshape(prroiPool(map, rois, { outputSize: 1, spatialScale: scale }), [B, boxes[0]!.length, fpn]);
        const ref = tf.tensor(outputs.regions[`${level}_${side}`].data, outputs.regions[`${level}_${side}`].shape);
        errors[`${level}_${side}`] = tensorRelErr(pooled, ref);
        tf.dispose([pooled, ref]);
      }
      tf.dispose([c3!, c4!, c5!, p4, p3]);
    }
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(REL_TOL);
    console.info('resim parity: region features (before normalisation), max relative errors', errors);
    tf.dispose([...tensors, ...v]);
    method.dispose();
  });

  it('matches every loss term, all head gradients, the backbone gradient, the momentum encoder and the queue after one step', () => {
    const { outputs } = fixture;
    const { method, tensors } = build();
    const v = views();
    const { result, grads } = stepCapturing(method, v, { geometry: geometry() });
    const errors: Record<string, number> = {};
    errors.loss = relErr(result.loss, outputs.loss);
    errors.moco = relErr(result.parts.moco!, outputs.loss_moco);
    errors.p4 = relErr(result.parts.p4!, outputs.loss_p4);
    errors.p3 = relErr(result.parts.p3!, outputs.loss_p3);

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
      const e = tensorRelErr(grads.get(`backbone.c${l + 3}`)!, expected);
      expect(e, `grad C${l + 3}`).toBeLessThan(REL_TOL);
      maxBackbone = Math.max(maxBackbone, e);
      expected.dispose();
    });
    errors.backboneGrads = maxBackbone;

    errors.momentumEncoder = expectStoreMatches(method.momentumEncoder, outputs.neck_k_after);
    const queue = queueRows(outputs.queue_after);
    errors.queue = tensorRelErr(method.queues.queue.buffer, queue);
    expect(method.queues.queue.pointer).toBe(outputs.queue_ptr_after);
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(REL_TOL);
    console.info('resim parity: max relative errors', errors);
    tf.dispose([...tensors, ...v, queue, ...grads.values()]);
    method.dispose();
  });

  it('has the sizes the tests assume', () => {
    expect([B, cIn[0], size / 8, size / 8]).toEqual(fixture.inputs.c_q[0].shape);
    expect(fixture.official.commit.startsWith(resim.code.commit)).toBe(true);
    expect(resim.consumes.sharedFlip).toBe(true);
  });
});

describe('ReSim windows at other view sizes', () => {
  it('keeps the paper grid: 6×6 P4 and 8×8 P3 windows scaled by S/224 (32 px: 36 and 64 windows)', () => {
    const defaults = resim.args.parse({});
    for (const s of [32, 64, 224]) {
      const p4 = queryWindows(defaults.p4Window, s);
      const p3 = queryWindows(defaults.p3Window, s);
      expect([p4.length, p3.length]).toEqual([36, 64]);
      expect(p4[1]![0]).toBeCloseTo((32 * s) / 224, 9);
      expect(p4[0]![2]).toBeCloseTo((48 * s) / 224, 9);
      expect(p3[8]![1]).toBeCloseTo((24 * s) / 224, 9);
      expect(p3[0]![3]).toBeCloseTo((32 * s) / 224, 9);
    }
    expect(() => resim.validate!({ ...defaults, queueSize: 64 }, { batchSize: 8, imageSize: 32 })).not.toThrow();
  });
});

describe('ReSim across emulated GPUs', () => {
  // 64-px views of a 100×100 image; C3..C5 at strides 8/16/32 (8, 4, 2 px maps); image b's maps are picked by a marker
  // pixel, so they follow the shuffle-BN permutation.
  const S = 64;
  const chans = [3, 4, 5];
  let maps: tf.Tensor4D[] = [];
  const byMarker: BackboneFactory = () => {
    return {
      outChannels: chans[2]!,
      stride: 32,
      stageChannels: chans,
      apply: () => {
        throw new Error('ReSim reads applyStages');
      },
      applyStages: (x) => {
        const ids = tf.tidy(() => tf.cast(tf.reshape(tf.slice(x, [0, 0, 0, 0], [-1, 1, 1, 1]), [-1]), 'int32'));
        const out = maps.map((m) => tf.gather(m, ids) as tf.Tensor4D);
        ids.dispose();
        return out;
      },
    };
  };
  const g = (crop: Box, flipped: boolean): ViewGeometry => ({ imageWidth: 100, imageHeight: 100, crop, width: S, height: S, flipped });
  const geo: ViewGeometry[][] = [
    [g([0, 0, 70, 70], false), g([10, 20, 90, 100], true), g([30, 30, 100, 100], false), g([5, 0, 80, 75], true)],
    [g([10, 10, 100, 100], false), g([0, 10, 100, 110], true), g([20, 25, 90, 95], false), g([0, 5, 90, 95], true)],
  ];
  const run = (images: number[], groups: number) => {
    const method = new ReSim({ ...args, queueSize: 8, embedDim: 4, hiddenDim: 5, fpnChannels: 6, shuffleBnGroups: groups }, byMarker, 3);
    const marker = tf.tidy(() => tf.mul(tf.ones([images.length, S, S, 3]), tf.reshape(tf.tensor1d(images), [-1, 1, 1, 1]))) as tf.Tensor4D;
    const batch: MethodBatch = { views: [marker, marker], geometry: [images.map((i) => geo[0]![i]!), images.map((i) => geo[1]![i]!)] };
    const result = method.step(batch, { step: 0, totalSteps: 1, rng: new Rng(5), applyGradients: () => {} });
    marker.dispose();
    method.dispose();
    return result;
  };

  it('averages the GPUs; P3 negatives come from the GPU\'s own images, P4 negatives from the whole batch', () => {
    maps = [8, 4, 2].map((h, l) => tf.randomUniform([4, h, h, chans[l]!], 0, 1, 'float32', 7 + l)) as tf.Tensor4D[];
    const both = run([0, 1, 2, 3], 2);
    const [first, second] = [run([0, 1], 1), run([2, 3], 1)];
    const whole = run([0, 1, 2, 3], 1);
    expect(relErr(both.parts.p3!, (first.parts.p3! + second.parts.p3!) / 2)).toBeLessThan(1e-5);
    expect(relErr(both.parts.moco!, (first.parts.moco! + second.parts.moco!) / 2)).toBeLessThan(1e-5);
    expect(relErr(both.parts.moco!, whole.parts.moco!)).toBeLessThan(1e-5);
    // P4 with all negatives is not the two halves' average, and P3 with one GPU is not the per-GPU one.
    expect(relErr(both.parts.p4!, (first.parts.p4! + second.parts.p4!) / 2)).toBeGreaterThan(1e-3);
    expect(relErr(both.parts.p3!, whole.parts.p3!)).toBeGreaterThan(1e-3);
    tf.dispose(maps);
  });
});
