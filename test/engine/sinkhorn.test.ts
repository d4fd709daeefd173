/**
 * Sinkhorn-Knopp (stages/engine/sinkhorn.ts) against a plain float64 loop written from SwAV's Algorithm 1 /
 * `distributed_sinkhorn` (facebookresearch/swav@06b1b7c main_swav.py) in the official [K, N] orientation, so the
 * transposition in ours is checked too. The official function itself is run in test/methods/swav.parity.test.ts.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import { sinkhornKnopp } from '../../stages/engine/sinkhorn.js';

/** Float64 reference, Q kept as the official K×N matrix; returns Qᵀ as N×K rows. */
function sinkhorn64(scores: number[][], epsilon: number, iterations: number): number[][] {
  const n = scores.length;
  const k = scores[0]!.length;
  const q: number[][] = Array.from({ length: k }, (_, p) => Array.from({ length: n }, (_, s) => Math.exp(scores[s]![p]! / epsilon)));
  let total = 0;
  for (let p = 0; p < k; p++) for (let s = 0; s < n; s++) total += q[p]![s]!;
  for (let p = 0; p < k; p++) for (let s = 0; s < n; s++) q[p]![s]! /= total;
  for (let it = 0; it < iterations; it++) {
    for (let p = 0; p < k; p++) {
      let row = 0;
      for (let s = 0; s < n; s++) row += q[p]![s]!;
      for (let s = 0; s < n; s++) q[p]![s] = q[p]![s]! / row / k;
    }
    for (let s = 0; s < n; s++) {
      let col = 0;
      for (let p = 0; p < k; p++) col += q[p]![s]!;
      for (let p = 0; p < k; p++) q[p]![s] = q[p]![s]! / col / n;
    }
  }
  return Array.from({ length: n }, (_, s) => Array.from({ length: k }, (_, p) => q[p]![s]! * n));
}

/** Cosine scores of random unit embeddings and unit prototypes, as SwAV feeds them: [N, K] in [-1, 1]. */
function cosineScores(rng: Rng, n: number, k: number, d: number): number[][] {
  const unit = () => {
    const v = Array.from({ length: d }, () => rng.normal());
    const norm = Math.hypot(...v);
    return v.map((x) => x / norm);
  };
  const z = Array.from({ length: n }, unit);
  const c = Array.from({ length: k }, unit);
  return z.map((zi) => c.map((ck) => zi.reduce((acc, x, j) => acc + x * ck[j]!, 0)));
}

function maxRelErr(ours: number[][], ref: number[][]): number {
  let num = 0;
  let den = 0;
  ref.forEach((row, i) => row.forEach((r, j) => {
    num = Math.max(num, Math.abs(ours[i]![j]! - r));
    den = Math.max(den, Math.abs(r));
  }));
  return num / den;
}

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('sinkhornKnopp vs a float64 loop', () => {
  const cases = [
    { name: 'SwAV defaults (ε 0.05, 3 iterations), N < K', n: 8, k: 30, epsilon: 0.05, iterations: 3 },
    { name: 'N > K (a queue in front of the batch)', n: 40, k: 12, epsilon: 0.05, iterations: 3 },
    { name: 'ε 0.1, 10 iterations', n: 16, k: 16, epsilon: 0.1, iterations: 10 },
    { name: 'one iteration', n: 5, k: 7, epsilon: 0.07, iterations: 1 },
    { name: 'zero iterations: a global softmax times N', n: 6, k: 4, epsilon: 0.2, iterations: 0 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const scores = cosineScores(new Rng(c.n * 1000 + c.k), c.n, c.k, 8);
      const ref = sinkhorn64(scores, c.epsilon, c.iterations);
      const x = tf.tensor2d(scores);
      const q = sinkhornKnopp(x, { epsilon: c.epsilon, iterations: c.iterations });
      const ours = q.arraySync();
      expect(q.shape).toEqual([c.n, c.k]);
      expect(maxRelErr(ours, ref)).toBeLessThan(1e-5);
      if (c.iterations > 0) for (const row of ours) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5); // an assignment per sample
      tf.dispose([x, q]);
    });
  }

  it('approaches equipartition: every prototype gets N/K of the mass', () => {
    const [n, k] = [24, 6];
    const x = tf.tensor2d(cosineScores(new Rng(7), n, k, 8));
    const q = sinkhornKnopp(x, { epsilon: 0.05, iterations: 50 });
    const perPrototype = tf.tidy(() => Array.from(tf.sum(q, 0).dataSync()));
    for (const m of perPrototype) expect(Math.abs(m - n / k) / (n / k)).toBeLessThan(1e-3);
    tf.dispose([x, q]);
  });

  it('stays finite where exp(S/ε) itself overflows float32 (ε 0.01: exp(S/ε) up to e^100)', () => {
    // Here the official float32 code gives inf/NaN. Ours subtracts the global max first, which the first
    // normalisation cancels; entries more than ~87/ε below the max underflow to 0, so the values are a float32
    // approximation of the float64 loop, not equal to it: only finiteness and the row sums are asserted.
    const scores = cosineScores(new Rng(11), 10, 9, 4);
    const x = tf.tensor2d(scores);
    const q = sinkhornKnopp(x, { epsilon: 0.01, iterations: 3 });
    const ours = q.arraySync();
    expect(ours.flat().every(Number.isFinite)).toBe(true);
    for (const row of ours) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
    tf.dispose([x, q]);
  });

  it('is unchanged by a constant added to every score (what the max subtraction relies on)', () => {
    const scores = cosineScores(new Rng(3), 12, 5, 8);
    const [x, shifted] = [tf.tensor2d(scores), tf.tensor2d(scores.map((r) => r.map((v) => v - 0.7)))];
    const [a, b] = [sinkhornKnopp(x, { epsilon: 0.05, iterations: 3 }), sinkhornKnopp(shifted, { epsilon: 0.05, iterations: 3 })];
    expect(maxRelErr(b.arraySync(), a.arraySync())).toBeLessThan(1e-5);
    expect(maxRelErr(b.arraySync(), sinkhorn64(scores, 0.05, 3))).toBeLessThan(1e-5);
    tf.dispose([x, shifted, a, b]);
  });

  it('leaks no tensors and rejects bad arguments', () => {
    const x = tf.tensor2d([[0.1, 0.2], [0.3, -0.4]]);
    const before = tf.memory().numTensors;
    sinkhornKnopp(x, { epsilon: 0.05, iterations: 3 }).dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(() => sinkhornKnopp(x, { epsilon: 0, iterations: 3 })).toThrow(/epsilon/);
    expect(() => sinkhornKnopp(x, { epsilon: 0.05, iterations: 1.5 })).toThrow(/iterations/);
    x.dispose();
  });
});
