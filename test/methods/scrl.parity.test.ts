/**
 * SCRL parity with kakaobrain/scrl@62730fb, RUN under PyTorch on identical inputs, weights and random draws.
 * Reference values: test/fixtures/methods/scrl/parity.json, written by
 * `SCRL_OFFICIAL=<export> /usr/bin/python3 test/fixtures/methods/scrl/make_parity.py` (see its docstring), which runs the
 * official SCRLBoxGenerator (its numpy draws logged), the official transforms for the crops, and one official
 * SCRLTrainer._forward (Backbone with RoIAlign 1×1 + projector, predictor, _criterion) with the ResNet replaced by
 * identity, then an SGD step and the official EMA. Here the logged draws are replayed through `ctx.rng`, so the boxes,
 * the loss, every head gradient, the gradient reaching the feature maps and the target after the EMA can be compared.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import { boxViewToView, type ViewGeometry } from '../../stages/data/geometry.js';
import type { ParamStore } from '../../stages/engine/params.js';
import type { NamedGradients } from '../../stages/methods/shared/contract.js';
import { generateBoxPairs, scrl, Scrl, scrlLoss, scrlProject, scrlRois, type ScrlArgs } from '../../stages/methods/scrl.js';
import { identityBackbone, loadFixture, nhwc, REL_TOL, relErr, tensorRelErr, toOurLayout, type Json } from './parity-helpers.js';

const fixture = loadFixture('scrl');
const { B, C, stride, hidden, D } = fixture.sizes as Record<string, number>;
const args: ScrlArgs = { ...scrl.args.parse({}), ...fixture.boxArgs, gridBased: true, projectorHidden: hidden, projectorOut: D, momentum: fixture.baseMomentum };
const geometry = fixture.inputs.geometry as ViewGeometry[][];
type Draw = [number, number, number];
/** Largest relative error seen per quantity (printed at the end, quoted on the card). */
const measured: Record<string, number> = {};
const record = (what: string, err: number) => (measured[what] = Math.max(measured[what] ?? 0, err));

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** ctx.rng that returns the official numpy draws in order, checking that each is asked for with the official range. */
class ReplayRng extends Rng {
  used = 0;
  constructor(private readonly draws: Draw[]) {
    super(0);
  }
  override int(lo: number, hi: number): number {
    const d = this.draws[this.used++];
    if (!d) throw new Error(`ReplayRng: draw ${this.used} asked for, only ${this.draws.length} logged`);
    expect([lo, hi], `draw ${this.used - 1}`).toEqual([d[0], Math.trunc(d[1])]);
    return d[2];
  }
  override next(): number {
    throw new Error('SCRL draws integers only');
  }
}

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

function build(): Scrl {
  const method = new Scrl(args, () => ({ ...identityBackbone(C), stride }), 1);
  load(method.online, 'neck', fixture.inputs.projector);
  load(method.online, 'predictor', fixture.inputs.predictor);
  load(method.target, 'neck', fixture.inputs.target_projector);
  return method;
}

/** Official rows [batchIndex, x0, y0, x1, y1] (float32) vs ours. */
function expectSameBoxes(ours: number[][], ref: number[][]): void {
  expect(ours.length).toBe(ref.length);
  let worst = 0;
  ours.forEach((row, i) => {
    expect(row[0]).toBe(ref[i]![0]);
    for (let c = 1; c < 5; c++) worst = Math.max(worst, Math.abs(row[c]! - ref[i]![c]!));
  });
  record('box coordinates (abs, view px; official boxes are float32)', worst);
  expect(worst).toBeLessThan(1e-4);
}

describe('SCRL box pairs vs the official SCRLBoxGenerator', () => {
  for (const mode of ['grid', 'random'] as const) {
    it(`draws the same boxes in both views from the same draws (${mode} mode)`, () => {
      const ref = fixture.boxes[mode] as { draws: Draw[]; view0: number[][]; view1: number[][] };
      const rng = new ReplayRng(ref.draws);
      const pairs = generateBoxPairs(geometry[0]!, geometry[1]!, { ...args, gridBased: mode === 'grid' }, rng);
      expect(rng.used).toBe(ref.draws.length); // every official draw consumed, in order, with the same ranges
      const rois = scrlRois(pairs, B);
      expectSameBoxes(rois.slice(0, pairs.length), ref.view0);
      expectSameBoxes(rois.slice(pairs.length), ref.view1);
      // each pair is one region of the original image: view 0's box mapped into view 1 is view 1's box, except where
      // the official clip cuts one side. Ĩ = round(I·s) can exceed the intersection by < 0.5 scaled px, so a box on its
      // far edge pokes out of one crop and is clipped in that view only (official behaviour, kept): < 1 view px.
      let exact = 0;
      for (const { image, boxes } of pairs) {
        const mapped = boxViewToView(geometry[0]![image]!, geometry[1]![image]!, boxes[0]);
        const dev = Math.max(...mapped.map((v, c) => Math.abs(v - boxes[1][c]!)));
        record(`pair mismatch from the official clip (view px, ${mode})`, dev);
        expect(dev).toBeLessThan(1);
        if (dev < 1e-9) exact++;
      }
      expect(exact).toBeGreaterThan(pairs.length / 2);
    });
  }

  it('covers flips, an image without pairs and IoU redraws', () => {
    const g = geometry;
    const used = new Set((fixture.boxes.grid.view0 as number[][]).map((r) => r[0]));
    expect(used.size).toBe(B - 1);
    expect([...used].some((b) => g[0]![b]!.flipped !== g[1]![b]!.flipped)).toBe(true);
    expect([...used].some((b) => g[0]![b]!.flipped && g[1]![b]!.flipped)).toBe(true);
    expect(fixture.boxes.grid.draws.length / 8).toBeGreaterThan(fixture.boxes.grid.view0.length); // redraws happened
  });
});

describe('SCRL parity with the official SCRLTrainer step', () => {
  it('matches the loss, every head gradient, the target after the EMA and the BN buffers after one step', () => {
    const { inputs, outputs } = fixture;
    const method = build();
    const views = [nhwc(inputs.f1), nhwc(inputs.f2)];
    let grads: NamedGradients = new Map();
    const sgd = (g: NamedGradients) => {
      grads = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]));
      tf.tidy(() => g.forEach((v, k) => method.online.get(k).assign(tf.sub(method.online.get(k), tf.mul(v, fixture.lr)))));
    };
    const rng = new ReplayRng(fixture.boxes.grid.draws);
    const result = method.step({ views, geometry }, { step: fixture.step, totalSteps: fixture.totalSteps, rng, applyGradients: sgd });
    expect(rng.used).toBe(fixture.boxes.grid.draws.length);

    record('loss', relErr(result.loss, outputs.loss));
    expect(relErr(result.loss, outputs.loss)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.view0! + result.parts.view1!, outputs.loss)).toBeLessThan(REL_TOL);
    const refGrads = Object.entries(outputs.grads as Record<string, Json>).map(([n, t]) => [n.replace(/^projector\./, 'neck.'), t] as const);
    expect([...grads.keys()].sort()).toEqual(refGrads.map(([n]) => n).sort());
    for (const [name, t] of refGrads) {
      if (name.endsWith('net.0.bias')) {
        // The Linear bias in front of BatchNorm has a zero gradient in exact arithmetic (BN subtracts the batch mean):
        // both sides are float noise, so compare both to the scale of the weight gradient.
        const scale = tf.tidy(() => tf.max(tf.abs(grads.get(name.replace('bias', 'weight'))!)).dataSync()[0]!);
        const ours = tf.tidy(() => tf.max(tf.abs(grads.get(name)!)).dataSync()[0]!);
        record('grad net.0.bias (|g| / |g_weight|, exactly 0 in exact arithmetic)', ours / scale);
        expect(ours / scale).toBeLessThan(REL_TOL);
        expect(Math.max(...t.data.map(Math.abs)) / scale).toBeLessThan(REL_TOL);
        continue;
      }
      expectMatches(name.startsWith('predictor') ? 'grad predictor' : 'grad projector', grads.get(name)!, t, method.online, name);
    }
    // ξ after SGD then EMA with m_k = 1 − 0.03·(cos(π·3/10)+1)/2; the target's BN buffers after its own forward
    for (const [name, t] of Object.entries(outputs.target_projector_after as Record<string, Json>)) {
      expectMatches(name.includes('running') ? 'target BN buffers' : 'target projector after EMA', method.target.get(`neck.${name}`), t, method.target, `neck.${name}`);
    }
    for (const [name, t] of Object.entries(outputs.online_buffers_after as Record<string, Json>)) {
      const ours = name.replace(/^projector\./, 'neck.');
      expectMatches('online BN buffers', method.online.get(ours), t, method.online, ours);
    }
    tf.dispose([...views, ...grads.values()]);
    method.dispose();
  });

  it('matches the gradient reaching both online feature maps', () => {
    const { inputs, outputs } = fixture;
    const method = build();
    const pairs = generateBoxPairs(geometry[0]!, geometry[1]!, args, new ReplayRng(fixture.boxes.grid.draws));
    const rois = scrlRois(pairs, B);
    const [f1, f2] = [nhwc(inputs.f1), nhwc(inputs.f2)];
    const zTarget = tf.tidy(() => scrlProject(method.k.head, tf.concat([f1, f2], 0), rois, 1 / stride));
    const [g1, g2] = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
      const z = scrlProject(method.q.head, tf.concat([a, b], 0) as tf.Tensor4D, rois, 1 / stride);
      return scrlLoss(method.predictor.apply(z, { training: true }), zTarget).loss;
    })([f1, f2]);
    const [e1, e2] = [nhwc(outputs.grad_f1), nhwc(outputs.grad_f2)];
    expectMatches('grad feature map', g1!, e1);
    expectMatches('grad feature map', g2!, e2);
    tf.dispose([f1, f2, g1!, g2!, e1, e2, zTarget]);
    method.dispose();
  });

  it('has the sizes and schedule the tests assume', () => {
    expect([B, C, fixture.sizes.h, fixture.sizes.w]).toEqual(fixture.inputs.f1.shape);
    expect(fixture.momentum).not.toBeCloseTo(fixture.baseMomentum, 4);
    console.log('SCRL parity, max relative error per quantity:', JSON.stringify(measured));
  });
});
