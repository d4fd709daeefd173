/**
 * DetCo parity. No official pretext code exists (xieenze/DetCo@adf4947 released transfer configs and weights only), so
 * the reference is a PyTorch transcription of the paper: test/fixtures/methods/detco/parity.json, written by
 * test/fixtures/methods/detco/make_parity.py (its docstring cites the source of every piece and says how to rerun it).
 * The backbone hands given C2..C5 maps — of the global views, and of every cell of the patch-set views, picked by a
 * marker pixel so they follow the jigsaw cut, the patch order and the shuffle-BN permutation — trainable online so the
 * gradient reaching the backbone is captured; the patch orders are the reference's draws. One `step` then exercises
 * exactly the method: jigsaw cut and order, the 4 global and 4 local heads, all 12 terms with their level weights, the
 * momentum update, shuffle-BN over 2 emulated GPUs and the 8 enqueues. Every term is also checked against a float64
 * loop written straight from the equations (no tensor ops), on the fixture's inputs.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { BadInputError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import { DetCo, detco, drawPatchOrders, jigsawStrip, localPatchSize, type DetCoArgs } from '../../stages/methods/detco.js';
import type { BackboneFactory } from '../../stages/methods/shared/contract.js';
import { expectStoreMatches, type Json, loadFixture, loadNeck, loadQueue, nhwc, queueRows, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout } from './parity-helpers.js';

const fixture = loadFixture('detco');
const { B, G, D, K } = fixture.sizes as { B: number; G: number; D: number; K: number };
const C = fixture.sizes.C as number[];
const LEVELS = C.map((_, l) => `res${l + 2}`);
const KINDS = ['g2g', 'l2g', 'l2l'] as const;
const fa = fixture.args as { temperature: number; momentum: number; levelWeights: number[] };
const args: DetCoArgs = {
  ...detco.args.parse({}),
  temperature: fa.temperature,
  momentum: fa.momentum,
  levelWeights: fa.levelWeights,
  queueSize: K,
  embedDim: D,
  shuffleBnGroups: 2, // exact here: the given maps follow their images through the permutation
};
/** Input sides: global views, and patch-set sources of G×G cells of `PATCH` px (the fake backbone tells them apart by size). */
const GLOBAL = 4;
const PATCH = 2;

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** Stage maps picked by the marker in pixel (0, 0): row `id` of the global table (side GLOBAL) or of the cell table (side PATCH). */
function givenStages(online: { global: tf.Tensor4D[]; patch: tf.Tensor4D[] }, momentum: { global: tf.Tensor4D[]; patch: tf.Tensor4D[] }): BackboneFactory {
  return (store, prefix, seed) => {
    const isMomentum = String(seed).endsWith('-momentum');
    const vars = {
      global: online.global.map((t, l) => store.add(`${prefix}.g${l + 2}`, t.clone(), { layout: 'same', role: 'weight' })),
      patch: online.patch.map((t, l) => store.add(`${prefix}.p${l + 2}`, t.clone(), { layout: 'same', role: 'weight' })),
    };
    return {
      outChannels: C[3]!,
      stageChannels: C,
      apply: () => {
        throw new Error('DetCo reads applyStages');
      },
      applyStages: (x) => {
        const side = x.shape[1];
        if (side !== GLOBAL && side !== PATCH) throw new Error(`unexpected input side ${side}`);
        const which = side === GLOBAL ? 'global' : 'patch';
        const ids = tf.tidy(() => tf.cast(tf.round(tf.reshape(tf.slice(x, [0, 0, 0, 0], [-1, 1, 1, 1]), [-1])), 'int32'));
        const tables = isMomentum ? momentum[which] : vars[which];
        const out = tables.map((t) => tf.gather(t, ids) as tf.Tensor4D);
        ids.dispose();
        return out;
      },
    };
  };
}

/** Marker views: global view b all = b; patch-set source b with cell c (row-major) all = b·G² + c. */
function markerViews(): tf.Tensor4D[] {
  const global = tf.tidy(() => tf.mul(tf.ones([B, GLOBAL, GLOBAL, 3]), tf.reshape(tf.range(0, B), [B, 1, 1, 1]))) as tf.Tensor4D;
  const side = G * PATCH;
  const cells = new Float32Array(B * side * side * 3);
  for (let b = 0; b < B; b++)
    for (let y = 0; y < side; y++)
      for (let x = 0; x < side; x++) for (let ch = 0; ch < 3; ch++) cells[((b * side + y) * side + x) * 3 + ch] = b * G * G + Math.floor(y / PATCH) * G + Math.floor(x / PATCH);
  const source = tf.tensor4d(cells, [B, side, side, 3]);
  return [global, tf.clone(global), source, tf.clone(source)];
}

function build(): { method: DetCo; tensors: tf.Tensor[]; orderCalls: () => number } {
  const { inputs } = fixture;
  const maps = (key: string) => (inputs[key] as Json[]).map(nhwc);
  const online = { global: maps('c_q_global'), patch: maps('c_q_patch') };
  const momentum = { global: maps('c_k_global'), patch: maps('c_k_patch') };
  const method = new DetCo(args, givenStages(online, momentum), 1);
  loadNeck(method.online, inputs.heads_q);
  loadNeck(method.momentumEncoder, inputs.heads_k);
  const queues: tf.Tensor[] = [];
  LEVELS.forEach((_, l) => {
    for (const [ours, ref] of [[method.queues.global[l]!, inputs.queue_g[l]], [method.queues.local[l]!, inputs.queue_l[l]]] as const) {
      const rows = queueRows(ref);
      loadQueue(ours, rows, inputs.queue_ptr);
      queues.push(rows);
    }
  });
  // The reference's jigsaw draws: the query set's orders first, then the key set's (as `step` asks for them).
  let calls = 0;
  method.patchOrders = () => (calls++ === 0 ? inputs.order_q : inputs.order_k) as number[][];
  return { method, tensors: [...online.global, ...online.patch, ...momentum.global, ...momentum.patch, ...queues], orderCalls: () => calls };
}

// ------------------------------------------------------------------------------------------------
// The naive version: float64 loops over the fixture's numbers, written from the equations.
// ------------------------------------------------------------------------------------------------

/** NCHW → per row, per channel mean over the map. */
function avgPool(t: Json): number[][] {
  const [n, c, h, w] = t.shape as [number, number, number, number];
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: c }, (_, j) => {
      let s = 0;
      for (let p = 0; p < h * w; p++) s += t.data[(i * c + j) * h * w + p]!;
      return s / (h * w);
    }),
  );
}

type Weights = Record<string, Json>;
const linear = (x: number[], w: Json, b: Json) => Array.from({ length: w.shape[0]! }, (_, o) => x.reduce((s, v, i) => s + v * w.data[o * w.shape[1]! + i]!, b.data[o]!));
const normalize = (x: number[]) => {
  const n = Math.max(Math.sqrt(x.reduce((s, v) => s + v * v, 0)), 1e-12);
  return x.map((v) => v / n);
};
/** n(Linear(ReLU(Linear(x)))) with the weights under `prefix` (`res2.global`, …). */
const mlp = (x: number[], h: Weights, prefix: string) => normalize(linear(linear(x, h[`${prefix}.mlp.0.weight`]!, h[`${prefix}.mlp.0.bias`]!).map((v) => Math.max(v, 0)), h[`${prefix}.mlp.2.weight`]!, h[`${prefix}.mlp.2.bias`]!));

function naiveEmbeddings(h: Weights, globalMaps: Json[], cellMaps: Json[], order: number[][]): { global: number[][][]; local: number[][][] } {
  return {
    global: LEVELS.map((n, l) => avgPool(globalMaps[l]!).map((x) => mlp(x, h, `${n}.global`))),
    local: LEVELS.map((n, l) => {
      const pooled = avgPool(cellMaps[l]!);
      return order.map((o, b) => mlp(o.flatMap((cell) => pooled[b * G * G + cell]!), h, `${n}.local`));
    }),
  };
}

/** −1/B Σ_b log( exp(q_b·k_b/τ) / (exp(q_b·k_b/τ) + Σ_j exp(q_b·Q_j/τ)) ), queue given [D, K] (column j = Q_j). */
function naiveInfoNce(q: number[][], k: number[][], queue: Json, tau: number): number {
  let total = 0;
  for (let b = 0; b < q.length; b++) {
    const dot = (v: (d: number) => number) => q[b]!.reduce((s, x, d) => s + x * v(d), 0);
    const logits = [dot((d) => k[b]![d]!), ...Array.from({ length: K }, (_, j) => dot((d) => queue.data[d * K + j]!))].map((v) => v / tau);
    const max = Math.max(...logits);
    total += max + Math.log(logits.reduce((s, v) => s + Math.exp(v - max), 0)) - logits[0]!;
  }
  return total / q.length;
}

function naiveParts(): Record<string, number> {
  const { inputs } = fixture;
  const hq = inputs.heads_q as Weights;
  // ξ ← m·ξ + (1−m)·θ before the keys.
  const hk: Weights = Object.fromEntries(Object.entries(inputs.heads_k as Weights).map(([n, t]) => [n, { shape: t.shape, data: t.data.map((v, i) => fa.momentum * v + (1 - fa.momentum) * hq[n]!.data[i]!) }]));
  const q = naiveEmbeddings(hq, inputs.c_q_global, inputs.c_q_patch, inputs.order_q);
  const k = naiveEmbeddings(hk, inputs.c_k_global, inputs.c_k_patch, inputs.order_k);
  const parts: Record<string, number> = {};
  LEVELS.forEach((n, l) => {
    const w = fa.levelWeights[l]!;
    parts[`${n}.g2g`] = w * naiveInfoNce(q.global[l]!, k.global[l]!, inputs.queue_g[l], fa.temperature);
    parts[`${n}.l2g`] = w * naiveInfoNce(q.local[l]!, k.global[l]!, inputs.queue_g[l], fa.temperature);
    parts[`${n}.l2l`] = w * naiveInfoNce(q.local[l]!, k.local[l]!, inputs.queue_l[l], fa.temperature);
  });
  return parts;
}

describe('DetCo parity with the paper transcribed in PyTorch (make_parity.py)', () => {
  it('the float64 loop from the equations agrees with the PyTorch transcription on every term', () => {
    const naive = naiveParts();
    const expected = fixture.outputs.parts as Record<string, number>;
    expect(Object.keys(naive).sort()).toEqual(Object.keys(expected).sort());
    let worst = 0;
    for (const [name, v] of Object.entries(naive)) {
      const e = relErr(v, expected[name]!);
      expect(e, name).toBeLessThan(REL_TOL);
      worst = Math.max(worst, e);
    }
    console.info('detco: naive float64 loop vs PyTorch transcription, max relative error over the 12 terms', worst);
  });

  it('matches every term (per level, per kind), the head and backbone gradients, the momentum heads and the 8 queues after one step', () => {
    const { outputs } = fixture;
    const { method, tensors, orderCalls } = build();
    const views = markerViews();
    const { result, grads } = stepCapturing(method, views);
    expect(orderCalls()).toBe(2);
    const errors: Record<string, number> = {};
    errors.loss = relErr(result.loss, outputs.loss);
    // Each part, already weighted; against the transcription and the naive loop.
    const naive = naiveParts();
    expect(Object.keys(result.parts).sort()).toEqual(LEVELS.flatMap((n) => KINDS.map((k) => `${n}.${k}`)).sort());
    for (const [name, v] of Object.entries(result.parts)) {
      const e = Math.max(relErr(v, outputs.parts[name]), relErr(v, naive[name]!));
      expect(e, name).toBeLessThan(REL_TOL);
      errors[`term ${name}`] = e;
    }
    expect(Object.values(result.parts).reduce((a, b) => a + b, 0)).toBeCloseTo(result.loss, 4);

    // Gradients handed to the optimizer: every head parameter (8 MLPs) and the backbone outputs, nothing else.
    const headNames = Object.keys(outputs.grads).map((n) => `neck.${n}`);
    const backboneNames = LEVELS.flatMap((_, l) => [`backbone.g${l + 2}`, `backbone.p${l + 2}`]);
    expect([...grads.keys()].sort()).toEqual([...headNames, ...backboneNames].sort());
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
    for (const [kind, key] of [['g', 'grad_c_q_global'], ['p', 'grad_c_q_patch']] as const) {
      (outputs[key] as Json[]).forEach((t, l) => {
        const expected = nhwc(t);
        const e = tensorRelErr(grads.get(`backbone.${kind}${l + 2}`)!, expected);
        expect(e, `grad at ${kind === 'g' ? 'global' : 'patch'} C${l + 2}`).toBeLessThan(REL_TOL);
        maxBackbone = Math.max(maxBackbone, e);
        expected.dispose();
      });
    }
    errors.backboneGrads = maxBackbone;

    // State after the step: the momentum heads (EMA before the keys) and every queue with its pointer.
    errors.momentumHeads = expectStoreMatches(method.momentumEncoder, outputs.heads_k_after);
    let maxQueue = 0;
    LEVELS.forEach((n, l) => {
      for (const [ours, ref] of [[method.queues.global[l]!, outputs.queue_g_after[l]], [method.queues.local[l]!, outputs.queue_l_after[l]]] as const) {
        const rows = queueRows(ref);
        const e = tensorRelErr(ours.buffer, rows);
        expect(e, `${ours.name} after`).toBeLessThan(REL_TOL);
        expect(ours.pointer, `${ours.name} pointer`).toBe(outputs.queue_ptr_after);
        maxQueue = Math.max(maxQueue, e);
        rows.dispose();
      }
      expect(method.queues.global[l]!.name).toBe(`queue_g_${n}`);
    });
    errors.queues = maxQueue;
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(REL_TOL);
    console.info('detco parity: max relative errors', errors);
    tf.dispose([...tensors, ...views, ...grads.values()]);
    method.dispose();
  });

  it('embeds queries and keys as the transcription does (q_g, q_l, k_g, k_l per level)', () => {
    const { inputs, outputs } = fixture;
    const { method, tensors } = build();
    const views = markerViews();
    const strip = (v: tf.Tensor4D, order: number[][]) => jigsawStrip(v, order);
    const patches = (s: tf.Tensor4D) => tf.reshape(s, [B * G * G, PATCH, PATCH, 3]) as tf.Tensor4D;
    loadNeck(method.momentumEncoder, outputs.heads_k_after);
    const opts = { training: true };
    const stripQ = strip(views[2]!, inputs.order_q);
    const stripK = strip(views[3]!, inputs.order_k);
    const got = {
      q_g: method.q.head.globalEmbeddings(method.q.backbone.applyStages!(views[0]!, opts)),
      q_l: method.q.head.localEmbeddings(method.q.backbone.applyStages!(patches(stripQ), opts)),
      k_g: method.k.head.globalEmbeddings(method.k.backbone.applyStages!(views[1]!, opts)),
      k_l: method.k.head.localEmbeddings(method.k.backbone.applyStages!(patches(stripK), opts)),
    };
    for (const [name, ts] of Object.entries(got)) {
      ts.forEach((t, l) => {
        const ref = tf.tensor2d((outputs[name][l] as Json).data, (outputs[name][l] as Json).shape as [number, number]);
        expect(tensorRelErr(t, ref), `${name} ${LEVELS[l]}`).toBeLessThan(REL_TOL);
        ref.dispose();
      });
    }
    tf.dispose([...tensors, ...views, stripQ, stripK, ...Object.values(got).flat()]);
    method.dispose();
  });

  it('has the sizes and arguments the tests assume', () => {
    expect(fixture.inputs.c_q_patch[0].shape[0]).toBe(B * G * G);
    expect(fixture.inputs.order_q.every((o: number[]) => [...o].sort((a, b) => a - b).join() === '0,1,2,3,4,5,6,7,8')).toBe(true);
    expect(new Set(fa.levelWeights).size).toBe(4); // asymmetric: a level mix-up shows
    expect(fa.temperature).not.toBe(detco.args.parse({}).temperature);
  });
});

describe('DetCo jigsaw patches and the pieces around the step', () => {
  it('cuts each patch-set view into its 3×3 cells and stacks them in the drawn order', () => {
    const [b, p] = [2, 3];
    const side = 3 * p;
    const view = tf.tidy(() => tf.reshape(tf.range(0, b * side * side * 3), [b, side, side, 3])) as tf.Tensor4D;
    const order = [
      [4, 0, 8, 1, 2, 3, 5, 6, 7],
      [8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const strip = jigsawStrip(view, order);
    expect(strip.shape).toEqual([b, 9 * p, p, 3]);
    const v = view.arraySync() as number[][][][];
    const s = strip.arraySync() as number[][][][];
    for (let i = 0; i < b; i++)
      for (let slot = 0; slot < 9; slot++) {
        const cell = order[i]![slot]!;
        const [r, c] = [Math.floor(cell / 3), cell % 3];
        for (let y = 0; y < p; y++) for (let x = 0; x < p; x++) expect(s[i]![slot * p + y]![x]).toEqual(v[i]![r * p + y]![c * p + x]);
      }
    expect(() => jigsawStrip(tf.zeros([1, 8, 8, 3]) as tf.Tensor4D, [[0, 1, 2, 3, 4, 5, 6, 7, 8]])).toThrow(/divisible by 3/);
    tf.dispose([view, strip]);
  });

  it('draws one permutation of the 9 cells per image (the identity without shuffling), from the step\'s rng', () => {
    const a = drawPatchOrders(new Rng(3), 5, true);
    expect(a).toEqual(drawPatchOrders(new Rng(3), 5, true));
    for (const o of a) expect([...o].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(a.some((o) => o.join() !== '0,1,2,3,4,5,6,7,8')).toBe(true);
    expect(drawPatchOrders(new Rng(3), 2, false)).toEqual([
      [0, 1, 2, 3, 4, 5, 6, 7, 8],
      [0, 1, 2, 3, 4, 5, 6, 7, 8],
    ]);
  });

  it('declares 2 global views and 2 patch-set sources of 3 patches a side (64/224 of the image, multiple of 8)', () => {
    expect([224, 64, 32].map(localPatchSize)).toEqual([64, 16, 8]);
    expect(detco.consumes.views(64, detco.args.parse({})).map((v) => v.size)).toEqual([64, 64, 48, 48]);
    expect(detco.args.parse({}).levelWeights).toEqual([0.1, 0.4, 0.7, 1.0]);
  });

  it('refuses a backbone without stages, weights for another number of levels, and all-zero weights, naming the field', () => {
    const noStages: BackboneFactory = () => ({ outChannels: 4, apply: (x) => x });
    expect(() => new DetCo(detco.args.parse({}), noStages, 0)).toThrow(BadInputError);
    const three: BackboneFactory = () => ({ outChannels: 4, stageChannels: [2, 3, 4], apply: (x) => x, applyStages: (x) => [x, x, x] });
    expect(() => new DetCo(detco.args.parse({}), three, 0)).toThrow(/args\.levelWeights: 4 level weights for a backbone with 3 stages/);
    expect(() => detco.validate!(detco.args.parse({ levelWeights: [0, 0, 0, 0], queueSize: 64 }), { batchSize: 8, imageSize: 32 })).toThrow(/args\.levelWeights/);
    expect(() => detco.validate!(detco.args.parse({ queueSize: 60 }), { batchSize: 8, imageSize: 32 })).toThrow(/args\.queueSize/);
  });
});
