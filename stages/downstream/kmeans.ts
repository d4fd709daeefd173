/**
 * Seeded k-means (k-means++ initialisation, Lloyd iterations) on L2-normalised vectors, i.e.
 * spherical clustering by cosine similarity, which is how dense SSL features are compared.
 * Small inputs only (one image's feature map): plain loops, no tensors.
 */
import { BadInputError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';

export function l2NormalizeRows(x: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += x[r * dim + j]! ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < dim; j++) out[r * dim + j] = x[r * dim + j]! * inv;
  }
  return out;
}

export function kmeans(points: Float32Array, dim: number, k: number, seed: number | string, maxIterations = 30): { assignment: Int32Array; centroids: Float32Array } {
  const n = points.length / dim;
  if (!Number.isInteger(n) || n === 0) throw new BadInputError('k-means needs at least one point', 'points');
  if (!Number.isInteger(k) || k < 1) throw new BadInputError(`k must be a positive integer, got ${k}`, 'k');
  const x = l2NormalizeRows(points, dim);
  const rng = Rng.fromSeed('kmeans', seed);
  const kk = Math.min(k, n);
  const centroids = new Float32Array(kk * dim);
  const dist2 = (p: number, c: number) => {
    let s = 0;
    for (let j = 0; j < dim; j++) s += (x[p * dim + j]! - centroids[c * dim + j]!) ** 2;
    return s;
  };
  // k-means++: each next centre with probability proportional to squared distance to the nearest one.
  const first = rng.int(0, n);
  centroids.set(x.subarray(first * dim, (first + 1) * dim), 0);
  const nearest = new Float64Array(n).fill(Infinity);
  for (let c = 1; c < kk; c++) {
    let total = 0;
    for (let p = 0; p < n; p++) {
      nearest[p] = Math.min(nearest[p]!, dist2(p, c - 1));
      total += nearest[p]!;
    }
    let pick = 0;
    if (total > 0) {
      let r = rng.next() * total;
      for (pick = 0; pick < n - 1; pick++) {
        r -= nearest[pick]!;
        if (r < 0) break;
      }
    } else pick = rng.int(0, n);
    centroids.set(x.subarray(pick * dim, (pick + 1) * dim), c * dim);
  }
  const assignment = new Int32Array(n).fill(-1);
  for (let it = 0; it < maxIterations; it++) {
    let changed = false;
    for (let p = 0; p < n; p++) {
      let best = 0;
      let bestD = Infinity;
      for (let c = 0; c < kk; c++) {
        const d = dist2(p, c);
        if (d < bestD) {
          bestD = d;
          best = c;
        }
      }
      if (assignment[p] !== best) {
        assignment[p] = best;
        changed = true;
      }
    }
    if (!changed) break;
    const sums = new Float64Array(kk * dim);
    const counts = new Int32Array(kk);
    for (let p = 0; p < n; p++) {
      counts[assignment[p]!]!++;
      for (let j = 0; j < dim; j++) sums[assignment[p]! * dim + j]! += x[p * dim + j]!;
    }
    for (let c = 0; c < kk; c++) {
      if (counts[c] === 0) continue; // an emptied cluster keeps its centre
      for (let j = 0; j < dim; j++) centroids[c * dim + j] = sums[c * dim + j]! / counts[c]!;
    }
  }
  return { assignment, centroids };
}
