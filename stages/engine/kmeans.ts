/**
 * Batched k-means on tensors: Lloyd iterations over all rows of one [N, D] matrix at once (R2O clusters
 * every superpixel of a batch jointly), with k-means++ seeding or injected initial centres.
 *
 * Semantics follow the torch k-means R2O ships (KKallidromitis/r2o@c1a12f7 `utils/kmeans/kmeans.py`,
 * `_kmeanspp.py`, `utils/metrics.py`, Ali Hassani's "Torch-based K-Means"):
 *   d(x, c)   = max(‖x‖² + ‖c‖² − 2·x·c, 0)                      (squared Euclidean, clamped at 0)
 *   label(x)  = argmin_c d(x, c),   inertia = Σ_x min_c d(x, c)
 *   loop ≤ maxIter: assign; stop when |inertia − previous inertia| < eps (labels = this assignment);
 *                   otherwise every centre ← mean of its points.
 * and, with well-separated data, scikit-learn's `KMeans(init=centres, n_init=1, algorithm='lloyd')`
 * (test/engine/kmeans.test.ts checks labels and centres against it).
 *
 * One deliberate difference: a cluster that loses all its points keeps its previous centre. The torch
 * code takes the mean of an empty set (NaN); torch's argmin then sends every point to the NaN centre
 * and the clustering collapses to one cluster. scikit-learn relocates empty centres instead.
 *
 * k-means++ (`kMeansPlusPlus`) is scikit-learn's greedy variant, as `_kmeanspp.py` ports it: first centre
 * uniform, then each next centre the best of 2 + ⌊ln k⌋ candidates drawn ∝ D², by total potential.
 * Its random draws come from our Rng, so it reproduces the algorithm, not torch's random stream.
 *
 * Shapes: N points, D features, k clusters.
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../../core/rng.js';

export interface KMeansOptions {
  /** k, the number of clusters. */
  k: number;
  /** Initial centres [k, D] (copied, not owned), or 'k-means++' seeded with `rng`. Default 'k-means++'. */
  init?: tf.Tensor2D | 'k-means++';
  /** Randomness of k-means++ (required when `init` is 'k-means++'). */
  rng?: Rng;
  /** Maximum Lloyd iterations (R2O: 200, the torch KMeans default). */
  maxIter?: number;
  /** Stop when the inertia changes by less than this (torch KMeans `eps`, default 1e-6). */
  eps?: number;
}

export interface KMeansResult {
  /** Cluster of every point, [N]. */
  labels: Int32Array;
  /** Final centres [k, D] (caller disposes). */
  centres: tf.Tensor2D;
  /** Σ min distance of the last assignment. */
  inertia: number;
  /** Lloyd iterations run (assignments made). */
  nIter: number;
}

/** Squared Euclidean distances [N, k], clamped at 0 (`distance_matrix` + `distance_validation`). */
export function squaredDistances(x: tf.Tensor2D, centres: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const xx = tf.sum(tf.square(x), 1, true); // [N, 1]
    const cc = tf.reshape(tf.sum(tf.square(centres), 1), [1, -1]); // [1, k]
    return tf.relu(tf.sub(tf.add(xx, cc), tf.mul(2, tf.matMul(x, centres, false, true)))) as tf.Tensor2D;
  });
}

/** scikit-learn's greedy k-means++: [k, D] centres, each a row of `x`. */
export function kMeansPlusPlus(x: tf.Tensor2D, k: number, rng: Rng): tf.Tensor2D {
  const [n] = x.shape;
  if (!(Number.isInteger(k) && k >= 1 && k <= n)) throw new Error(`kMeansPlusPlus: need 1 <= k (${k}) <= points (${n})`);
  const trials = 2 + Math.floor(Math.log(k));
  const chosen: number[] = [rng.int(0, n)];
  const distTo = (i: number): Float32Array =>
    tf.tidy(() => squaredDistances(tf.slice(x, [i, 0], [1, -1]) as tf.Tensor2D, x).dataSync() as Float32Array);
  let closest = distTo(chosen[0]!); // D² to the nearest chosen centre, [N]
  let potential = closest.reduce((a, b) => a + b, 0);
  for (let c = 1; c < k; c++) {
    // candidates ∝ D²: searchsorted(cumsum(D²), u·potential), clamped to the last index
    const cumulative = new Float64Array(n);
    let acc = 0;
    for (let i = 0; i < n; i++) cumulative[i] = acc += closest[i]!;
    let best = -1, bestPotential = Infinity, bestDist: Float32Array = closest;
    for (let t = 0; t < trials; t++) {
      const target = rng.next() * potential;
      let lo = 0, hi = n; // first index with cumulative >= target (torch.searchsorted, left)
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cumulative[mid]! < target) lo = mid + 1;
        else hi = mid;
      }
      const candidate = Math.min(lo, n - 1);
      const d = distTo(candidate);
      let p = 0;
      for (let i = 0; i < n; i++) p += d[i] = Math.min(d[i]!, closest[i]!);
      if (p < bestPotential) [best, bestPotential, bestDist] = [candidate, p, d];
    }
    chosen.push(best);
    closest = bestDist;
    potential = bestPotential;
  }
  return tf.tidy(() => tf.gather(x, tf.tensor1d(chosen, 'int32')) as tf.Tensor2D);
}

/** Nearest centre of every point and the inertia. */
function assign(x: tf.Tensor2D, centres: tf.Tensor2D): { labels: tf.Tensor1D; inertia: number } {
  const { labels, inertia } = tf.tidy(() => {
    const d = squaredDistances(x, centres);
    return { labels: tf.argMin(d, 1) as tf.Tensor1D, inertia: tf.sum(tf.min(d, 1)) };
  });
  const value = inertia.dataSync()[0]!;
  inertia.dispose();
  return { labels, inertia: value };
}

/** Mean of each cluster's points; an empty cluster keeps its centre (see the file note). */
function updateCentres(x: tf.Tensor2D, labels: tf.Tensor1D, centres: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const k = centres.shape[0];
    const sums = tf.unsortedSegmentSum(x, labels, k); // [k, D]
    const counts = tf.unsortedSegmentSum(tf.ones([x.shape[0], 1]), labels, k); // [k, 1]
    const means = tf.div(sums, tf.maximum(counts, 1));
    return tf.where(tf.greater(counts, 0), means, centres) as tf.Tensor2D;
  });
}

/** Lloyd's k-means on the rows of x [N, D] (see the file note for the stopping rule). */
export function kmeans(x: tf.Tensor2D, o: KMeansOptions): KMeansResult {
  const maxIter = o.maxIter ?? 200;
  const eps = o.eps ?? 1e-6;
  let centres: tf.Tensor2D;
  if (o.init === undefined || o.init === 'k-means++') {
    if (!o.rng) throw new Error('kmeans: k-means++ needs an rng');
    centres = kMeansPlusPlus(x, o.k, o.rng);
  } else {
    if (o.init.shape[0] !== o.k || o.init.shape[1] !== x.shape[1]) throw new Error(`kmeans: initial centres [${o.init.shape}] do not match k=${o.k}, D=${x.shape[1]}`);
    centres = tf.clone(o.init);
  }
  let labels: tf.Tensor1D | null = null;
  let inertia = Number.NaN;
  let previous: number | null = null;
  let itr = 0;
  for (; itr < maxIter; itr++) {
    const out = assign(x, centres);
    labels?.dispose();
    labels = out.labels;
    inertia = out.inertia;
    if (previous !== null && Math.abs(previous - inertia) < eps) break;
    previous = inertia;
    const next = updateCentres(x, labels, centres);
    centres.dispose();
    centres = next;
  }
  const result = { labels: labels ? (labels.dataSync() as Int32Array).slice() : new Int32Array(x.shape[0]), centres, inertia, nIter: Math.min(itr + 1, maxIter) };
  labels?.dispose();
  return result;
}
