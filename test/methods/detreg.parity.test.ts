/**
 * DETReg parity with amirbar/DETReg@a4b6363, the official modules RUN under PyTorch 1.13 on the CPU: `DeformableDETR`
 * with `feature_embed` ('intermediate'), `SetCriterion` with `loss_object_embedding`, the focal-cost matcher,
 * `engine.train_one_epoch` (the crops through the frozen embedding model, the weight_dict sum, clip_grad_norm_ 0.1) and
 * AdamW over main.py's param groups (reference_points / sampling_offsets at lr × 0.1). Reference values:
 * test/fixtures/methods/detreg/parity.json, written by `test/fixtures/methods/detreg/make_parity.py` (its docstring says
 * how to rerun it). The frozen backbone hands given maps (the image's C3..C5, the crops' layer2), so one step exercises
 * exactly the method: every decoder layer's outputs, the embeddings, the matchings, every loss term, the clipped
 * gradients handed to the optimizer, AdamW's state and the parameters after the step.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import type { Box, ViewGeometry } from '../../stages/data/geometry.js';
import type { DetrTarget } from '../../stages/engine/detr/matcher.js';
import { DetReg, detectionTargets, detreg, type DetRegArgs } from '../../stages/methods/detreg.js';
import type { FeatureBackbone, NamedGradients } from '../../stages/methods/shared/contract.js';
import { pretrainConfigSchema } from '../../stages/pretrain/config.js';
import { createOptimizer } from '../../stages/pretrain/index.js';
import { type Json, loadFixture, nhwc, REL_TOL, relErr, tensorRelErr, toOurLayout } from './parity-helpers.js';

const fixture = loadFixture('detreg');
const s = fixture.sizes;
const a = fixture.args;
const args: DetRegArgs = {
  ...detreg.args.parse({}),
  numQueries: s.numQueries,
  numClasses: s.numClasses,
  hiddenDim: s.dModel,
  nheads: s.nHead,
  encLayers: s.numEncoderLayers,
  decLayers: s.numDecoderLayers,
  dimFeedforward: s.dimFeedforward,
  dropout: 0,
  numFeatureLevels: s.numFeatureLevels,
  encNPoints: s.encNPoints,
  decNPoints: s.decNPoints,
  focalAlpha: a.focalAlpha,
  setCostClass: a.costs.cost_class,
  setCostBbox: a.costs.cost_bbox,
  setCostGiou: a.costs.cost_giou,
  clsLossCoef: a.weights.loss_ce,
  bboxLossCoef: a.weights.loss_bbox,
  giouLossCoef: a.weights.loss_giou,
  objectEmbeddingCoef: a.objectEmbeddingCoef,
  clipMaxNorm: a.clipMaxNorm,
};
const B = s.batch as number;
const tensor = (t: Json) => tf.tensor(t.data, t.shape);
const targets = fixture.inputs.targets as DetrTarget[];
const numCrops = targets.reduce((n, t) => n + t.labels.length, 0);

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** The frozen backbone of the fixture: the image's C3..C5 for the image batch, the crops' layer2 for the crops. */
function givenBackbone(): FeatureBackbone {
  const maps = (fixture.inputs.maps as Json[]).map(nhwc);
  const crops = tf.concat((fixture.inputs.cropMaps as Json[]).map(nhwc)) as tf.Tensor4D;
  const [c3, c4, c5] = s.backboneChannels as number[];
  const stub = (x: tf.Tensor4D) => tf.zeros([x.shape[0], 1, 1, 1]) as tf.Tensor4D;
  return {
    outChannels: c5!,
    stageChannels: [1, c3!, c4!, c5!],
    apply: () => {
      throw new Error('DETReg reads the stages');
    },
    applyStages: (x) => (x.shape[2] === s.imageWidth ? [stub(x), ...maps.map((m) => tf.clone(m))] : [stub(x), tf.clone(crops), stub(x), stub(x)]),
  };
}

function build(): DetReg {
  const method = new DetReg(args, { seed: 1, backbone: () => givenBackbone() });
  const state = fixture.inputs.state as Record<string, Json>;
  expect([...method.online.vars.keys()].sort()).toEqual(Object.keys(state).sort());
  for (const [name, t] of Object.entries(state)) {
    const v = toOurLayout(name, t, method.online);
    method.online.get(name).assign(v);
    v.dispose();
  }
  return method;
}

const images = () => tf.zeros([B, s.imageHeight, s.imageWidth, 3]) as tf.Tensor4D;
const crops = () => tf.zeros([numCrops, s.patchSize, s.patchSize, 3]) as tf.Tensor4D;
const imageMask = () => tf.tidy(() => tf.cast(tensor(fixture.inputs.imageMask), 'bool')) as tf.Tensor3D;

/** Parity of one tensor, or — where the reference is zero in exact arithmetic (float32 noise only) — that ours is too. */
function expectClose(label: string, ours: tf.Tensor, ref: Json, worst: Record<string, number>, largest: number, name: string, method: DetReg): void {
  const want = toOurLayout(name, ref, method.online);
  const refMax = tf.tidy(() => tf.max(tf.abs(want)).dataSync()[0]!);
  if (refMax < 1e-6 * largest) {
    expect(tf.tidy(() => tf.max(tf.abs(ours)).dataSync()[0]!), `${label} ${name} (zero)`).toBeLessThan(1e-6 * largest);
  } else {
    const e = tensorRelErr(ours, want);
    worst[label] = Math.max(worst[label] ?? 0, e);
    expect(e, `${label} ${name}`).toBeLessThan(REL_TOL);
  }
  want.dispose();
}

describe('DETReg parity with amirbar/DETReg (official DeformableDETR + SetCriterion + train_one_epoch run under PyTorch)', () => {
  it('matches the official forward pass, embeddings, matchings and every loss term', () => {
    const method = build();
    const [x, c, mask] = [images(), crops(), imageMask()];
    const { features, embeddings } = method.encode(x, c);
    const o = fixture.outputs;
    const errors: Record<string, number> = { embeddings: tensorRelErr(embeddings, tensor(o.embeddings)) };
    const out = tf.tidy(() => {
      const r = method.loss(features, mask, embeddings, targets, { training: true });
      return { ...r.outputs, total: r.total, losses: r.losses, parts: r.parts, indices: r.indices } as unknown as tf.TensorContainer;
    }) as unknown as ReturnType<DetReg['loss']>['outputs'] & Pick<ReturnType<DetReg['loss']>, 'total' | 'losses' | 'parts' | 'indices'>;
    errors.predLogits = tensorRelErr(out.predLogits, tensor(o.predLogits));
    errors.predBoxes = tensorRelErr(out.predBoxes, tensor(o.predBoxes));
    errors.predFeatures = tensorRelErr(out.predFeatures, tensor(o.predFeatures));
    (o.aux as Array<Record<string, Json>>).forEach((aux, l) => {
      errors[`aux${l}.predLogits`] = tensorRelErr(out.auxOutputs![l]!.predLogits, tensor(aux.predLogits!));
      errors[`aux${l}.predBoxes`] = tensorRelErr(out.auxOutputs![l]!.predBoxes, tensor(aux.predBoxes!));
    });
    expect(out.indices.map((layer) => layer.map((m) => [m.src, m.tgt]))).toEqual(o.indices);
    const ref = o.losses as Record<string, number>;
    expect(Object.keys(out.losses).sort()).toEqual(Object.keys(ref).sort());
    for (const name of Object.keys(out.losses)) errors[name] = relErr(out.losses[name]!.dataSync()[0]!, ref[name]!);
    errors.total = relErr(out.total.dataSync()[0]!, o.total);
    const partsSum = Object.values(out.parts).reduce((u, v) => u + v.dataSync()[0]!, 0);
    errors['parts sum'] = relErr(partsSum, o.total);
    console.log('DETReg forward/loss max relative error', errors);
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(REL_TOL);
    tf.dispose([x, c, mask, ...features, embeddings, out as unknown as tf.TensorContainer]);
    method.dispose();
  });

  it('hands the optimizer the official clipped gradients; AdamW (decay on every parameter, reference_points / sampling_offsets at lr × 0.1) leaves the official state', () => {
    const method = build();
    const config = pretrainConfigSchema.parse({ method: 'detreg', optimizer: { weightDecay: a.weightDecay } });
    expect(config.optimizer).toMatchObject({ kind: 'adamw', momentum: 0.9 });
    expect(detreg.optimizer.lrMultiplier).toEqual({ match: ['reference_points', 'sampling_offsets'], scale: a.linearProjMult });
    const optimizer = createOptimizer(config, method.online);
    expect([...method.online.trainable().keys()].every((n) => !n.startsWith('backbone.'))).toBe(true);
    let grads: NamedGradients = new Map();
    const [x, c, mask] = [images(), crops(), imageMask()];
    const result = method.train(
      { images: x, imageMask: mask, crops: c, targets },
      {
        rng: new Rng(1),
        applyGradients: (g) => {
          grads = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]));
          optimizer.step(g, a.lr);
        },
      },
    );
    const o = fixture.outputs;
    const worst: Record<string, number> = { total: relErr(result.loss, o.total), 'parts sum': relErr(Object.values(result.parts).reduce((u, v) => u + v, 0), o.total) };
    expect(Object.keys(result.parts).sort()).toEqual(['bbox', 'ce', 'giou', 'object_embedding']);
    const ref = o.grads as Record<string, Json>;
    expect([...grads.keys()].sort()).toEqual(Object.keys(ref).sort());
    const largest = Math.max(...Object.values(ref).map((t) => Math.max(...t.data.map(Math.abs))));
    expect(o.totalNorm).toBeGreaterThan(a.clipMaxNorm); // clipped: every gradient scaled by 0.1 / ‖g‖
    for (const [name, t] of Object.entries(ref)) expectClose('grad (clipped)', grads.get(name)!, t, worst, largest, name, method);
    const slots = optimizer.slots();
    const avgLargest = largest * 0.1;
    for (const [name, t] of Object.entries(o.expAvg as Record<string, Json>)) expectClose('exp_avg', slots.get(`exp_avg/${name}`)!, t, worst, avgLargest, name, method);
    for (const [name, t] of Object.entries(o.expAvgSq as Record<string, Json>)) expectClose('exp_avg_sq', slots.get(`exp_avg_sq/${name}`)!, t, worst, avgLargest ** 2, name, method);
    // Parameters after the step. Where a gradient is zero in exact arithmetic (the key bias of the decoder's
    // self-attention, the conv biases before GroupNorm, …) both sides hold float32 noise and Adam's first step moves by
    // lr·g/(|g| + ε), anywhere in ±lr of the parameter's group: there only that bound is checked, everywhere else the value.
    let noisy = 0;
    for (const [name, t] of Object.entries(o.paramsAfter as Record<string, Json>)) {
      const lr = a.lr * (/reference_points|sampling_offsets/.test(name) ? a.linearProjMult : 1);
      const want = toOurLayout(name, t, method.online);
      const g = toOurLayout(name, ref[name]!, method.online);
      const [e, bound, n] = tf.tidy(() => {
        const zeroBoth = tf.logicalAnd(tf.equal(g, 0), tf.equal(grads.get(name)!, 0));
        const meaningful = tf.logicalOr(tf.greaterEqual(tf.abs(g), 1e-6 * largest * 0.1), zeroBoth);
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
      expect(bound, `after the step: ${name}, elements with a zero gradient`).toBeLessThanOrEqual(2 * lr);
      tf.dispose([want, g]);
    }
    const elements = [...method.online.trainable().values()].reduce((n, v) => n + v.size, 0);
    expect(noisy / elements).toBeLessThan(0.05);
    console.log('DETReg step max relative error', worst, `(${noisy} of ${elements} elements with a zero gradient)`);
    for (const [k, e] of Object.entries(worst)) expect(e, k).toBeLessThan(REL_TOL);
    tf.dispose([x, c, mask, ...grads.values()]);
    optimizer.dispose();
    method.dispose();
  });

  it('targets: the first maxProp stored boxes the detection view keeps (clipped, flipped), their original boxes for the crops', () => {
    const g: ViewGeometry = { imageWidth: 200, imageHeight: 100, crop: [50, 0, 150, 100], width: 50, height: 50, flipped: true };
    const original: Box[] = [
      [60, 10, 100, 50], // inside
      [0, 0, 40, 40], // outside the crop: dropped
      [140, 50, 180, 90], // clipped at x = 150
      [60, 60, 70, 70], // beyond maxProp
    ];
    const { target, kept } = detectionTargets(original, g, 3);
    expect(kept).toEqual([original[0], original[2]]);
    expect(target.labels).toEqual([1, 1]);
    // Box 0 in the view: x (60..100 − 50) / 2 = 5..25, flipped → 25..45; y 5..25.
    expect(target.boxes[0]!.map((v) => +v.toFixed(6))).toEqual([35 / 50, 15 / 50, 20 / 50, 20 / 50]);
    // Box 2 clipped to 140..150 → view 45..50, flipped 0..5; y 25..45.
    expect(target.boxes[1]!.map((v) => +v.toFixed(6))).toEqual([2.5 / 50, 35 / 50, 5 / 50, 20 / 50]);
  });
});
