/**
 * UP-DETR parity with dddzg/up-detr@44c0c6e, the official modules RUN under PyTorch 1.13 on the CPU: `UPDETR` (patch
 * features, grouping, the patch drop, the decoder's block mask, feature_align), `SetCriterion` with `loss_feature`,
 * `engine.train_one_epoch` (the weight_dict sum, clip_grad_norm_ 0.1, AdamW as main.py sets it up). Reference values:
 * test/fixtures/methods/updetr/parity.json, written by `test/fixtures/methods/updetr/make_parity.py` (its docstring
 * says how to rerun it). The frozen CNN hands given maps (the images' and the patches'), so one step exercises exactly
 * the method: outputs of every decoder layer, the matchings, every loss term, the gradients handed to the optimizer
 * (clipped), and AdamW's state and the parameters after the step, with the decay on every parameter.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import type { NamedGradients } from '../../stages/methods/shared/contract.js';
import { drawPatches, groupAttentionMask, patchTargets, UpDetr, updetr, type UpDetrArgs } from '../../stages/methods/updetr.js';
import { createOptimizer } from '../../stages/pretrain/index.js';
import { pretrainConfigSchema } from '../../stages/pretrain/config.js';
import type { DetrTarget } from '../../stages/engine/detr/matcher.js';
import { type Json, loadFixture, nhwc, REL_TOL, relErr, tensorRelErr, toOurLayout } from './parity-helpers.js';

const fixture = loadFixture('updetr');
const s = fixture.sizes as Record<string, number>;
const a = fixture.args;
const args: UpDetrArgs = {
  ...updetr.args.parse({}),
  numPatches: s.numPatches!,
  numQueries: s.numQueries!,
  maskRatio: a.maskRatio,
  hiddenDim: s.dModel!,
  nheads: s.nHead!,
  encLayers: s.numEncoderLayers!,
  decLayers: s.numDecoderLayers!,
  dimFeedforward: s.dimFeedforward!,
  dropout: 0,
  preNorm: true,
  eosCoef: a.eosCoef,
  setCostClass: a.costs.cost_class,
  setCostBbox: a.costs.cost_bbox,
  setCostGiou: a.costs.cost_giou,
  bboxLossCoef: a.weights.loss_bbox,
  giouLossCoef: a.weights.loss_giou,
  featureLossCoef: a.weights.loss_feature,
  clipMaxNorm: a.clipMaxNorm,
};
const B = s.batch!;
const Q = s.numQueries!;
const tensor = (t: Json) => tf.tensor(t.data, t.shape);

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** The frozen CNN of the fixture: the images' map for the image batch, the patches' map for the patches. */
function build(): UpDetr {
  const imageMap = nhwc(fixture.inputs.imageMap);
  const patchMap = nhwc(fixture.inputs.patchMap);
  const method = new UpDetr(args, {
    seed: 1,
    backbone: () => ({ outChannels: s.backboneChannels!, apply: (x) => tf.clone(x.shape[2] === s.imageWidth ? imageMap : patchMap) }),
  });
  const state = fixture.inputs.state as Record<string, Json>;
  expect([...method.online.vars.keys()].sort()).toEqual(Object.keys(state).sort());
  for (const [name, t] of Object.entries(state)) {
    const v = toOurLayout(name, t, method.online);
    method.online.get(name).assign(v);
    v.dispose();
  }
  return method;
}

const images = () => tf.zeros([B, s.imageHeight!, s.imageWidth!, 3]) as tf.Tensor4D;
const patches = () => tf.zeros([B * s.numPatches!, s.patchSize!, s.patchSize!, 3]) as tf.Tensor4D;
const imageMask = () => tf.tidy(() => tf.cast(tensor(fixture.inputs.imageMask), 'bool')) as tf.Tensor3D;
/** torch.rand(Q, B, 1) → [B][Q]. */
const patchDropDraw = (): number[][] => Array.from({ length: B }, (_, b) => Array.from({ length: Q }, (_, q) => fixture.inputs.patchDropDraw.data[q * B + b] as number));
const targets = fixture.inputs.targets as DetrTarget[];

/** Gradients that are zero in exact arithmetic (the first decoder layer's norm1.weight: LayerNorm of the zero tgt) are checked as zeros. */
function expectClose(label: string, ours: tf.Tensor, ref: Json, worst: Record<string, number>, largest: number, name: string, online: UpDetr['online']): void {
  const want = toOurLayout(name, ref, online);
  const refMax = tf.max(tf.abs(want)).dataSync()[0]!;
  if (refMax < 1e-6 * largest) {
    expect(name, `${label} ${name}: only the first decoder layer's norm1 is zero in exact arithmetic`).toMatch(/decoder\.layers\.0\.norm1\.weight$/);
    expect(tf.max(tf.abs(ours)).dataSync()[0]!, `${label} ${name}`).toBeLessThan(1e-6 * largest);
  } else {
    const e = tensorRelErr(ours, want);
    worst[label] = Math.max(worst[label] ?? 0, e);
    expect(e, `${label} ${name}`).toBeLessThan(REL_TOL);
  }
  want.dispose();
}

describe('UP-DETR parity with dddzg/up-detr (official UPDETR + SetCriterion + train_one_epoch run under PyTorch)', () => {
  it('builds the official decoder mask: 0 inside each patch\'s group of Q/N queries, −∞ across', () => {
    const m = groupAttentionMask(Q, s.numPatches!);
    const ref = fixture.outputs.attentionMask as Json;
    expect(Array.from(m.dataSync()).map((v) => (v === -Infinity ? -1e30 : v))).toEqual(ref.data);
    // More patches than queries per patch: the groups are still the patches' (updetr.py's loop would leave NaN rows).
    const wide = groupAttentionMask(6, 3);
    expect(Array.from(wide.dataSync()).slice(0, 6)).toEqual([0, 0, -Infinity, -Infinity, -Infinity, -Infinity]);
    tf.dispose([m, wide]);
  });

  it('matches the official forward pass, matchings and every loss term (each decoder layer)', () => {
    const method = build();
    const [x, p, mask] = [images(), patches(), imageMask()];
    const { features, mask: fmask, patchFeature } = method.encode(x, p, mask);
    const o = fixture.outputs;
    const errors: Record<string, number> = {};
    errors.gtFeature = tensorRelErr(patchFeature, tensor(o.gtFeature));
    const out = tf.tidy(() => {
      const r = method.loss(features, fmask, patchFeature, { targets, patchDropDraw: patchDropDraw() }, { training: true });
      return { ...r.outputs, total: r.total, losses: r.losses, indices: r.indices } as unknown as tf.TensorContainer;
    }) as unknown as ReturnType<UpDetr['loss']>['outputs'] & { total: tf.Scalar; losses: Record<string, tf.Scalar>; indices: ReturnType<UpDetr['loss']>['indices'] };
    const L = s.numDecoderLayers!;
    const layer = (t: tf.Tensor4D, l: number) => tf.squeeze(tf.slice(t, [l, 0, 0, 0], [1, -1, -1, -1]), [0]);
    errors.predLogits = tensorRelErr(out.predLogits, tensor(o.predLogits));
    errors.predBoxes = tensorRelErr(out.predBoxes, tensor(o.predBoxes));
    errors.predFeature = tensorRelErr(layer(out.predFeature!, L - 1), tensor(o.predFeature));
    (o.aux as Array<Record<string, Json>>).forEach((aux, l) => {
      errors[`aux${l}.predLogits`] = tensorRelErr(out.auxOutputs![l]!.predLogits, tensor(aux.predLogits!));
      errors[`aux${l}.predBoxes`] = tensorRelErr(out.auxOutputs![l]!.predBoxes, tensor(aux.predBoxes!));
      errors[`aux${l}.predFeature`] = tensorRelErr(layer(out.predFeature!, l), tensor(aux.predFeature!));
    });
    // The official matcher is called for the last layer, then each aux layer; pairs as (query indices, target indices).
    expect(out.indices.map((layerMatch) => layerMatch.map((m) => [m.src, m.tgt]))).toEqual(o.indices);
    const ref = o.losses as Record<string, number>;
    for (const name of Object.keys(out.losses)) errors[name] = relErr(out.losses[name]!.dataSync()[0]!, ref[name]!);
    expect(Object.keys(out.losses).sort()).toEqual(Object.keys(ref).filter((k) => k.startsWith('loss_')).sort());
    errors.total = relErr(out.total.dataSync()[0]!, o.total);
    console.log('UP-DETR forward/loss max relative error', errors);
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(REL_TOL);
    tf.dispose([x, p, mask, features, fmask, patchFeature, out as unknown as tf.TensorContainer]);
    method.dispose();
  });

  it('hands the optimizer the official clipped gradients, and AdamW (decay on every parameter) leaves the official state', () => {
    const method = build();
    const config = pretrainConfigSchema.parse({ method: 'updetr', optimizer: { weightDecay: a.weightDecay } });
    expect(config.optimizer).toMatchObject({ kind: 'adamw', momentum: 0.9 });
    const optimizer = createOptimizer(config, method.online);
    // The CNN is frozen: the optimizer holds the detector only.
    expect([...method.online.trainable().keys()].every((n) => !n.startsWith('backbone.'))).toBe(true);
    let grads: NamedGradients = new Map();
    const [x, p, mask] = [images(), patches(), imageMask()];
    const result = method.train(
      { images: x, imageMask: mask, patches: p, targets, patchDropDraw: patchDropDraw() },
      {
        rng: new Rng(1),
        applyGradients: (g) => {
          grads = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]));
          optimizer.step(g, a.lr);
        },
      },
    );
    const o = fixture.outputs;
    expect(relErr(result.loss, o.total)).toBeLessThan(REL_TOL);
    expect(relErr(Object.values(result.parts).reduce((u, v) => u + v, 0), o.total)).toBeLessThan(REL_TOL);
    const ref = o.grads as Record<string, Json>;
    expect([...grads.keys()].sort()).toEqual(Object.keys(ref).sort());
    const largest = Math.max(...Object.values(ref).map((t) => Math.max(...t.data.map(Math.abs))));
    const worst: Record<string, number> = {};
    // Clipped: the official total norm is above 0.1, so every gradient was scaled by 0.1 / ‖g‖.
    expect(o.totalNorm).toBeGreaterThan(a.clipMaxNorm);
    for (const [name, t] of Object.entries(ref)) expectClose('grad (clipped)', grads.get(name)!, t, worst, largest, name, method.online);
    const slots = optimizer.slots();
    const avgLargest = largest * 0.1;
    for (const [name, t] of Object.entries(o.expAvg as Record<string, Json>)) expectClose('exp_avg', slots.get(`exp_avg/${name}`)!, t, worst, avgLargest, name, method.online);
    for (const [name, t] of Object.entries(o.expAvgSq as Record<string, Json>)) expectClose('exp_avg_sq', slots.get(`exp_avg_sq/${name}`)!, t, worst, avgLargest ** 2, name, method.online);
    // Parameters after the step. Where a gradient is zero in exact arithmetic (the key bias of every attention: softmax
    // ignores a constant per query; the first decoder layer's self-attention query/key part: its values are all equal),
    // both sides hold float32 noise and Adam's first step moves by lr·g/(|g| + ε), anywhere in ±lr: there only the
    // bound is checked, everywhere else the value.
    let noisy = 0;
    for (const [name, t] of Object.entries(o.paramsAfter as Record<string, Json>)) {
      const want = toOurLayout(name, t, method.online);
      const g = toOurLayout(name, ref[name]!, method.online);
      const [e, bound, n] = tf.tidy(() => {
        // Gradients exactly 0 on both sides (dead ReLUs) give the same update: compared by value too.
        const zeroBoth = tf.logicalAnd(tf.equal(g, 0), tf.equal(grads.get(name)!, 0));
        const meaningful = tf.logicalOr(tf.greaterEqual(tf.abs(g), 1e-6 * largest), zeroBoth);
        const diff = tf.abs(tf.sub(method.online.get(name), want));
        return [
          tf.max(tf.where(meaningful, diff, tf.zerosLike(diff))).dataSync()[0]! / tf.max(tf.abs(want)).dataSync()[0]!,
          tf.max(tf.where(meaningful, tf.zerosLike(diff), diff)).dataSync()[0]!,
          tf.sum(tf.cast(tf.logicalNot(meaningful), 'int32')).dataSync()[0]!,
        ];
      });
      noisy += n;
      worst['parameter after the step'] = Math.max(worst['parameter after the step'] ?? 0, e);
      expect(e, `after the step: ${name}`).toBeLessThan(REL_TOL);
      expect(bound, `after the step: ${name}, elements with a zero gradient`).toBeLessThanOrEqual(2 * a.lr);
      tf.dispose([want, g]);
    }
    // About the elements named above (8 key biases, the first decoder self-attention's query bias and q/k weights) and a
    // few more tiny gradients: a small part of the detector.
    const elements = [...method.online.trainable().values()].reduce((n, v) => n + v.size, 0);
    expect(noisy).toBeGreaterThanOrEqual(2 * 16 * 16);
    expect(noisy / elements).toBeLessThan(0.05);
    console.log('UP-DETR step max relative error', worst, `(${noisy} of ${elements} elements with a zero gradient)`);
    tf.dispose([x, p, mask, ...grads.values()]);
    optimizer.dispose();
    method.dispose();
  });

  it('draws patches as selfdet.py does: sides in [min, S − min], inside the image, the box its normalised (cx, cy, w, h)', () => {
    const rng = new Rng(3);
    const drawn = drawPatches(rng, 50, 40, 32, 10, 8);
    for (const [x, y, w, h] of drawn.flat()) {
      expect(w!).toBeGreaterThanOrEqual(8);
      expect(w!).toBeLessThanOrEqual(32);
      expect(h!).toBeGreaterThanOrEqual(8);
      expect(h!).toBeLessThanOrEqual(24);
      expect(x! + w!).toBeLessThanOrEqual(40);
      expect(y! + h!).toBeLessThanOrEqual(32);
    }
    const sides = new Set(drawn.flat().map((b) => b[2]));
    expect(sides.has(8) && sides.has(32)).toBe(true);
    const [t] = patchTargets([[[4, 6, 10, 20]]], 40, 32);
    expect(t).toEqual({ labels: [1], boxes: [[9 / 40, 16 / 32, 10 / 40, 20 / 32]] });
  });
});
