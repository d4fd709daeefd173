/**
 * Multi-scale deformable attention (stages/engine/detr/ms_deform_attn.ts) against fundamentalvision/Deformable-DETR@11169a6
 * run under PyTorch 1.13 (test/fixtures/detr/make_deformable_fixtures.py): the PyTorch reference path
 * `ms_deform_attn_core_pytorch` (value, sampling locations partly outside the maps, attention weights) and the
 * `MSDeformAttn` module (init, 2-d reference points with a padding mask, 4-d reference boxes), outputs and gradients
 * w.r.t. every input and parameter, relative error ≤ 1e-4; and Deformable DETR's position encoding (−0.5 shift).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { MSDeformAttn, msDeformAttnCore, type SpatialShapes } from '../../stages/engine/detr/ms_deform_attn.js';
import { positionEmbeddingSine } from '../../stages/engine/detr/position_encoding.js';
import { disposeGradients, namedGradients } from '../../stages/engine/grads.js';
import { AdamW } from '../../stages/engine/optim.js';
import { ParamStore } from '../../stages/engine/params.js';
import { boolMask, expectClose, loadDetrFixture, loadState, nhwc, printParityReport, tensor, toOurLayout } from './detr_fixture.js';

const ref = loadDetrFixture('deformable_reference.json');
const shapes = ref.spatialShapes as SpatialShapes;

beforeAll(async () => {
  await initBackend('tensorflow');
});
afterAll(() => printParityReport('Deformable DETR vs fundamentalvision/Deformable-DETR'));

describe('ms_deform_attn_core_pytorch', () => {
  it('output and gradients w.r.t. value, sampling locations and attention weights (2 levels, 2 heads, 4 points)', () => {
    const c = ref.core;
    const value = tf.variable(tensor(c.value));
    const loc = tf.variable(tensor(c.samplingLocations));
    const weights = tf.variable(tensor(c.attentionWeights));
    const up = tensor(c.upstream);
    const out = msDeformAttnCore(value as tf.Tensor4D, shapes, loc, weights);
    expectClose('core output', out, tensor(c.output));
    const { loss, grads } = namedGradients(() => tf.sum(tf.mul(msDeformAttnCore(value as tf.Tensor4D, shapes, loc, weights), up)) as tf.Scalar, new Map([['value', value], ['loc', loc], ['weights', weights]]));
    expectClose('core grad value', grads.get('value')!, tensor(c.gradValue));
    expectClose('core grad sampling_locations', grads.get('loc')!, tensor(c.gradSamplingLocations));
    expectClose('core grad attention_weights', grads.get('weights')!, tensor(c.gradAttentionWeights));
    disposeGradients(grads);
    tf.dispose([value, loc, weights, up, out, loss]);
  });

  it('refuses shapes that do not fit, naming what was expected', () => {
    const value = tf.zeros([1, 5, 2, 4]) as tf.Tensor4D;
    expect(() => msDeformAttnCore(value, [[2, 2]], tf.zeros([1, 3, 2, 1, 4, 2]), tf.zeros([1, 3, 2, 1, 4]))).toThrow(/cover 4 tokens, value has 5/);
    expect(() => msDeformAttnCore(value, [[1, 5]], tf.zeros([1, 3, 2, 2, 4, 2]), tf.zeros([1, 3, 2, 1, 4]))).toThrow(/samplingLocations must be \[1, Lq, 2, 1, P, 2\]/);
    value.dispose();
  });
});

describe('MSDeformAttn', () => {
  it('has the official names, order and initialisation (zero offset weights, direction-grid bias, uniform attention, xavier projections)', () => {
    const store = new ParamStore();
    const attn = new MSDeformAttn(store.scope(''), ref.config, 0);
    expect([...store.vars.keys()]).toEqual(Object.keys(ref.module.init));
    for (const name of ['sampling_offsets.weight', 'sampling_offsets.bias', 'attention_weights.weight', 'attention_weights.bias', 'value_proj.bias', 'output_proj.bias']) {
      const want = toOurLayout(store, name, ref.module.init[name]);
      expect(Array.from(store.get(name).dataSync()), name).toEqual(Array.from(want.dataSync()));
      want.dispose();
    }
    const d = ref.config.dModel;
    const bound = Math.sqrt(6 / (2 * d));
    for (const w of [attn.valueProj.weight, attn.outputProj.weight]) {
      const v = w.dataSync();
      expect(Math.max(...Array.from(v, Math.abs))).toBeLessThanOrEqual(bound);
      expect(Math.max(...Array.from(v, Math.abs))).toBeGreaterThan(bound / 2);
    }
    store.dispose();
  });

  ref.module.cases.forEach((c: any) => {
    it(`${c.referenceDim === 2 ? 'reference points [N, Lq, L, 2] with a padding mask' : 'reference boxes [N, Lq, L, 4]'}: output and gradients w.r.t. query, reference, input and every parameter`, () => {
      const store = new ParamStore();
      const attn = new MSDeformAttn(store.scope(''), ref.config, 0);
      loadState(store, ref.module.state);
      const query = tf.variable(tensor(c.query));
      const refPts = tf.variable(tensor(c.referencePoints));
      const flat = tf.variable(tensor(c.inputFlatten));
      const pad = c.padded ? (boolMask(ref.module.padding) as tf.Tensor2D) : undefined;
      const up = tensor(c.upstream);
      const label = `module ref ${c.referenceDim}-d`;
      const run = () => attn.apply(query as tf.Tensor3D, refPts as tf.Tensor4D, flat as tf.Tensor3D, shapes, pad);
      const out = run();
      expectClose(`${label} output`, out, tensor(c.output));
      const all = new Map([...store.trainable(), ['input:query', query], ['input:ref', refPts], ['input:flat', flat]] as Array<[string, tf.Variable]>);
      const { loss, grads } = namedGradients(() => tf.sum(tf.mul(run(), up)) as tf.Scalar, all);
      expectClose(`${label} grad query`, grads.get('input:query')!, tensor(c.gradQuery));
      expectClose(`${label} grad reference_points`, grads.get('input:ref')!, tensor(c.gradReferencePoints));
      expectClose(`${label} grad input_flatten`, grads.get('input:flat')!, tensor(c.gradInputFlatten));
      for (const [name, t] of Object.entries(c.grads as Record<string, any>)) {
        const want = toOurLayout(store, name, t);
        expectClose(`${label} grad ${name}`, grads.get(name)!, want);
        want.dispose();
      }
      disposeGradients(grads);
      tf.dispose([query, refPts, flat, up, out, loss, ...(pad ? [pad] : [])]);
      store.dispose();
    });
  });

  it('training steps keep tf.memory().numTensors flat', () => {
    const store = new ParamStore();
    const attn = new MSDeformAttn(store.scope('attn'), ref.config, 1);
    const opt = new AdamW(store.vars, { weightDecay: 1e-4 }, store.info);
    const s = shapes.reduce((n, [h, w]) => n + h * w, 0);
    const query = tf.randomNormal([2, 5, ref.config.dModel], 0, 1, 'float32', 1) as tf.Tensor3D;
    const refPts = tf.randomUniform([2, 5, shapes.length, 2], 0, 1, 'float32', 2) as tf.Tensor4D;
    const flat = tf.randomNormal([2, s, ref.config.dModel], 0, 1, 'float32', 3) as tf.Tensor3D;
    const counts: number[] = [];
    for (let i = 0; i < 4; i++) {
      const { loss, grads } = namedGradients(() => tf.mean(tf.square(attn.apply(query, refPts, flat, shapes))) as tf.Scalar, store.vars);
      opt.step(grads, 1e-3);
      loss.dispose();
      disposeGradients(grads);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
    tf.dispose([query, refPts, flat]);
    opt.dispose();
    store.dispose();
  });
});

describe("Deformable DETR's PositionEmbeddingSine", () => {
  it('normalised coordinates shifted by −0.5 (offset option)', () => {
    const p = ref.positionEmbedding;
    const mask = boolMask(p.mask) as tf.Tensor3D;
    const pos = positionEmbeddingSine(mask, { numPosFeats: p.numPosFeats, normalize: true, offset: -0.5 });
    expectClose('position encoding offset -0.5', pos, nhwc(p.pos));
    tf.dispose([mask, pos]);
  });
});
