/**
 * Pair DETR (stages/downstream/pairdetr/pairdetr.ts) against test/fixtures/downstream/pairdetr/make_parity.py under
 * PyTorch 1.13: the official DETR modules (transformer, MLP heads, HungarianMatcher, SetCriterion) and a PyTorch
 * transcription of the paper's parts (two decoders on one memory, the shared classifier, the top-left box, the
 * pair-association InfoNCE, inference pairing). Identical weights and inputs: decoder outputs, predictions, both
 * decoders' matchings and every loss term, the positive pairs, gradients of every parameter and of the feature map,
 * clip_grad_norm_ and one AdamW step (moments and weights), and the detections; relative error ≤ 1e-4. L_pair is also
 * checked against a naive per-element loop written from the equation.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import type { DetrTarget } from '../../stages/engine/detr/matcher.js';
import { clipGradientsByGlobalNorm, disposeGradients, namedGradients } from '../../stages/engine/grads.js';
import { AdamW, excludeNothing } from '../../stages/engine/optim.js';
import { ParamStore } from '../../stages/engine/params.js';
import { pairAssociationLoss, PairDetrHead, pairDetrCriterion, pairDetrInferenceArrays, pairDetrPostprocess, positivePairs, type PairDetrCriterionConfig } from '../../stages/downstream/pairdetr/pairdetr.js';
import { boolMask, expectClose, expectScalarClose, loadState, nhwc, printParityReport, tensor, toOurLayout, type Json } from '../engine/detr_fixture.js';

const ref = JSON.parse(readFileSync(new URL('../fixtures/downstream/pairdetr/parity.json', import.meta.url), 'utf8'));
const keep = <T>(fn: () => T): T => tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as T;
const s = ref.sizes;

beforeAll(async () => {
  await initBackend('tensorflow');
});
afterAll(() => printParityReport('Pair DETR vs make_parity.py (official DETR + paper transcription)'));

const criterion: PairDetrCriterionConfig = {
  numClasses: s.numClasses,
  eosCoef: ref.eosCoef,
  costs: ref.costs,
  weights: ref.weights,
  pairLossCoef: ref.pairLossCoef,
  temperature: ref.temperature,
};

function build(): { store: ParamStore; head: PairDetrHead } {
  const store = new ParamStore();
  const head = new PairDetrHead(store.scope(''), {
    backboneChannels: s.backboneChannels,
    numClasses: s.numClasses,
    numQueries: s.numQueries,
    auxLoss: true,
    transformer: { dModel: s.dModel, nHead: s.nHead, numEncoderLayers: s.numEncoderLayers, numDecoderLayers: s.numDecoderLayers, dimFeedforward: s.dimFeedforward, dropout: 0, activation: 'relu', normalizeBefore: false, returnIntermediateDec: true },
  }, 'parity');
  loadState(store, ref.state);
  return { store, head };
}

/** L_pair by loops over plain numbers: normalise, dot, log-sum-exp per row and per column, as the equation reads. */
function naivePairLoss(hC: number[][][], hT: number[][][], pairs: number[][], tau: number): number {
  const unit = (v: number[]) => {
    const n = Math.max(Math.sqrt(v.reduce((a, x) => a + x * x, 0)), 1e-12);
    return v.map((x) => x / n);
  };
  const dot = (a: number[], b: number[]) => a.reduce((acc, x, d) => acc + x * b[d]!, 0);
  let sum = 0;
  for (const [b, i, k] of pairs) {
    const zc = hC[b!]!.map(unit);
    const zt = hT[b!]!.map(unit);
    const q = zc.length;
    // ℓ^{c→t}: row i of z^c · z^t / τ, the positive at column k.
    const row = Array.from({ length: q }, (_, col) => dot(zc[i!]!, zt[col]!) / tau);
    const rowMax = Math.max(...row);
    const lct = -(row[k!]! - rowMax - Math.log(row.reduce((a, x) => a + Math.exp(x - rowMax), 0)));
    // ℓ^{t→c}: column k, the positive at row i.
    const col = Array.from({ length: q }, (_, r) => dot(zt[k!]!, zc[r]!) / tau);
    const colMax = Math.max(...col);
    const ltc = -(col[i!]! - colMax - Math.log(col.reduce((a, x) => a + Math.exp(x - colMax), 0)));
    sum += 0.5 * (lct + ltc);
  }
  return pairs.length ? sum / pairs.length : 0;
}

/** [L, B, Q, D] JSON → the last layer as nested arrays [B][Q][D]. */
function lastLayerArrays(t: Json): number[][][] {
  const [l, b, q, d] = t.shape as [number, number, number, number];
  const off = (l - 1) * b * q * d;
  return Array.from({ length: b }, (_, i) => Array.from({ length: q }, (_, j) => t.data.slice(off + (i * q + j) * d, off + (i * q + j + 1) * d)));
}

describe('Pair DETR objective vs the PyTorch transcription (official DETR modules)', () => {
  it('forward: both decoders, shared classifier, centre boxes and top-left corners; both matchings, positive pairs, every loss term', () => {
    const { store, head } = build();
    const fmap = nhwc(ref.featureMap);
    const mask = boolMask(ref.featureMask) as tf.Tensor3D;
    const targets = ref.targets as DetrTarget[];
    const r = keep(() => {
      const out = head.apply(fmap, mask, { training: true });
      const crit = pairDetrCriterion(out, targets, criterion);
      const stack = (o: typeof out.center, key: 'predLogits' | 'predBoxes') => tf.stack([...o.auxOutputs!.map((a) => a[key]), o[key]]);
      return { out, crit, logitsC: stack(out.center, 'predLogits'), boxesC: stack(out.center, 'predBoxes'), logitsT: stack(out.topLeft, 'predLogits'), boxesT: stack(out.topLeft, 'predBoxes') };
    });
    expectClose('hs centre decoder', r.out.hsCenter, tensor(ref.hsCenter));
    expectClose('hs top-left decoder', r.out.hsTopLeft, tensor(ref.hsTopLeft));
    expectClose('logits centre (every layer)', r.logitsC, tensor(ref.logitsCenter));
    expectClose('boxes centre (every layer)', r.boxesC, tensor(ref.boxesCenter));
    expectClose('logits top-left (every layer)', r.logitsT, tensor(ref.logitsTopLeft));
    expectClose('boxes top-left as cxcywh (every layer)', r.boxesT, tensor(ref.boxesTopLeft));
    expectClose('top-left corners (x0, y0, w, h)', r.out.corners, tensor(ref.corners));
    // Matchings of the last layers and the pairs they give (image 2 has 7 objects for 4 queries: 3 of 4 in common).
    const asIndices = (m: number[][][]) => m.map(([src, tgt]) => ({ src: src!, tgt: tgt! }));
    const pairs = positivePairs(asIndices(ref.indicesCenter), asIndices(ref.indicesTopLeft));
    expect(pairs.map(({ image, i, k }) => [image, i, k])).toEqual(ref.pairs);
    expect(r.crit.pairs.map(({ image, i, k }) => [image, i, k])).toEqual(ref.pairs);
    expect(r.crit.pairs.filter((p) => p.image === 2)).toHaveLength(3);
    for (const [name, v] of Object.entries(r.crit.losses)) {
      const want = name === 'loss_pair' ? ref.lossPair : name.startsWith('tl.') ? ref.lossesTopLeft[name.slice(3)] : ref.lossesCenter[name];
      expect(want, name).toBeTypeOf('number');
      expectScalarClose(name === 'loss_pair' ? 'loss_pair' : name.replace(/_\d+$/, '_i'), v.dataSync()[0]!, want);
    }
    expect(Object.keys(r.crit.losses)).toHaveLength(2 * 3 * s.numDecoderLayers + 1);
    expectScalarClose('total centre (weighted SetCriterion)', r.crit.centerTotal.dataSync()[0]!, ref.totalCenter);
    expectScalarClose('total top-left (weighted SetCriterion)', r.crit.topLeftTotal.dataSync()[0]!, ref.totalTopLeft);
    expectScalarClose('total = L_c + L_t + λ·L_pair', r.crit.total.dataSync()[0]!, ref.total);
    tf.dispose([fmap, mask, r as unknown as tf.TensorContainer]);
    store.dispose();
  });

  it('L_pair: the engine op, a naive per-element loop and the reference agree; a swapped term would not', () => {
    const hC = lastLayerArrays(ref.hsCenter);
    const hT = lastLayerArrays(ref.hsTopLeft);
    const naive = naivePairLoss(hC, hT, ref.pairs, ref.temperature);
    expectScalarClose('L_pair naive loop vs reference', naive, ref.lossPair);
    const pairs = (ref.pairs as number[][]).map(([image, i, k]) => ({ image: image!, i: i!, k: k! }));
    const op = tf.tidy(() => pairAssociationLoss(tf.tensor3d(hC), tf.tensor3d(hT), pairs, ref.temperature).dataSync()[0]!);
    expectScalarClose('L_pair engine op vs naive loop', op, naive);
    // The fixture tells the terms apart: swapping the decoders' roles, the temperature, or dropping one direction moves it.
    const swapped = naivePairLoss(hC, hT, (ref.pairs as number[][]).map(([b, i, k]) => [b!, k!, i!]), ref.temperature);
    expect(Math.abs(swapped - ref.lossPair) / ref.lossPair).toBeGreaterThan(1e-2);
    expect(Math.abs(naivePairLoss(hC, hT, ref.pairs, 1) - ref.lossPair) / ref.lossPair).toBeGreaterThan(1e-2);
    expect(tf.tidy(() => pairAssociationLoss(tf.zeros([1, 2, 3]), tf.zeros([1, 2, 3]), [], 0.1).dataSync()[0])).toBe(0);
    expect(() => pairAssociationLoss(tf.zeros([1, 2, 3]), tf.zeros([1, 2, 3]), pairs.slice(0, 1), 0)).toThrow(/temperature must be > 0/);
  });

  it('gradients of every parameter and of the feature map; clip_grad_norm_ and one AdamW step (moments and weights)', () => {
    const { store, head } = build();
    const fmap = tf.variable(nhwc(ref.featureMap));
    const mask = boolMask(ref.featureMask) as tf.Tensor3D;
    const targets = ref.targets as DetrTarget[];
    const params = store.trainable();
    const { loss, grads } = namedGradients(() => pairDetrCriterion(head.apply(fmap as tf.Tensor4D, mask, { training: true }), targets, criterion).total, new Map([...params, ['input:fmap', fmap]]));
    expectScalarClose('total (under the tape)', loss.dataSync()[0]!, ref.total);
    expectClose('grad feature map (to the backbone)', grads.get('input:fmap')!, nhwc(ref.gradFeatureMap));
    expect([...params.keys()].sort()).toEqual(Object.keys(ref.grads).sort());
    // Zero in exact arithmetic (the first decoder layers' self-attention sees tgt = 0): only float noise on both sides.
    const largest = Math.max(...Object.values(ref.grads as Record<string, Json>).map((t) => Math.max(...t.data.map(Math.abs))));
    for (const [name, t] of Object.entries(ref.grads as Record<string, Json>)) {
      if (Math.max(...t.data.map(Math.abs)) < 1e-6 * largest) {
        expect(name).toMatch(/^(transformer\.decoder|decoder_tl)\.layers\.0\.self_attn\.in_proj_weight$/);
        continue;
      }
      expectClose(`grad ${name.replace(/layers\.\d+/g, 'layers.i')}`, grads.get(name)!, toOurLayout(store, name, t));
    }
    grads.get('input:fmap')!.dispose();
    grads.delete('input:fmap');
    const clipped = clipGradientsByGlobalNorm(grads, ref.clipMaxNorm);
    expectScalarClose('clip_grad_norm_ total norm', clipped.totalNorm.dataSync()[0]!, ref.gradNorm);
    const opt = new AdamW(params, { weightDecay: ref.weightDecay, noDecay: excludeNothing }, store.info);
    opt.step(clipped.grads, ref.lr);
    for (const [name, m] of Object.entries(ref.moments as Record<string, { expAvg: Json; expAvgSq: Json }>)) {
      if (/layers\.0\.self_attn\.in_proj_weight$/.test(name) && /^(transformer\.decoder|decoder_tl)\./.test(name)) continue; // float noise (above)
      expectClose(`AdamW exp_avg ${name.replace(/layers\.\d+/g, 'layers.i')}`, opt.slots().get(`exp_avg/${name}`)!, toOurLayout(store, name, m.expAvg));
      expectClose(`AdamW exp_avg_sq ${name.replace(/layers\.\d+/g, 'layers.i')}`, opt.slots().get(`exp_avg_sq/${name}`)!, toOurLayout(store, name, m.expAvgSq));
    }
    for (const [name, t] of Object.entries(ref.after as Record<string, Json>)) expectClose(`weights after one step ${name.replace(/layers\.\d+/g, 'layers.i')}`, store.get(name), toOurLayout(store, name, t));
    tf.dispose([loss, fmap, mask, clipped.totalNorm]);
    disposeGradients(clipped.grads);
    opt.dispose();
    store.dispose();
  });

  it('inference: similarity, each centre query\'s top-left partner, joint class and score, the keypoint-pair box', () => {
    const { store, head } = build();
    const fmap = nhwc(ref.featureMap);
    const mask = boolMask(ref.featureMask) as tf.Tensor3D;
    let arrays: ReturnType<typeof pairDetrInferenceArrays> | null = null;
    tf.tidy(() => {
      arrays = pairDetrInferenceArrays(head.apply(fmap, mask, { training: false }));
    });
    const a = arrays! as ReturnType<typeof pairDetrInferenceArrays>;
    expectClose('similarity z^c · z^t', tf.tensor(a.similarity, ref.postprocess.similarity.shape), tensor(ref.postprocess.similarity));
    const dets = pairDetrPostprocess(a, s.numQueries, s.numClasses, s.size);
    const want = ref.postprocess.detections as Array<Array<{ partner: number; label: number; score: number; box: number[] }>>;
    expect(dets.map((img) => img.map((d) => [d.partner, d.label]))).toEqual(want.map((img) => img.map((d) => [d.partner, d.label])));
    dets.flat().forEach((d, n) => {
      const w = want.flat()[n]!;
      expectScalarClose('detection score', d.score, w.score);
      expectClose('detection box (pixels)', tf.tensor1d(d.box), tf.tensor1d(w.box));
    });
    tf.dispose([fmap, mask]);
    store.dispose();
  });
});
