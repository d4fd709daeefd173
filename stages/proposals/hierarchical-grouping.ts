import type { InitialRegions } from './region-features.js';

/** The four similarity measures of selective search and their weights in one strategy. */
export interface SimilarityWeights {
  colour: number;
  texture: number;
  size: number;
  fill: number;
}

/** A region produced by one grouping: its box [x1, y1, x2, y2) and its hierarchy level (1 = FH region). */
export interface GroupedRegion {
  box: [number, number, number, number];
  level: number;
}

/**
 * Max-heap of candidate merges. OpenCV re-sorts its whole similarity vector after every merge
 * (O(R^2 log R) per grouping); a heap with lazy deletion picks the same best pair in O(log R).
 * Ties go to the older entry, a deterministic choice where OpenCV's std::sort is unspecified.
 */
class MergeHeap {
  private sim: number[] = [];
  private a: number[] = [];
  private b: number[] = [];
  private seq: number[] = [];
  private counter = 0;

  get size(): number {
    return this.sim.length;
  }

  private above(i: number, j: number): boolean {
    return this.sim[i]! > this.sim[j]! || (this.sim[i] === this.sim[j] && this.seq[i]! < this.seq[j]!);
  }

  private swap(i: number, j: number): void {
    for (const arr of [this.sim, this.a, this.b, this.seq]) {
      const t = arr[i]!;
      arr[i] = arr[j]!;
      arr[j] = t;
    }
  }

  push(sim: number, a: number, b: number): void {
    let i = this.sim.length;
    this.sim.push(sim);
    this.a.push(a);
    this.b.push(b);
    this.seq.push(this.counter++);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.above(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): [number, number] {
    const top: [number, number] = [this.a[0]!, this.b[0]!];
    const last = this.sim.length - 1;
    this.swap(0, last);
    this.sim.pop();
    this.a.pop();
    this.b.pop();
    this.seq.pop();
    let i = 0;
    const n = this.sim.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < n && this.above(l, best)) best = l;
      if (r < n && this.above(r, best)) best = r;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return top;
  }
}

function intersection(h: Float64Array, i: number, j: number, length: number): number {
  let s = 0;
  const oi = i * length;
  const oj = j * length;
  for (let k = 0; k < length; k++) {
    const x = h[oi + k]!;
    const y = h[oj + k]!;
    s += x < y ? x : y;
  }
  return s;
}

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/**
 * Greedy hierarchical grouping of one FH segmentation with one similarity strategy, following
 * OpenCV ximgproc: repeatedly merge the most similar neighbouring pair; histograms merge as the
 * size-weighted mean using the pre-merge sizes; the merged box is the union; level = max + 1.
 * Returns all initial regions followed by every merged region (2N-1 when the graph is connected).
 */
export function groupRegions(initial: InitialRegions, weights: SimilarityWeights, imageSize: number): GroupedRegion[] {
  const N = initial.count;
  const capacity = 2 * N - 1;
  const { colourLength: CL, textureLength: TL } = initial;
  const useColour = weights.colour > 0;
  const useTexture = weights.texture > 0;
  const colour = useColour ? new Float64Array(capacity * CL) : new Float64Array(0);
  const texture = useTexture ? new Float64Array(capacity * TL) : new Float64Array(0);
  if (useColour) colour.set(initial.colour);
  if (useTexture) texture.set(initial.texture);
  const size = new Float64Array(capacity);
  size.set(initial.size);
  const box = new Int32Array(capacity * 4);
  box.set(initial.box);
  const level = new Int32Array(capacity).fill(1);
  const alive = new Uint8Array(capacity);
  alive.fill(1, 0, N);
  const neighbours: Array<Set<number>> = Array.from({ length: N }, () => new Set<number>());
  const weightSum = weights.colour + weights.texture + weights.size + weights.fill;

  const similarity = (i: number, j: number): number => {
    let s = 0;
    if (useColour) s += weights.colour * intersection(colour, i, j, CL);
    if (useTexture) s += weights.texture * intersection(texture, i, j, TL);
    if (weights.size > 0) s += weights.size * clamp01(1 - (size[i]! + size[j]!) / imageSize);
    if (weights.fill > 0) {
      const w = Math.max(box[i * 4 + 2]!, box[j * 4 + 2]!) - Math.min(box[i * 4]!, box[j * 4]!);
      const h = Math.max(box[i * 4 + 3]!, box[j * 4 + 3]!) - Math.min(box[i * 4 + 1]!, box[j * 4 + 1]!);
      s += weights.fill * clamp01(1 - (w * h - size[i]! - size[j]!) / imageSize);
    }
    return s / weightSum;
  };

  const heap = new MergeHeap();
  for (const [i, j] of initial.neighbours) {
    neighbours[i]!.add(j);
    neighbours[j]!.add(i);
    heap.push(similarity(i, j), i, j);
  }
  let next = N;
  while (heap.size > 0) {
    const [i, j] = heap.pop();
    if (!alive[i] || !alive[j]) continue; // stale: one side was merged already
    const t = next++;
    const si = size[i]!;
    const sj = size[j]!;
    if (useColour) mergeHistogram(colour, i, j, t, CL, si, sj);
    if (useTexture) mergeHistogram(texture, i, j, t, TL, si, sj);
    size[t] = si + sj;
    box[t * 4] = Math.min(box[i * 4]!, box[j * 4]!);
    box[t * 4 + 1] = Math.min(box[i * 4 + 1]!, box[j * 4 + 1]!);
    box[t * 4 + 2] = Math.max(box[i * 4 + 2]!, box[j * 4 + 2]!);
    box[t * 4 + 3] = Math.max(box[i * 4 + 3]!, box[j * 4 + 3]!);
    level[t] = Math.max(level[i]!, level[j]!) + 1;
    alive[i] = 0;
    alive[j] = 0;
    alive[t] = 1;
    const merged = new Set<number>();
    for (const n of neighbours[i]!) if (n !== j) merged.add(n);
    for (const n of neighbours[j]!) if (n !== i) merged.add(n);
    neighbours[i] = new Set();
    neighbours[j] = new Set();
    neighbours[t] = merged;
    for (const n of merged) {
      const set = neighbours[n]!;
      set.delete(i);
      set.delete(j);
      set.add(t);
      heap.push(similarity(t, n), t, n);
    }
  }
  const out: GroupedRegion[] = [];
  for (let r = 0; r < next; r++) {
    out.push({ box: [box[r * 4]!, box[r * 4 + 1]!, box[r * 4 + 2]!, box[r * 4 + 3]!], level: level[r]! });
  }
  return out;
}

function mergeHistogram(h: Float64Array, i: number, j: number, t: number, length: number, si: number, sj: number): void {
  const inv = 1 / (si + sj);
  const oi = i * length;
  const oj = j * length;
  const ot = t * length;
  for (let k = 0; k < length; k++) h[ot + k] = (h[oi + k]! * si + h[oj + k]! * sj) * inv;
}
