/**
 * LC-loss parity. No official code exists (Islam et al., WACV 2023), so the reference is twofold:
 *   1. a PyTorch TRANSCRIPTION of the paper's method on BYOL, each piece citing the BYOL paper's equations or the LC-loss
 *      paper's §1–2 and our reading [A1]–[A4] (test/fixtures/methods/lcloss/make_parity.py, rerun as its docstring says;
 *      values in parity.json): loss terms, every head gradient, the gradient reaching both views' C5 maps, the online
 *      network after one SGD step and the target after the EMA, and λ = 0 giving BYOL's loss and gradients;
 *   2. a naive per-pixel loop written here (cell centre → image point → other view's cell by explicit arithmetic, then a
 *      softmax over every cell of the other view, one cell at a time) against the batched `localContrast`, on the
 *      fixture's crops and on random crops, flips, scales and grid sizes.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import type { ViewGeometry } from '../../stages/data/geometry.js';
import type { ParamStore } from '../../stages/engine/params.js';
import type { BackboneFactory, NamedGradients } from '../../stages/methods/shared/contract.js';
import { LcLoss, lcCorrespondence, lcloss, localContrast, type LcLossArgs } from '../../stages/methods/lcloss.js';
import { type Json, loadFixture, nhwc, REL_TOL, relErr, tensorRelErr, toOurLayout } from './parity-helpers.js';

const fixture = loadFixture('lcloss');
const { B, C, G, hidden, D } = fixture.sizes as Record<string, number>;
const args: LcLossArgs = { ...lcloss.args.parse({}), ...fixture.args, projectorHidden: hidden, projectorOut: D };
const geometry = fixture.inputs.geometry as ViewGeometry[][];
const measured: Record<string, number> = {};
const record = (what: string, err: number) => (measured[what] = Math.max(measured[what] ?? 0, err));
/** PyTorch names (fixture) → ours. */
const ours = (name: string) => (name.startsWith('predictor.') ? name : `neck.${name}`);
/** Linear biases right before a BatchNorm: 0 gradient in exact arithmetic, float noise on both sides. */
const beforeBn = (name: string) => name.endsWith('.0.bias');

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** A "backbone" whose C5 maps are trainable variables `backbone.v0`, `backbone.v1`: call k returns view k mod 2. */
function givenMaps(maps: tf.Tensor4D[]): BackboneFactory {
  return (store) => {
    const vars = maps.map((m, v) => store.add(`backbone.v${v}`, m.clone(), { layout: 'same', role: 'weight' }));
    let calls = 0;
    return { outChannels: C, stride: 8, apply: () => tf.mul(vars[calls++ % 2]!, 1) as tf.Tensor4D };
  };
}

function load(store: ParamStore, prefix: string, state: Record<string, Json>): void {
  for (const [name, t] of Object.entries(state)) {
    const value = toOurLayout(`${prefix}.${name}`, t, store);
    store.get(`${prefix}.${name}`).assign(value);
    value.dispose();
  }
}

function build(a: LcLossArgs): { method: LcLoss; maps: tf.Tensor4D[] } {
  const maps = [nhwc(fixture.inputs.f0), nhwc(fixture.inputs.f1)];
  const method = new LcLoss(a, givenMaps(maps), 1);
  load(method.online, 'neck.projector', fixture.inputs.projector);
  load(method.online, 'neck.local_projector', fixture.inputs.local_projector);
  load(method.online, 'predictor', fixture.inputs.predictor);
  load(method.target, 'neck.projector', fixture.inputs.target_projector);
  load(method.target, 'neck.local_projector', fixture.inputs.target_local_projector);
  return { method, maps };
}

function expectMatches(what: string, got: tf.Tensor, ref: Json | tf.Tensor, store?: ParamStore, name?: string): void {
  const expected = ref instanceof tf.Tensor ? ref : store ? toOurLayout(name!, ref, store) : tf.tensor(ref.data, ref.shape);
  const err = tensorRelErr(got, expected);
  record(what, err);
  expect(err, `${what} ${name ?? ''}`).toBeLessThan(REL_TOL);
  if (expected !== ref) expected.dispose();
}

/** One step on the fixture's maps and crops with plain SGD, capturing the gradients handed to the optimizer. */
function stepWithSgd(method: LcLoss): { result: ReturnType<LcLoss['step']>; grads: NamedGradients } {
  let grads: NamedGradients = new Map();
  const sgd = (g: NamedGradients) => {
    grads = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]));
    tf.tidy(() => g.forEach((v, k) => method.online.get(k).assign(tf.sub(method.online.get(k), tf.mul(v, fixture.lr)))));
  };
  const views = [tf.zeros([B, 32, 32, 3]), tf.zeros([B, 32, 32, 3])] as tf.Tensor4D[];
  const result = method.step({ views, geometry }, { step: fixture.step, totalSteps: fixture.totalSteps, rng: new Rng(1), applyGradients: sgd });
  tf.dispose(views);
  return { result, grads };
}

// ------------------------------------------------------------------------------------------------
// The naive per-pixel loop
// ------------------------------------------------------------------------------------------------

/**
 * LC(a→b) one cell at a time: the centre of cell (r, c) of view a (pixel-edge frame) → unflip → original image →
 * view b → flip → its cell, skipped when outside view b; then −log softmax over every cell j of view b's map.
 */
function naiveLc(u: number[][][], uTarget: number[][][], ga: ViewGeometry[], gb: ViewGeometry[], g: number, tau: number): number {
  let total = 0;
  let count = 0;
  for (let b = 0; b < ga.length; b++) {
    const [A, V] = [ga[b]!, gb[b]!];
    for (let r = 0; r < g; r++) {
      for (let c = 0; c < g; c++) {
        const x = ((c + 0.5) * A.width) / g;
        const y = ((r + 0.5) * A.height) / g;
        const X = A.crop[0] + ((A.flipped ? A.width - x : x) * (A.crop[2] - A.crop[0])) / A.width;
        const Y = A.crop[1] + (y * (A.crop[3] - A.crop[1])) / A.height;
        const xv0 = ((X - V.crop[0]) * V.width) / (V.crop[2] - V.crop[0]);
        const xv = V.flipped ? V.width - xv0 : xv0;
        const yv = ((Y - V.crop[1]) * V.height) / (V.crop[3] - V.crop[1]);
        if (!(xv >= 0 && xv < V.width && yv >= 0 && yv < V.height)) continue;
        const positive = Math.floor((yv * g) / V.height) * g + Math.floor((xv * g) / V.width);
        const query = u[b]![r * g + c]!;
        const logits = uTarget[b]!.map((key) => key.reduce((s, k, d) => s + k * query[d]!, 0) / tau);
        const max = Math.max(...logits);
        const lse = max + Math.log(logits.reduce((s, l) => s + Math.exp(l - max), 0));
        total += lse - logits[positive]!;
        count++;
      }
    }
  }
  return count > 0 ? total / count : 0;
}

/** Random unit vectors [B, S², D] as a tensor and as nested arrays. */
function randomUnit(rng: Rng, b: number, s2: number, d: number): { t: tf.Tensor3D; a: number[][][] } {
  const a = Array.from({ length: b }, () =>
    Array.from({ length: s2 }, () => {
      const v = Array.from({ length: d }, () => rng.uniform(-1, 1));
      const n = Math.hypot(...v);
      return v.map((x) => x / n);
    }),
  );
  return { t: tf.tensor3d(a.flat(2), [b, s2, d]), a };
}

function randomGeometry(rng: Rng): ViewGeometry {
  const [W, H] = [rng.int(40, 200), rng.int(40, 200)];
  const [w, h] = [rng.int(8, W + 1), rng.int(8, H + 1)];
  const [x0, y0] = [rng.int(0, W - w + 1), rng.int(0, H - h + 1)];
  const size = rng.int(24, 80);
  return { imageWidth: W, imageHeight: H, crop: [x0, y0, x0 + w, y0 + h], width: size, height: rng.next() < 0.3 ? rng.int(24, 80) : size, flipped: rng.next() < 0.5 };
}

describe('LC-loss correspondence and local loss vs a naive per-pixel loop', () => {
  it('finds the transcription\'s corresponding cells (crop, scale, flip, no overlap)', () => {
    const [c01, c10] = fixture.inputs.correspondence as number[][];
    expect(Array.from(lcCorrespondence(geometry[0]!, geometry[1]!, G))).toEqual(c01);
    expect(Array.from(lcCorrespondence(geometry[1]!, geometry[0]!, G))).toEqual(c10);
    // the fixture covers: an image with no correspondence at all, partial overlaps, several cells onto one
    const perImage = (c: number[]) => Array.from({ length: B }, (_, b) => c.slice(b * G * G, (b + 1) * G * G).filter((x) => x >= 0));
    expect(perImage(c01).some((v) => v.length === 0)).toBe(true);
    expect(perImage(c01).some((v) => v.length > 0 && v.length < G * G)).toBe(true);
    expect(perImage(c10).some((v) => new Set(v).size < v.length)).toBe(true);
  });

  it('batched localContrast = the naive loop, on the fixture\'s crops', () => {
    const rng = new Rng(5);
    for (const [a, b] of [[0, 1], [1, 0]] as const) {
      const u = randomUnit(rng, B, G * G, D);
      const uT = randomUnit(rng, B, G * G, D);
      const got = tf.tidy(() => localContrast(u.t, uT.t, lcCorrespondence(geometry[a]!, geometry[b]!, G), args.temperature).dataSync()[0]!);
      const want = naiveLc(u.a, uT.a, geometry[a]!, geometry[b]!, G, args.temperature);
      record('local loss vs naive loop', relErr(got, want));
      expect(relErr(got, want)).toBeLessThan(REL_TOL);
      tf.dispose([u.t, uT.t]);
    }
  });

  it('batched localContrast = the naive loop, on random crops, flips, scales, view sizes and grids', () => {
    const rng = new Rng(2023);
    let nonzero = 0;
    for (let trial = 0; trial < 40; trial++) {
      const b = rng.int(1, 4);
      const g = rng.int(2, 8);
      const d = rng.int(2, 9);
      const tau = rng.uniform(0.05, 1);
      const ga = Array.from({ length: b }, () => randomGeometry(rng));
      // the other view: another crop of the same image
      const gb = ga.map((x) => ({ ...randomGeometry(rng), imageWidth: x.imageWidth, imageHeight: x.imageHeight })).map((v, i) => {
        const W = ga[i]!.imageWidth;
        const H = ga[i]!.imageHeight;
        const w = Math.min(v.crop[2] - v.crop[0], W);
        const h = Math.min(v.crop[3] - v.crop[1], H);
        const x0 = rng.int(0, W - w + 1);
        const y0 = rng.int(0, H - h + 1);
        return { ...v, crop: [x0, y0, x0 + w, y0 + h] as [number, number, number, number] };
      });
      const u = randomUnit(rng, b, g * g, d);
      const uT = randomUnit(rng, b, g * g, d);
      const got = tf.tidy(() => localContrast(u.t, uT.t, lcCorrespondence(ga, gb, g), tau).dataSync()[0]!);
      const want = naiveLc(u.a, uT.a, ga, gb, g, tau);
      if (want !== 0) nonzero++;
      record('local loss vs naive loop', Math.abs(got - want) / Math.max(Math.abs(want), 1e-6));
      expect(Math.abs(got - want) / Math.max(Math.abs(want), 1e-6)).toBeLessThan(REL_TOL);
      tf.dispose([u.t, uT.t]);
    }
    expect(nonzero).toBeGreaterThan(20);
  });
});

describe('LC-loss parity with the PyTorch transcription (one step)', () => {
  it('matches the loss terms, every head gradient, the gradient reaching both C5 maps, the online network after SGD and the target after the EMA', () => {
    const { outputs } = fixture;
    const { method, maps } = build(args);
    const { result, grads } = stepWithSgd(method);

    for (const [what, got, want] of [['loss', result.loss, outputs.loss], ['loss term global (BYOL)', result.parts.global!, outputs.global], ['loss term local (λ·L_LC)', result.parts.local!, outputs.local]] as const) {
      record(what, relErr(got, want));
      expect(relErr(got, want), what).toBeLessThan(REL_TOL);
    }
    const refGrads = Object.entries(outputs.grads as Record<string, Json>).map(([n, t]) => [ours(n), t] as const);
    expect([...grads.keys()].sort()).toEqual([...refGrads.map(([n]) => n), 'backbone.v0', 'backbone.v1'].sort());
    for (const [name, t] of refGrads) {
      if (beforeBn(name)) {
        const scale = tf.tidy(() => tf.max(tf.abs(grads.get(name.replace('bias', 'weight'))!)).dataSync()[0]!);
        const mine = tf.tidy(() => tf.max(tf.abs(grads.get(name)!)).dataSync()[0]!);
        record('grad Linear bias before BN (|g| / |g_weight|, 0 in exact arithmetic)', mine / scale);
        expect(mine / scale).toBeLessThan(REL_TOL);
        expect(Math.max(...t.data.map(Math.abs)) / scale).toBeLessThan(REL_TOL);
        continue;
      }
      expectMatches(`grad ${name.startsWith('predictor.') ? 'predictor' : name.split('.')[1]}`, grads.get(name)!, t, method.online, name);
    }
    expectMatches('grad C5 maps (backbone output)', grads.get('backbone.v0')!, nhwc(outputs.grad_f0));
    expectMatches('grad C5 maps (backbone output)', grads.get('backbone.v1')!, nhwc(outputs.grad_f1));
    // online after SGD (parameters) and after its two per-view forwards (BN running statistics)
    for (const [name, t] of Object.entries(outputs.online_after as Record<string, Json>)) {
      expectMatches(name.includes('running') ? 'online BN buffers' : 'online after SGD', method.online.get(ours(name)), t, method.online, ours(name));
    }
    // target: ξ ← m_k·ξ + (1−m_k)·θ after the SGD step (backbone, projector, local projector), its own BN buffers
    expect(relErr(fixture.outputs.momentum, 1 - (1 - args.momentum) * (Math.cos((Math.PI * fixture.step) / fixture.totalSteps) + 1) / 2)).toBeLessThan(1e-12);
    for (const [prefix, state] of [['neck.projector', outputs.target_projector_after], ['neck.local_projector', outputs.target_local_projector_after]] as const) {
      for (const [name, t] of Object.entries(state as Record<string, Json>)) {
        expectMatches(name.includes('running') ? 'target BN buffers' : 'target after EMA', method.target.get(`${prefix}.${name}`), t, method.target, `${prefix}.${name}`);
      }
    }
    expectMatches('target backbone after EMA', method.target.get('backbone.v0'), nhwc(outputs.target_backbone_after.v0));
    expectMatches('target backbone after EMA', method.target.get('backbone.v1'), nhwc(outputs.target_backbone_after.v1));
    expect(method.online.get('predictor.0.weight')).toBeDefined();
    expect(method.target.vars.has('predictor.0.weight')).toBe(false); // the target has no predictor
    tf.dispose([...maps, ...grads.values()]);
    method.dispose();
  });

  it('with λ = 0 is BYOL: the transcription\'s BYOL loss and backbone gradients, no local term', () => {
    const { method, maps } = build({ ...args, lambda: 0 });
    const { result, grads } = stepWithSgd(method);
    record('λ = 0: loss vs BYOL', relErr(result.loss, fixture.outputs.byol_only.loss));
    expect(relErr(result.loss, fixture.outputs.byol_only.loss)).toBeLessThan(REL_TOL);
    expect(result.parts.local).toBe(0);
    expectMatches('λ = 0: grad C5 maps vs BYOL', grads.get('backbone.v0')!, nhwc(fixture.outputs.byol_only.grad_f0));
    expectMatches('λ = 0: grad C5 maps vs BYOL', grads.get('backbone.v1')!, nhwc(fixture.outputs.byol_only.grad_f1));
    for (const [name, g] of grads) if (name.includes('local_projector')) expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]!), name).toBe(0);
    tf.dispose([...maps, ...grads.values()]);
    method.dispose();
  });

  it('has the sizes and arguments the tests assume (values that expose swapped terms)', () => {
    expect([B, C, G, G]).toEqual(fixture.inputs.f0.shape);
    expect(args.temperature).not.toBe(lcloss.args.parse({}).temperature);
    expect([0, 0.5, 1]).not.toContain(args.lambda);
    expect(fixture.outputs.momentum).not.toBeCloseTo(args.momentum, 4);
    console.log('LC-loss parity, max relative error per quantity:', JSON.stringify(measured));
  });
});
