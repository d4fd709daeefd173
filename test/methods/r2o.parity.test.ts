/**
 * R2O parity with KKallidromitis/r2o@c1a12f7 (R2OModel.forward, the torch KMeans, _forward_masked_byol_loss, the
 * scheduler and the trainer's momentum and lr-by-k) on identical inputs and weights. Reference values:
 * test/fixtures/methods/r2o/parity.json, written by `/usr/bin/python3 test/fixtures/methods/r2o/make_parity.py`, which
 * runs the official modules (see its docstring). The backbone is the identity on given maps (C5 of the two crop views,
 * C4 of the whole-image view), so this exercises exactly the method: superpixel pooling, k-means with injected initial
 * centres, label painting, RoIAlign mask transport with flips, mask pooling, projector/predictor, the overlap-masked
 * symmetric BYOL loss, the EMA order and the schedules, through `step`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import { augmentView } from '../../stages/data/augment.js';
import type { ViewGeometry } from '../../stages/data/geometry.js';
import { cosineMomentum } from '../../stages/engine/schedule.js';
import type { FeatureBackbone, ViewProposals } from '../../stages/methods/shared/contract.js';
import { applyRows, clusterCount, maskPool, objectWeights, r2o, R2O } from '../../stages/methods/r2o.js';
import { loadFixture, nhwc, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout, type Json } from './parity-helpers.js';

const fixture = loadFixture('r2o');
const { inputs, outputs } = fixture;
const { B, C, grid, hidden, D, predictorHidden, slots } = fixture.sizes as Record<string, number>;
const a = fixture.args as Record<string, number>;
const args = r2o.args.parse({ hiddenDim: hidden, predictorHiddenDim: predictorHidden, embedDim: D, kStart: a.kStart, kEnd: a.kEnd, curriculumEpochs: a.curriculumEpochs, baseMomentum: a.baseMomentum, lrScaleByK: a.lrScaleByK });
const [W0, H0] = inputs.image_size as [number, number];
const WHOLE = inputs.whole_size as number;

/** Official MLP names (basic_modules.MLP) → ours (engine MlpHead with BN: Linear 0, BN 1, ReLU 2, Linear 3). */
const OURS: Record<string, string | null> = { 'l1.weight': '0.weight', 'l1.bias': null, 'bn1.weight': '1.weight', 'bn1.bias': '1.bias', 'bn1.running_mean': '1.running_mean', 'bn1.running_var': '1.running_var', 'bn1.num_batches_tracked': null, 'l2.weight': '3.weight', 'l2.bias': '3.bias' };

/** Identity "backbone": crop views are C5 maps, the whole-image view is the C4 map (every stage returns the input). */
const identityStages = (): FeatureBackbone => ({ outChannels: C, stageChannels: [C, C, 1024, C], apply: (x) => tf.clone(x), applyStages: (x) => [x, x, x, x].map((t) => tf.clone(t)) });

function load(store: import('../../stages/engine/params.js').ParamStore, prefix: string, state: Record<string, Json>): void {
  for (const [name, t] of Object.entries(state)) {
    const ours = OURS[name];
    if (ours === null) continue; // l1.bias: cancelled by the train-mode BN that follows (see the grads test)
    const value = toOurLayout(`${prefix}.${ours}`, t, store);
    store.get(`${prefix}.${ours}`).assign(value);
    value.dispose();
  }
}

function expectStore(store: import('../../stages/engine/params.js').ParamStore, prefix: string, state: Record<string, Json>, what: string): number {
  let worst = 0;
  for (const [name, t] of Object.entries(state)) {
    const ours = OURS[name];
    if (!ours || name.includes('running') ) continue; // EMA over parameters() only: BN buffers follow their own forwards
    const ref = toOurLayout(`${prefix}.${ours}`, t, store);
    const err = tensorRelErr(store.get(`${prefix}.${ours}`), ref);
    expect(err, `${what} ${name}`).toBeLessThan(REL_TOL);
    worst = Math.max(worst, err);
    ref.dispose();
  }
  return worst;
}

function geometryOf(crop: [number, number, number, number, number]): ViewGeometry {
  const [i, j, h, w, f] = crop;
  return { imageWidth: W0, imageHeight: H0, crop: [j, i, j + w, i + h], width: WHOLE, height: WHOLE, flipped: f === 1 };
}
const whole: ViewGeometry = { imageWidth: W0, imageHeight: H0, crop: [0, 0, W0, H0], width: WHOLE, height: WHOLE, flipped: false };

function slicMaps(): Int32Array[] {
  const rows = inputs.slic as string[];
  return Array.from({ length: B }, (_, b) => {
    const out = new Int32Array(WHOLE * WHOLE);
    for (let y = 0; y < WHOLE; y++) for (let x = 0; x < WHOLE; x++) out[y * WHOLE + x] = rows[b * WHOLE + y]!.charCodeAt(x) - 48;
    return out;
  });
}

/** The C4 map the official _fpn stub returns: 8 given channels, each repeated 128 times, NHWC. */
function c4Map(): tf.Tensor4D {
  return tf.tidy(() => {
    const small = nhwc(inputs.c4_small); // [B, 14, 14, 8]
    const [b, h, w, c] = small.shape;
    return tf.reshape(tf.tile(tf.reshape(small, [b, h, w, c, 1]), [1, 1, 1, 1, inputs.c4_repeat]), [b, h, w, c * inputs.c4_repeat]) as tf.Tensor4D;
  });
}

function build(): R2O {
  const method = new R2O(args, identityStages, 1);
  load(method.online, 'neck', inputs.projector_online);
  load(method.target, 'neck', inputs.projector_target);
  load(method.online, 'predictor', inputs.predictor);
  const idx = inputs.init_idx as number[];
  method.kmeansInit = (x, k) => tf.gather(x, tf.tensor1d(idx.slice(0, k), 'int32')) as tf.Tensor2D;
  return method;
}

function batchOf(regions: Int32Array[]) {
  const crops = inputs.crops as Array<Array<[number, number, number, number, number]>>;
  const geometry = [crops.map((c) => geometryOf(c[0]!)), crops.map((c) => geometryOf(c[1]!)), crops.map(() => whole)];
  const none = { boxes: [], original: [] };
  const proposals: ViewProposals[][] = [crops.map(() => none), crops.map(() => none), regions.map((r) => ({ ...none, regions: r }))];
  return { geometry, proposals };
}

const report: Record<string, number> = {};

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('R2O parity with KKallidromitis/r2o (official modules run under PyTorch)', () => {
  it('matches the loss, every head gradient and the target projector after the EMA, through step', () => {
    const method = build();
    const views = [nhwc(inputs.v1_map), nhwc(inputs.v2_map), c4Map()];
    const { result, grads } = stepCapturing(method, views, batchOf(slicMaps()), a.step, a.totalSteps);
    report.loss = relErr(result.loss, outputs.loss);
    expect(report.loss).toBeLessThan(REL_TOL);
    // every trainable online parameter is a head parameter here (identity backbone); l1.bias is not ours (see below)
    const expected = Object.entries(outputs.grads as Record<string, Json>).filter(([n]) => !n.endsWith('l1.bias'));
    expect([...grads.keys()].sort()).toEqual(expected.map(([n]) => n.replace(/^projector\./, 'neck.').replace(/\.(l1|bn1|l2)\.(weight|bias)$/, (_m, l: string, p: string) => `.${OURS[`${l}.${p}`]}`)).sort());
    let worst = 0;
    const largest = (t: tf.Tensor | Json) => ('data' in t && Array.isArray(t.data) ? Math.max(...t.data.map(Math.abs)) : tf.tidy(() => tf.max(tf.abs(t as tf.Tensor)).dataSync()[0]!));
    for (const [name, t] of expected) {
      const [head, ...rest] = name.split('.');
      const ours = `${head === 'projector' ? 'neck' : 'predictor'}.${OURS[rest.join('.')]}`;
      if (name === 'projector.l2.bias') {
        // A constant shift of the projection is cancelled by the predictor's train-mode BN: the gradient is zero up to
        // round-off on both sides (≈1e-7), so compare it with the scale of the weight's gradient instead.
        const scale = largest(outputs.grads['projector.l2.weight'] as Json);
        expect(largest(t)).toBeLessThan(1e-5 * scale);
        expect(largest(grads.get(ours)!)).toBeLessThan(1e-5 * scale);
        continue;
      }
      const ref = toOurLayout(ours, t, method.online);
      const err = tensorRelErr(grads.get(ours)!, ref);
      expect(err, `grad ${name}`).toBeLessThan(REL_TOL);
      worst = Math.max(worst, err);
      ref.dispose();
    }
    report.grads = worst;
    // the official l1.bias (we have none) gets no gradient: the train-mode BN after it removes any constant shift
    for (const head of ['projector', 'predictor']) {
      const g = (outputs.grads[`${head}.l1.bias`] as Json).data, w = (outputs.grads[`${head}.l1.weight`] as Json).data;
      expect(Math.max(...g.map(Math.abs))).toBeLessThan(1e-5 * Math.max(...w.map(Math.abs)));
    }
    report.target = expectStore(method.target, 'neck', outputs.projector_target_after, 'target after EMA');
    tf.dispose([...views, ...grads.values()]);
    method.dispose();
  });

  it('matches k, the k-means labels, the painted objects, the masks in both views, q, z and the gradient reaching the backbone map', () => {
    const method = build();
    const k = method.clusters(a.step, a.totalSteps);
    expect(k).toBe(outputs.k);
    const regions = slicMaps();
    const c4 = c4Map();
    const objects = method.objectMasks(c4, regions, regions.map(() => whole), k, new Rng(1));
    expect(Array.from(objects.clusterOf)).toEqual(outputs.kmeans_labels);
    expect(objects.clusterOf.length).toBe(B * slots);
    expect(Array.from(objects.objects)).toEqual(outputs.objects.data);
    const { geometry } = batchOf(regions);
    const m1 = method.viewMasks(objects, regions, [WHOLE, WHOLE], geometry[0]!, [grid, grid]);
    const m2 = method.viewMasks(objects, regions, [WHOLE, WHOLE], geometry[1]!, [grid, grid]);
    const masks = tf.concat([m1, m2]) as tf.Tensor3D;
    const refMasks = tf.tensor3d(outputs.masks.data, outputs.masks.shape);
    report.masks = tensorRelErr(masks, refMasks);
    expect(report.masks).toBeLessThan(REL_TOL);
    const [v1, v2] = [nhwc(inputs.v1_map), nhwc(inputs.v2_map)];
    load(method.target, 'neck', outputs.projector_target_after); // z comes from the updated target
    const z = method.targetEmbeddings(tf.concat([v2, v1]) as tf.Tensor4D, tf.concat([m2, m1]) as tf.Tensor3D);
    const refZ = tf.tensor3d(outputs.target_z.data, outputs.target_z.shape);
    report.z = tensorRelErr(z, refZ);
    expect(report.z).toBeLessThan(REL_TOL);
    const onlineMap = tf.concat([v1, v2]) as tf.Tensor4D;
    const q = applyRows(method.predictor, applyRows(method.q.head, maskPool(onlineMap, masks)));
    const refQ = tf.tensor3d(outputs.q.data, outputs.q.shape);
    report.q = tensorRelErr(q, refQ);
    expect(report.q).toBeLessThan(REL_TOL);
    const weights = objectWeights(m1, m2, args);
    expect(tf.sum(weights).dataSync()[0]! / B).toBe(outputs.valid_masks_per_image);
    const gradMap = tf.grad((x: tf.Tensor) => method.onlineLoss(x as tf.Tensor4D, masks, z, weights))(onlineMap);
    const refGrad = nhwc(outputs.grad_online_map);
    report.backboneGrad = tensorRelErr(gradMap, refGrad);
    expect(report.backboneGrad).toBeLessThan(REL_TOL);
    tf.dispose([c4, m1, m2, masks, refMasks, v1, v2, z, refZ, onlineMap, q, refQ, weights, gradMap, refGrad]);
    method.dispose();
  });

  it('follows the official curriculum, lr-by-k and momentum schedules', () => {
    for (const { epoch, k } of outputs.curriculum as Array<{ epoch: number; k: number }>) expect(clusterCount(epoch, a.kStart!, a.kEnd!, a.curriculumEpochs!), `epoch ${epoch}`).toBe(k);
    for (const { epoch, k } of outputs.curriculum_default as Array<{ epoch: number; k: number }>) expect(clusterCount(epoch, 128, 4, 300), `default, epoch ${epoch}`).toBe(k);
    const method = new R2O(args, identityStages, 1);
    expect(method.lrScale(a.step!, a.totalSteps!)).toBeCloseTo(outputs.lr_scale, 12);
    expect(relErr(cosineMomentum(a.step!, a.baseMomentum!, a.totalSteps!), outputs.mm)).toBeLessThan(1e-12);
    method.dispose();
  });

  it('depends on the region priors: one region per image changes the loss and the gradients', () => {
    const run = (regions: Int32Array[]) => {
      const method = build();
      method.kmeansInit = null; // k-means++ on the step's rng (one point per image: k is capped at the point count)
      const views = [nhwc(inputs.v1_map), nhwc(inputs.v2_map), c4Map()];
      const out = stepCapturing(method, views, batchOf(regions), a.step, a.totalSteps);
      tf.dispose(views);
      method.dispose();
      return out;
    };
    const real = run(slicMaps());
    const flat = run(slicMaps().map((r) => new Int32Array(r.length)));
    expect(Number.isFinite(flat.result.loss)).toBe(true);
    expect(relErr(flat.result.loss, real.result.loss)).toBeGreaterThan(1e-2);
    const g1 = real.grads.get('neck.0.weight')!, g2 = flat.grads.get('neck.0.weight')!;
    expect(tensorRelErr(g2, g1)).toBeGreaterThan(1e-2);
    tf.dispose([...real.grads.values(), ...flat.grads.values()]);
  });

  it('declares a whole-image third view that sampleResizedCrop really returns whole, unflipped', () => {
    const views = r2o.consumes.views(32, r2o.args.parse({}));
    expect(views).toHaveLength(3);
    const src = { width: 50, height: 37, data: new Uint8Array(50 * 37 * 3) };
    for (let seed = 0; seed < 20; seed++) {
      const v = augmentView(new Rng(seed), src, views[2]!);
      expect(v.geometry.crop).toEqual([0, 0, 50, 37]);
      expect(v.geometry.flipped).toBe(false);
      expect([v.image.width, v.image.height]).toEqual([32, 32]);
    }
  });

  it('reports its errors', () => {
    // eslint-disable-next-line no-console
    console.log('r2o parity: max relative errors', JSON.stringify(report));
    expect(Object.keys(report).length).toBeGreaterThan(0);
  });
});
