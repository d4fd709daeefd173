/**
 * Batched k-means (stages/engine/kmeans.ts) against scikit-learn's Lloyd KMeans with the same initial centres:
 * test/fixtures/engine/kmeans/fixture.json, written by test/fixtures/engine/kmeans/make_fixture.py (see its docstring).
 */
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import { kmeans, kMeansPlusPlus, squaredDistances } from '../../stages/engine/kmeans.js';

interface Json { shape: number[]; data: number[] }
interface Case { name: string; X: Json; init: Json; labels: number[]; centres: Json; n_iter: number }
const fixture = JSON.parse(readFileSync(new URL('../fixtures/engine/kmeans/fixture.json', import.meta.url), 'utf8')) as { generator: string; cases: Case[] };
const t2 = (j: Json) => tf.tensor2d(j.data, j.shape as [number, number]);

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('kmeans vs scikit-learn KMeans (lloyd, injected init)', () => {
  it('names its generator', () => {
    expect(fixture.generator).toBe('test/fixtures/engine/kmeans/make_fixture.py');
    expect(fixture.cases.length).toBeGreaterThanOrEqual(3);
  });

  for (const c of fixture.cases) {
    it(`${c.name}: same labels and centres`, () => {
      const [x, init, ref] = [t2(c.X), t2(c.init), t2(c.centres)];
      const out = kmeans(x, { k: c.init.shape[0]!, init });
      expect(Array.from(out.labels)).toEqual(c.labels);
      const err = tf.tidy(() => tf.max(tf.abs(tf.sub(out.centres, ref))).dataSync()[0]!);
      expect(err).toBeLessThan(1e-5);
      // the stopping rule needs one more assignment than scikit-learn's "labels unchanged" test, at most
      expect(out.nIter).toBeGreaterThanOrEqual(c.n_iter);
      expect(out.nIter).toBeLessThanOrEqual(c.n_iter + 2);
      tf.dispose([x, init, ref, out.centres]);
    });
  }

  it('respects maxIter and does not own the injected centres', () => {
    const c = fixture.cases.find((k) => k.name === 'far-init')!;
    const [x, init] = [t2(c.X), t2(c.init)];
    const out = kmeans(x, { k: 3, init, maxIter: 1 });
    expect(out.nIter).toBe(1);
    // one assignment to the initial centres, then one update: labels are the first assignment
    const first = tf.tidy(() => Array.from(tf.argMin(squaredDistances(x, init), 1).dataSync()));
    expect(Array.from(out.labels)).toEqual(first);
    expect(init.isDisposed).toBe(false);
    tf.dispose([x, init, out.centres]);
  });

  it('keeps the centre of a cluster that empties', () => {
    const x = tf.tensor2d([[0, 0], [0.1, 0], [5, 5], [5.1, 5]]);
    const init = tf.tensor2d([[0, 0], [5, 5], [100, 100]]);
    const out = kmeans(x, { k: 3, init });
    expect(Array.from(out.labels)).toEqual([0, 0, 1, 1]);
    expect(Array.from(out.centres.dataSync()).slice(4)).toEqual([100, 100]);
    tf.dispose([x, init, out.centres]);
  });
});

describe('kMeansPlusPlus', () => {
  it('picks k distinct data rows, one per well-separated blob, deterministically per seed', () => {
    const c = fixture.cases.find((k) => k.name === 'unit-vectors')!;
    const x = t2(c.X);
    const a = kMeansPlusPlus(x, 6, new Rng(7));
    const b = kMeansPlusPlus(x, 6, new Rng(7));
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    const rows = tf.tidy(() => squaredDistances(a, x).arraySync());
    const picked = rows.map((r) => r.findIndex((d) => d < 1e-5));
    expect(picked.every((i) => i >= 0)).toBe(true);
    expect(new Set(picked.map((i) => c.labels[i])).size).toBe(6); // one seed per true cluster
    const out = kmeans(x, { k: 6, rng: new Rng(7) });
    expect(new Set(out.labels).size).toBe(6);
    tf.dispose([x, a, b, out.centres]);
  });
});
