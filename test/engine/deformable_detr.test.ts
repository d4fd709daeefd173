/**
 * Deformable DETR (stages/engine/detr/deformable.ts, deformable_criterion.ts) against amirbar/DETReg@a4b6363's
 * DeformableDETR + def_matcher + SetCriterion RUN under PyTorch 1.13 (test/fixtures/detr/make_deformable_detr_fixtures.py):
 * one forward pass on given backbone maps with a padded image (valid ratios ≠ 1), every decoder layer's outputs, the
 * focal-cost matchings, every loss term (sigmoid focal, L1, GIoU, aux copies), the weighted total and the gradient of
 * every detector parameter, relative error ≤ 1e-4; the official constant initialisations; the focal loss against a
 * per-element loop.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { DeformableDetr, encoderReferencePoints, validRatios, type DeformableDetrConfig } from '../../stages/engine/detr/deformable.js';
import { deformableSetCriterion, sigmoidFocalLoss, type DeformableCriterionConfig } from '../../stages/engine/detr/deformable_criterion.js';
import type { DetrTarget } from '../../stages/engine/detr/matcher.js';
import { disposeGradients, namedGradients } from '../../stages/engine/grads.js';
import { AdamW } from '../../stages/engine/optim.js';
import { ParamStore } from '../../stages/engine/params.js';
import { boolMask, expectClose, expectScalarClose, loadDetrFixture, nhwc, printParityReport, tensor, toOurLayout, type Json } from './detr_fixture.js';

const ref = loadDetrFixture('deformable_detr_reference.json');
const s = ref.sizes;
const config: DeformableDetrConfig = {
  backboneChannels: s.backboneChannels,
  numClasses: s.numClasses,
  numQueries: s.numQueries,
  auxLoss: true,
  transformer: {
    dModel: s.dModel,
    nHead: s.nHead,
    numEncoderLayers: s.numEncoderLayers,
    numDecoderLayers: s.numDecoderLayers,
    dimFeedforward: s.dimFeedforward,
    dropout: 0,
    numFeatureLevels: s.numFeatureLevels,
    encNPoints: s.encNPoints,
    decNPoints: s.decNPoints,
  },
};
const criterionConfig: DeformableCriterionConfig = {
  numClasses: s.numClasses,
  focalAlpha: ref.args.focalAlpha,
  costs: { costClass: ref.args.costs.cost_class, costBbox: ref.args.costs.cost_bbox, costGiou: ref.args.costs.cost_giou },
  weights: { ce: ref.args.weights.loss_ce, bbox: ref.args.weights.loss_bbox, giou: ref.args.weights.loss_giou },
};
const targets = ref.inputs.targets as DetrTarget[];
const keep = <T>(fn: () => T): T => tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as T;

beforeAll(async () => {
  await initBackend('tensorflow');
});
afterAll(() => printParityReport('Deformable DETR vs amirbar/DETReg'));

function build(): { store: ParamStore; model: DeformableDetr } {
  const store = new ParamStore();
  const model = new DeformableDetr(store.scope(''), config, 0);
  const state = ref.inputs.state as Record<string, Json>;
  expect([...store.vars.keys()].sort()).toEqual(Object.keys(state).sort());
  for (const [name, t] of Object.entries(state)) {
    const v = toOurLayout(store, name, t);
    store.get(name).assign(v);
    v.dispose();
  }
  return { store, model };
}

const inputs = () => ({ maps: (ref.inputs.maps as Json[]).map(nhwc), mask: boolMask(ref.inputs.imageMask) as tf.Tensor3D });

describe('DeformableDETR (single stage, no box refinement) vs DETReg', () => {
  it('has the official parameter names and constant initialisations (focal prior, zero box delta with −2 size bias, zero projection biases, unit GroupNorm)', () => {
    const store = new ParamStore();
    new DeformableDetr(store.scope(''), config, 0);
    for (const [name, t] of Object.entries(ref.init as Record<string, Json>)) {
      const want = toOurLayout(store, name, t);
      expectClose(`init ${name}`, store.get(name), want, 1e-6);
      want.dispose();
    }
    // The deformable attention modules keep their own initialisation (ms_deform_attn.test.ts).
    expect(Array.from(store.get('transformer.decoder.layers.0.cross_attn.attention_weights.weight').dataSync()).every((v) => v === 0)).toBe(true);
    store.dispose();
  });

  it('forward pass: every decoder layer, the reference points, logits and boxes', () => {
    const { store, model } = build();
    const { maps, mask } = inputs();
    const out = keep(() => model.apply(maps as tf.Tensor4D[], mask, { training: true }));
    const o = ref.outputs;
    expectClose('hs (every decoder layer)', out.hs, tensor(o.hs));
    expectClose('pred_logits', out.predLogits, tensor(o.predLogits));
    expectClose('pred_boxes', out.predBoxes, tensor(o.predBoxes));
    (o.aux as Array<Record<string, Json>>).forEach((a, l) => {
      expectClose('aux pred_logits', out.auxOutputs![l]!.predLogits, tensor(a.predLogits!));
      expectClose('aux pred_boxes', out.auxOutputs![l]!.predBoxes, tensor(a.predBoxes!));
    });
    tf.dispose([...maps, mask, out as unknown as tf.TensorContainer]);
    store.dispose();
  });

  it('focal-cost matchings of every layer, every loss term, the weighted total and every parameter gradient', () => {
    const { store, model } = build();
    const { maps, mask } = inputs();
    let result: ReturnType<typeof deformableSetCriterion> | undefined;
    const { loss, grads } = namedGradients(() => {
      const out = model.apply(maps as tf.Tensor4D[], mask, { training: true });
      const r = deformableSetCriterion(out, targets, criterionConfig);
      result = { ...r, losses: Object.fromEntries(Object.entries(r.losses).map(([k, v]) => [k, tf.keep(v)])) };
      return r.total;
    }, store.trainable());
    const o = ref.outputs;
    expect(result!.indices.map((layer) => layer.map((m) => [m.src, m.tgt]))).toEqual(o.indices);
    expect(Object.keys(result!.losses).sort()).toEqual(Object.keys(o.losses).sort());
    for (const [name, v] of Object.entries(result!.losses)) expectScalarClose(name.replace(/_\d+$/, '_i'), v.dataSync()[0]!, o.losses[name]);
    expectScalarClose('total', loss.dataSync()[0]!, o.total);
    expectScalarClose('class_error', result!.logs.class_error!, o.classError, 1e-6);
    const expected = o.grads as Record<string, Json>;
    expect([...grads.keys()].sort()).toEqual(Object.keys(expected).sort());
    const largest = Math.max(...Object.values(expected).map((t) => t.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
    for (const [name, t] of Object.entries(expected)) {
      const want = toOurLayout(store, name, t);
      const refMax = tf.tidy(() => tf.max(tf.abs(want)).dataSync()[0]!);
      if (refMax < 1e-6 * largest) {
        // Zero in exact arithmetic: only float32 noise on both sides.
        expect(tf.tidy(() => tf.max(tf.abs(grads.get(name)!)).dataSync()[0]!), `grad ${name} (zero)`).toBeLessThan(1e-6 * largest);
      } else expectClose(`grad ${name.replace(/layers\.\d+/, 'layers.i').replace(/input_proj\.\d+/, 'input_proj.l')}`, grads.get(name)!, want);
      want.dispose();
    }
    disposeGradients(grads);
    tf.dispose([loss, ...Object.values(result!.losses), ...maps, mask]);
    store.dispose();
  });

  it('valid ratios and encoder reference points of a padded image', () => {
    const mask = tf.tidy(() => tf.cast(tf.tensor3d([0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1], [1, 3, 4]), 'bool')) as tf.Tensor3D;
    const ratios = validRatios([mask]);
    expect(ratios).toEqual([[[0.75, Math.fround(2 / 3)]]]);
    const r = encoderReferencePoints([[3, 4]], ratios);
    // Token (y 1, x 2): ((2 + 0.5) / (0.75 · 4), (1 + 0.5) / (2/3 · 3)) scaled by the level's own ratios → (2.5/4, 1.5/3).
    const at = (1 * 4 + 2) * 2;
    expect(r.dataSync()[at]!).toBeCloseTo(2.5 / 4, 6);
    expect(r.dataSync()[at + 1]!).toBeCloseTo(1.5 / 3, 6);
    tf.dispose([mask, r]);
  });

  it('sigmoid focal loss equals a per-element loop (mean over queries, sum, / num_boxes)', () => {
    const [b, q, c] = [2, 3, 4];
    const x = Array.from({ length: b * q * c }, (_, i) => Math.sin(i * 1.7) * 3);
    const y = Array.from({ length: b * q * c }, (_, i) => (i % 5 === 0 ? 1 : 0));
    const [alpha, gamma, numBoxes] = [0.3, 2, 2.5];
    let sum = 0;
    for (let i = 0; i < b * q * c; i++) {
      const p = 1 / (1 + Math.exp(-x[i]!));
      const ce = -(y[i]! * Math.log(p) + (1 - y[i]!) * Math.log(1 - p));
      const pt = p * y[i]! + (1 - p) * (1 - y[i]!);
      sum += (alpha * y[i]! + (1 - alpha) * (1 - y[i]!)) * ce * (1 - pt) ** gamma;
    }
    const loop = sum / q / numBoxes;
    const ours = tf.tidy(() => sigmoidFocalLoss(tf.tensor3d(x, [b, q, c]), tf.tensor3d(y, [b, q, c]), numBoxes, alpha, gamma).dataSync()[0]!);
    expect(Math.abs(ours - loop) / loop).toBeLessThan(1e-5);
  });

  it('training steps keep tf.memory().numTensors flat', () => {
    const { store, model } = build();
    const { maps, mask } = inputs();
    const opt = new AdamW(store.trainable(), { weightDecay: 1e-4 }, store.info);
    const counts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { loss, grads } = namedGradients(() => deformableSetCriterion(model.apply(maps as tf.Tensor4D[], mask, { training: false }), targets, criterionConfig).total, store.trainable());
      opt.step(grads, 1e-4);
      loss.dispose();
      disposeGradients(grads);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
    tf.dispose([...maps, mask]);
    opt.dispose();
    store.dispose();
  });
});
