import { f32, float32Bits } from './float32.js';
import type { InitialRegions } from './region-features.js';
import { stdSort } from './std-sort.js';

/** The four similarity measures of selective search. */
export type SimilarityMeasure = 'colour' | 'texture' | 'size' | 'fill';

/** A region produced by one grouping: its box [x1, y1, x2, y2) and its hierarchy level (1 = FH region). */
export interface GroupedRegion {
  box: [number, number, number, number];
  level: number;
}

/**
 * OpenCV's SelectiveSearchSegmentationStrategyMultiple weights: n equal strategies get 1, 0.5,
 * 0.3333f or 0.25f each (createSelectiveSearchSegmentationStrategyMultiple), summed in float.
 */
const MULTIPLE_WEIGHT = [0, 1, 0.5, 0.3333, 0.25].map(f32);

/**
 * Greedy hierarchical grouping of one FH segmentation with one strategy, reproducing OpenCV 4.6
 * ximgproc (SelectiveSearchSegmentationImpl::hierarchicalGrouping) step for step, because its
 * choices depend on details that a cleaner algorithm would not share:
 * - every similarity is float32 arithmetic in OpenCV's order (histogram intersections summed bin
 *   by bin, `tt += w_i * s_i`, then `tt / sum(w)`), so equal float32 similarities tie exactly;
 * - the candidate pairs live in a vector that is std::sort-ed (libstdc++ introsort, unstable)
 *   before every merge, and the pair std::sort leaves last is merged; pairs touching the merged
 *   regions are erased in vector order and the merged region's pairs appended in the order their
 *   partners were met, which decides how the next sort orders ties;
 * - histograms merge as float32 size-weighted means with the pre-merge sizes; a merged region keeps
 *   the smaller of the two region ids (its histogram row and size slot); the fill measure uses
 *   bounding-rectangle unions; level = max + 1.
 * Returns all initial regions followed by every merged region (2N-1 when the graph is connected).
 */
export function groupRegions(initial: InitialRegions, strategy: readonly SimilarityMeasure[], imageSize: number): GroupedRegion[] {
  const N = initial.count;
  const { colourLength: CL, textureLength: TL } = initial;
  const useColour = strategy.includes('colour');
  const useTexture = strategy.includes('texture');
  const colour = useColour ? Float32Array.from(initial.colour) : new Float32Array(0);
  const texture = useTexture ? Float32Array.from(initial.texture) : new Float32Array(0);
  // per working id (0..N-1): size and the fill measure's bounding rectangle
  const size = Int32Array.from(initial.size);
  const rect = Int32Array.from(initial.box);
  // per region (0..2N-2): working id, level, box
  const capacity = Math.max(1, 2 * N - 1);
  const regionId = new Int32Array(capacity);
  const level = new Int32Array(capacity);
  const box = new Int32Array(capacity * 4);
  for (let r = 0; r < N; r++) regionId[r] = r;
  level.fill(1, 0, N);
  box.set(initial.box.subarray(0, N * 4));
  const measures = strategy.map((m) => m);
  const weight = MULTIPLE_WEIGHT[measures.length] ?? f32(1 / measures.length);
  let weightTotal = 0;
  for (let i = 0; i < measures.length; i++) weightTotal = f32(weightTotal + weight);
  const imageSizeF = f32(imageSize);

  const histogramIntersection = (h: Float32Array, length: number, a: number, b: number): number => {
    let s = 0;
    const oa = a * length;
    const ob = b * length;
    for (let k = 0; k < length; k++) {
      const x = h[oa + k]!;
      const y = h[ob + k]!;
      s = f32(s + (y < x ? y : x));
    }
    return s;
  };
  const clamp01 = (v: number) => (v > 1 ? 1 : v < 0 ? 0 : v);
  const similarity = (a: number, b: number): number => {
    let tt = 0;
    for (const m of measures) {
      let s: number;
      switch (m) {
        case 'colour':
          s = histogramIntersection(colour, CL, a, b);
          break;
        case 'texture':
          s = histogramIntersection(texture, TL, a, b);
          break;
        case 'size':
          s = clamp01(f32(1 - f32((size[a]! + size[b]!) / imageSizeF)));
          break;
        case 'fill': {
          const w = Math.max(rect[a * 4 + 2]!, rect[b * 4 + 2]!) - Math.min(rect[a * 4]!, rect[b * 4]!);
          const h = Math.max(rect[a * 4 + 3]!, rect[b * 4 + 3]!) - Math.min(rect[a * 4 + 1]!, rect[b * 4 + 1]!);
          s = clamp01(f32(1 - f32((w * h - size[a]! - size[b]!) / imageSizeF)));
          break;
        }
      }
      tt = f32(tt + f32(weight * s));
    }
    return f32(tt / weightTotal);
  };
  const mergeHistogram = (h: Float32Array, length: number, a: number, b: number, sa: number, sb: number) => {
    const oa = a * length;
    const ob = b * length;
    const total = sa + sb;
    for (let k = 0; k < length; k++) {
      const v = f32(f32(f32(h[oa + k]! * sa) + f32(h[ob + k]! * sb)) / total);
      h[oa + k] = v;
      h[ob + k] = v;
    }
  };

  // the similarity vector: keys (float32 bits) and slots into the pair store pairFrom/pairTo
  let keys = new Int32Array(Math.max(16, initial.neighbours.length));
  let slots = new Int32Array(keys.length);
  let pairFrom = new Int32Array(2 * keys.length);
  let pairTo = new Int32Array(2 * keys.length);
  let len = 0;
  let nextSlot = 0;
  const push = (from: number, to: number) => {
    if (nextSlot === pairFrom.length) {
      pairFrom = grow(pairFrom);
      pairTo = grow(pairTo);
    }
    if (len === keys.length) {
      keys = grow(keys);
      slots = grow(slots);
    }
    const slot = nextSlot++;
    pairFrom[slot] = from;
    pairTo[slot] = to;
    keys[len] = float32Bits(similarity(regionId[from]!, regionId[to]!)); // >= 0: bits order like values
    slots[len++] = slot;
  };
  for (const [i, j] of initial.neighbours) push(i, j);

  let regions = N;
  const touched = new Int32Array(capacity);
  while (len > 0) {
    stdSort(keys, slots, 0, len);
    const top = slots[--len]!;
    const pf = pairFrom[top]!;
    const pt = pairTo[top]!;
    const idFrom = regionId[pf]!;
    const idTo = regionId[pt]!;
    const t = regions++;
    regionId[t] = Math.min(idFrom, idTo);
    level[t] = Math.max(level[pf]!, level[pt]!) + 1;
    box[t * 4] = Math.min(box[pf * 4]!, box[pt * 4]!);
    box[t * 4 + 1] = Math.min(box[pf * 4 + 1]!, box[pt * 4 + 1]!);
    box[t * 4 + 2] = Math.max(box[pf * 4 + 2]!, box[pt * 4 + 2]!);
    box[t * 4 + 3] = Math.max(box[pf * 4 + 3]!, box[pt * 4 + 3]!);
    const sFrom = size[idFrom]!;
    const sTo = size[idTo]!;
    if (useColour) mergeHistogram(colour, CL, idFrom, idTo, sFrom, sTo);
    if (useTexture) mergeHistogram(texture, TL, idFrom, idTo, sFrom, sTo);
    for (let k = 0; k < 2; k++) {
      rect[idFrom * 4 + k] = rect[idTo * 4 + k] = Math.min(rect[idFrom * 4 + k]!, rect[idTo * 4 + k]!);
      rect[idFrom * 4 + 2 + k] = rect[idTo * 4 + 2 + k] = Math.max(rect[idFrom * 4 + 2 + k]!, rect[idTo * 4 + 2 + k]!);
    }
    size[idFrom] = sFrom + sTo;
    size[idTo] = sFrom + sTo;
    // erase the pairs touching either region (order kept), noting their partners in order met
    let touchedCount = 0;
    let w = 0;
    for (let r = 0; r < len; r++) {
      const slot = slots[r]!;
      const a = pairFrom[slot]!;
      const b = pairTo[slot]!;
      if (a === pf || b === pf || a === pt || b === pt) {
        const other = a === pf || a === pt ? b : a;
        let seen = false;
        for (let q = 0; q < touchedCount; q++) if (touched[q] === other) seen = true;
        if (!seen) touched[touchedCount++] = other;
      } else {
        keys[w] = keys[r]!;
        slots[w++] = slot;
      }
    }
    len = w;
    for (let q = 0; q < touchedCount; q++) push(t, touched[q]!);
  }
  const out: GroupedRegion[] = [];
  for (let r = 0; r < regions; r++) out.push({ box: [box[r * 4]!, box[r * 4 + 1]!, box[r * 4 + 2]!, box[r * 4 + 3]!], level: level[r]! });
  return out;
}

function grow<T extends Int32Array>(a: T): T {
  const b = new (a.constructor as new (n: number) => T)(a.length * 2);
  b.set(a);
  return b;
}
