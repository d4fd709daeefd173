/**
 * PixPro parity with zdaxie/PixPro@e390d6b contrast/models/PixPro.py, RUN under PyTorch on identical inputs and weights.
 * Reference values: test/fixtures/methods/pixpro/parity.json, written by
 * `PIXPRO_OFFICIAL=<checkout> /usr/bin/python3 test/fixtures/methods/pixpro/make_parity.py` (see its docstring), which
 * imports the official PixPro class (backbone = the official Identity) and the official coordinate transforms. So this
 * exercises exactly the method: projector (MLP2d + BN), pixel propagation, normalisations, geometric masks from
 * ViewGeometry, the symmetric −2·mean loss, the cosine momentum schedule at step k = 4 of 10 and the EMA, through `step`;
 * and, from the fixture's `instance` case, the instance branch (`insLossWeight` 0.7 on a 7×7 map: instance projector,
 * predictor, pooling, the BYOL-style term, its EMA). The data path before the masks: test/methods/pixpro-geometry.test.ts.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { pixproCoords, type ViewGeometry } from '../../stages/data/geometry.js';
import { pixpro, PixPro, pixproLoss, pixproMasks, pixproTargets, type PixProTargets } from '../../stages/methods/pixpro.js';
import type { ParamStore } from '../../stages/engine/params.js';
import { identityBackbone, loadFixture, nhwc, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout, type Json } from './parity-helpers.js';

const fixture = loadFixture('pixpro');
const { B, C, h, w, hidden, D } = fixture.sizes as Record<string, number>;
const args = { ...pixpro.args.parse({}), projectorHidden: hidden, projectorOut: D, gamma: fixture.gamma, posRatio: fixture.posRatio, clampValue: fixture.clampValue, momentum: fixture.baseMomentum, transformLayer: 1 as const };
const geometry = fixture.inputs.geometry as ViewGeometry[][];
/** Largest relative error seen per quantity (printed at the end, quoted on the card). */
const measured: Record<string, number> = {};
const record = (what: string, err: number) => (measured[what] = Math.max(measured[what] ?? 0, err));

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** Official module state (`linear1.weight`, …) → our ParamStore under `prefix` (`neck`, `ppm.value_transform`). */
function load(store: ParamStore, prefix: string, state: Record<string, Json>): void {
  for (const [name, t] of Object.entries(state)) {
    const value = toOurLayout(`${prefix}.${name}`, t, store);
    store.get(`${prefix}.${name}`).assign(value);
    value.dispose();
  }
}

function expectMatches(what: string, ours: tf.Tensor, ref: Json | tf.Tensor, store?: ParamStore, name?: string): void {
  const expected = ref instanceof tf.Tensor ? ref : store ? toOurLayout(name!, ref, store) : tf.tensor(ref.data, ref.shape);
  const err = tensorRelErr(ours, expected);
  record(what, err);
  expect(err, `${what} ${name ?? ''}`).toBeLessThan(REL_TOL);
  if (expected !== ref) expected.dispose();
}

function build(): PixPro {
  const method = new PixPro(args, () => identityBackbone(C), 1);
  load(method.online, 'neck', fixture.inputs.projector);
  load(method.online, 'ppm.value_transform', fixture.inputs.value_transform);
  load(method.momentumEncoder, 'neck', fixture.inputs.projector_k);
  return method;
}

describe('PixPro parity with zdaxie/PixPro PixPro.py', () => {
  it('matches the loss, every head gradient, the momentum projector and the BN buffers after one step', () => {
    const { inputs, outputs } = fixture;
    const method = build();
    const views = [nhwc(inputs.f1), nhwc(inputs.f2)];
    const { result, grads } = stepCapturing(method, views, { geometry }, fixture.step, fixture.totalSteps);

    record('loss', relErr(result.loss, outputs.loss));
    expect(relErr(result.loss, outputs.loss)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.view0! + result.parts.view1!, outputs.loss)).toBeLessThan(REL_TOL);
    const refGrads = Object.entries(outputs.grads as Record<string, Json>).map(([n, t]) => [n.replace(/^projector\./, 'neck.').replace(/^value_transform\./, 'ppm.value_transform.'), t] as const);
    expect([...grads.keys()].sort()).toEqual(refGrads.map(([n]) => n).sort());
    for (const [name, t] of refGrads) {
      if (name === 'neck.linear1.bias') {
        // The bias in front of BatchNorm has a zero gradient in exact arithmetic (BN subtracts the batch mean):
        // PyTorch's is float noise (|g| < 1e-8), so relative error is meaningless; both must be ~0 next to the weight's.
        const scale = tf.tidy(() => tf.max(tf.abs(grads.get('neck.linear1.weight')!)).dataSync()[0]!);
        const ours = tf.tidy(() => tf.max(tf.abs(grads.get(name)!)).dataSync()[0]!);
        record('grad neck.linear1.bias (|g| / |g_weight|, exactly 0 in exact arithmetic)', ours / scale);
        expect(ours / scale).toBeLessThan(REL_TOL);
        expect(Math.max(...t.data.map(Math.abs)) / scale).toBeLessThan(REL_TOL);
        continue;
      }
      expectMatches(name.startsWith('ppm') ? 'grad ppm' : 'grad projector', grads.get(name)!, t, method.online, name);
    }
    // ξ after the EMA with m_k = 1 − 0.01·(cos(π·4/10)+1)/2 (parameters), and BN buffers after the two key forwards
    for (const [name, t] of Object.entries(outputs.projector_k_after as Record<string, Json>)) {
      expectMatches(name.includes('running') ? 'momentum BN buffers' : 'momentum projector', method.momentumEncoder.get(`neck.${name}`), t, method.momentumEncoder, `neck.${name}`);
    }
    for (const [name, t] of Object.entries(outputs.projector_after as Record<string, Json>)) expectMatches('online BN buffers', method.online.get(`neck.${name}`), t, method.online, `neck.${name}`);
    tf.dispose([...views, ...grads.values()]);
    method.dispose();
  });

  it('builds the official positive masks from ViewGeometry (transform_coord.py convention, flips included)', () => {
    const { inputs, outputs } = fixture;
    for (const [v, ref] of [[0, inputs.coord1], [1, inputs.coord2]] as const) {
      const ours = tf.tensor2d(geometry[v]!.map(pixproCoords));
      expectMatches('coords', ours, ref);
      ours.dispose();
    }
    expect(geometry.flat().some((g) => g.flipped)).toBe(true);
    expect(outputs.positives12).toContain(0); // an image with no positive pair: contributes 0 through the +1e-6
    const m12 = pixproMasks(geometry[0]!, geometry[1]!, h, fixture.posRatio);
    const m21 = pixproMasks(geometry[1]!, geometry[0]!, h, fixture.posRatio);
    expect(Array.from(m12.dataSync())).toEqual(outputs.mask12);
    expect(Array.from(m21.dataSync())).toEqual(outputs.mask21);
    expect(Array.from(tf.sum(m12, [1, 2]).dataSync())).toEqual(outputs.positives12);
    tf.dispose([m12, m21]);
  });

  it('matches the gradient reaching both online backbone feature maps', () => {
    const { inputs, outputs } = fixture;
    const method = build();
    load(method.momentumEncoder, 'neck', outputs.projector_k_after); // targets come from the updated momentum projector
    const [f1, f2] = [nhwc(inputs.f1), nhwc(inputs.f2)];
    const targets: [PixProTargets, PixProTargets] = [pixproTargets(method.k, f1), pixproTargets(method.k, f2)];
    const masks: [tf.Tensor3D, tf.Tensor3D] = [pixproMasks(geometry[0]!, geometry[1]!, h, fixture.posRatio), pixproMasks(geometry[1]!, geometry[0]!, h, fixture.posRatio)];
    const online = { heads: method.q.head, ppm: method.ppm, predictor: method.predictor };
    const [g1, g2] = tf.grads((a: tf.Tensor, b: tf.Tensor) => pixproLoss(online, [a as tf.Tensor4D, b as tf.Tensor4D], targets, masks).loss)([f1, f2]);
    const [e1, e2] = [nhwc(outputs.grad_f1), nhwc(outputs.grad_f2)];
    expectMatches('grad feature map', g1!, e1);
    expectMatches('grad feature map', g2!, e2);
    tf.dispose([f1, f2, g1!, g2!, e1, e2, ...targets.map((t) => t.pixel), ...masks]);
    method.dispose();
  });

  it('matches the instance branch (λ = 0.7, 7×7 map): loss and its terms, every gradient, both momentum projectors, every BN buffer', () => {
    const ins = fixture.instance;
    const { inputs, outputs } = ins;
    const geom = inputs.geometry as ViewGeometry[][];
    const sizes = ins.sizes as Record<string, number>;
    const method = new PixPro({ ...args, insLossWeight: ins.insLossWeight, projectorHidden: sizes.hidden!, projectorOut: sizes.D! }, () => identityBackbone(sizes.C!), 1);
    expect(method.predictor).not.toBeNull();
    const prefixes = { projector: 'neck', projector_instance: 'neck_instance', predictor: 'predictor', value_transform: 'ppm.value_transform' } as Record<string, string>;
    const momentumPrefixes = { projector_k: 'neck', projector_instance_k: 'neck_instance' } as Record<string, string>;
    for (const [torch, ours] of Object.entries(prefixes)) load(method.online, ours, inputs[torch]);
    for (const [torch, ours] of Object.entries(momentumPrefixes)) load(method.momentumEncoder, ours, inputs[torch]);
    const views = [nhwc(inputs.f1), nhwc(inputs.f2)];
    const { result, grads } = stepCapturing(method, views, { geometry: geom }, fixture.step, fixture.totalSteps);

    for (const [what, ours, ref] of [
      ['instance loss', result.loss, outputs.loss],
      ['instance-case pixel terms', result.parts.view0! + result.parts.view1!, outputs.lossPixel],
      ['instance term (λ-weighted)', result.parts.instance!, outputs.lossInstance],
    ] as const) {
      record(what, relErr(ours, ref));
      expect(relErr(ours, ref), what).toBeLessThan(REL_TOL);
    }
    const rename = (n: string) => n.replace(/^([a-z_]+)\./, (_, m: string) => `${prefixes[m]}.`);
    const refGrads = Object.entries(outputs.grads as Record<string, Json>).map(([n, t]) => [rename(n), t] as const);
    expect([...grads.keys()].sort()).toEqual(refGrads.map(([n]) => n).sort());
    for (const [name, t] of refGrads) {
      // A bias in front of BatchNorm has a zero gradient in exact arithmetic (see the first test): every `linear1.bias`, and
      // the instance projector's `linear2.bias`, which feeds the predictor's linear1 → BN. Both must be ~0 next to the weight's.
      if ((name.endsWith('linear1.bias') && !name.startsWith('ppm')) || name === 'neck_instance.linear2.bias') {
        const scale = tf.tidy(() => tf.max(tf.abs(grads.get(name.replace('bias', 'weight'))!)).dataSync()[0]!);
        const ours = tf.tidy(() => tf.max(tf.abs(grads.get(name)!)).dataSync()[0]!);
        record('instance case: grads of biases in front of BN (|g| / |g_weight|)', ours / scale);
        expect(ours / scale).toBeLessThan(REL_TOL);
        expect(Math.max(...t.data.map(Math.abs)) / scale).toBeLessThan(REL_TOL);
        continue;
      }
      expectMatches(`instance case: grad ${name.split('.')[0]}`, grads.get(name)!, t, method.online, name);
    }
    for (const [torch, ours] of Object.entries(momentumPrefixes)) {
      for (const [name, t] of Object.entries(outputs.momentum_after[torch] as Record<string, Json>)) {
        expectMatches(`instance case: momentum ${ours}${name.includes('running') ? ' BN buffers' : ''}`, method.momentumEncoder.get(`${ours}.${name}`), t, method.momentumEncoder, `${ours}.${name}`);
      }
    }
    for (const [torch, buffers] of Object.entries(outputs.online_buffers_after as Record<string, Record<string, Json>>)) {
      for (const [name, t] of Object.entries(buffers)) expectMatches(`instance case: online BN buffers`, method.online.get(`${prefixes[torch]}.${name}`), t, method.online, `${prefixes[torch]}.${name}`);
    }
    tf.dispose([...views, ...grads.values()]);
    method.dispose();
  });

  it('matches the gradient reaching both online feature maps with the instance branch on', () => {
    const ins = fixture.instance;
    const { inputs, outputs } = ins;
    const geom = inputs.geometry as ViewGeometry[][];
    const sizes = ins.sizes as Record<string, number>;
    const method = new PixPro({ ...args, insLossWeight: ins.insLossWeight, projectorHidden: sizes.hidden!, projectorOut: sizes.D! }, () => identityBackbone(sizes.C!), 1);
    for (const [torch, ours] of [['projector', 'neck'], ['projector_instance', 'neck_instance'], ['predictor', 'predictor'], ['value_transform', 'ppm.value_transform']]) load(method.online, ours!, inputs[torch!]);
    // targets come from the momentum projectors after the EMA
    for (const [torch, ours] of [['projector_k', 'neck'], ['projector_instance_k', 'neck_instance']]) load(method.momentumEncoder, ours!, outputs.momentum_after[torch!]);
    const [f1, f2] = [nhwc(inputs.f1), nhwc(inputs.f2)];
    const targets: [PixProTargets, PixProTargets] = [pixproTargets(method.k, f1), pixproTargets(method.k, f2)];
    const masks: [tf.Tensor3D, tf.Tensor3D] = [pixproMasks(geom[0]!, geom[1]!, sizes.h!, fixture.posRatio), pixproMasks(geom[1]!, geom[0]!, sizes.h!, fixture.posRatio)];
    expect(Array.from(tf.sum(masks[0], [1, 2]).dataSync())).toEqual(outputs.positives12);
    const online = { heads: method.q.head, ppm: method.ppm, predictor: method.predictor };
    const [g1, g2] = tf.grads((a: tf.Tensor, b: tf.Tensor) => pixproLoss(online, [a as tf.Tensor4D, b as tf.Tensor4D], targets, masks, ins.insLossWeight).loss)([f1, f2]);
    const [e1, e2] = [nhwc(outputs.grad_f1), nhwc(outputs.grad_f2)];
    expectMatches('instance case: grad feature map', g1!, e1);
    expectMatches('instance case: grad feature map', g2!, e2);
    tf.dispose([f1, f2, g1!, g2!, e1, e2, ...targets.flatMap((t) => [t.pixel, t.instance!]), ...masks]);
    method.dispose();
  });

  it('builds the instance branch only when its weight is positive, and leaves the default layout as before', () => {
    const off = new PixPro(args, () => identityBackbone(C), 1);
    const on = new PixPro({ ...args, insLossWeight: 1 }, () => identityBackbone(C), 1);
    expect(off.predictor).toBeNull();
    expect([...off.online.vars.keys()].some((n) => n.startsWith('neck_instance') || n.startsWith('predictor'))).toBe(false);
    expect([...on.momentumEncoder.vars.keys()].filter((n) => n.startsWith('neck_instance')).length).toBeGreaterThan(0);
    expect([...on.momentumEncoder.vars.keys()].some((n) => n.startsWith('predictor') || n.startsWith('ppm'))).toBe(false);
    expect(pixpro.args.parse({})).not.toHaveProperty('insLossWeight'); // absent = off, and the cache keys of runs without it unchanged
    off.dispose();
    on.dispose();
  });

  it('has the sizes and schedule the tests assume', () => {
    expect([B, C, h, w]).toEqual(fixture.inputs.f1.shape);
    expect(fixture.momentum).not.toBeCloseTo(fixture.baseMomentum, 4);
    console.log('PixPro parity, max relative error per quantity:', JSON.stringify(measured));
  });
});
