/**
 * COCO detection / instance-segmentation evaluation with pycocotools' COCOeval semantics, so the
 * numbers equal what `COCOeval(gt, dt, iouType); evaluate(); accumulate(); summarize()` prints:
 * greedy matching per IoU threshold in score order (crowd gts can absorb many detections and are
 * ignored), maxDets truncation per image, the 101-point interpolated precision, area ranges on the
 * annotation's `area`, and means over every entry that is not -1 (absent categories).
 *
 * Kept quirks, on purpose: matching is done once with the largest maxDet and then truncated (so
 * AR@1 uses matches made among the top 100); a detection's area is its box w*h whenever it carries
 * a box (COCO.loadRes does this even for segm results); categories come from the ground-truth
 * category list, so detections of unknown categories are ignored and categories with no gt are -1.
 */
import { BadInputError } from '../../../core/errors.js';
import { numpyMean } from './numpy-sum.js';
import { boxIou, maskIou, rleArea, rleToBbox, type Rle } from './rle.js';

export type Box = [number, number, number, number]; // x, y, w, h (COCO convention)

export interface CocoGroundTruth {
  imageId: number;
  categoryId: number;
  /** Required for bbox evaluation; for segm it defaults to the mask's tight box. */
  bbox?: Box;
  /** Decides the area range; COCO stores the mask area here. Default: mask area, else w*h. */
  area?: number;
  iscrowd?: boolean;
  segmentation?: Rle;
}

export interface CocoDetection {
  imageId: number;
  categoryId: number;
  score: number;
  bbox?: Box;
  segmentation?: Rle;
}

export interface CocoEvalParams {
  iouThresholds: number[];
  recallThresholds: number[];
  maxDets: number[];
  areaRanges: Array<{ label: string; range: [number, number] }>;
}

/** np.linspace(start, stop, num): start + i*step, last element exactly `stop`. */
function linspace(start: number, stop: number, num: number): number[] {
  const step = (stop - start) / (num - 1);
  return Array.from({ length: num }, (_, i) => (i === num - 1 ? stop : i * step + start));
}

export function defaultCocoParams(): CocoEvalParams {
  return {
    iouThresholds: linspace(0.5, 0.95, 10),
    recallThresholds: linspace(0, 1, 101),
    maxDets: [1, 10, 100],
    areaRanges: [
      { label: 'all', range: [0, 1e10] },
      { label: 'small', range: [0, 32 ** 2] },
      { label: 'medium', range: [32 ** 2, 96 ** 2] },
      { label: 'large', range: [96 ** 2, 1e10] },
    ],
  };
}

export const COCO_STAT_NAMES = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl'] as const;
export type CocoStatName = (typeof COCO_STAT_NAMES)[number];

export interface CocoEvalResult {
  iouType: 'bbox' | 'segm';
  /** The 12 numbers of COCOeval.summarize(), -1 where nothing could be evaluated. */
  stats: Record<CocoStatName, number>;
  /** AP (IoU .50:.95, all areas, maxDets 100) and AP50 per category id; -1 for categories without gt. */
  perCategory: Array<{ categoryId: number; AP: number; AP50: number; AR100: number }>;
  /** precision[t][r][k][a][m] flattened in that order (COCOeval.eval['precision']). */
  precision: Float64Array;
  /** recall[t][k][a][m] flattened (COCOeval.eval['recall']). */
  recall: Float64Array;
  dims: { T: number; R: number; K: number; A: number; M: number };
}

interface Gt {
  id: number;
  bbox: Box;
  area: number;
  iscrowd: boolean;
  rle?: Rle;
}

interface Dt {
  id: number;
  bbox: Box;
  area: number;
  score: number;
  rle?: Rle;
}

interface ImageEval {
  dtScores: number[];
  /** [T][D]: matched to a gt (pycocotools stores the gt id; only "non-zero" matters downstream). */
  dtMatched: boolean[][];
  dtIgnore: boolean[][];
  gtIgnore: boolean[];
}

/** Stable sort of indices by a key, like np.argsort(kind='mergesort'). */
function stableArgsort(keys: readonly number[]): number[] {
  return keys.map((_, i) => i).sort((a, b) => keys[a]! - keys[b]! || a - b);
}

export function cocoEvaluate(options: {
  imageIds: number[];
  categoryIds: number[];
  groundTruth: CocoGroundTruth[];
  detections: CocoDetection[];
  iouType: 'bbox' | 'segm';
  params?: Partial<CocoEvalParams>;
}): CocoEvalResult {
  const { iouType } = options;
  const p: CocoEvalParams = { ...defaultCocoParams(), ...options.params };
  const maxDets = [...p.maxDets].sort((a, b) => a - b);
  const imageIds = [...new Set(options.imageIds)].sort((a, b) => a - b);
  const categoryIds = [...new Set(options.categoryIds)].sort((a, b) => a - b);
  const imageSet = new Set(imageIds);

  // ---- prepare: group annotations per (image, category), in input order ----
  const key = (img: number, cat: number) => `${img}:${cat}`;
  const gts = new Map<string, Gt[]>();
  const dts = new Map<string, Dt[]>();
  options.groundTruth.forEach((g, i) => {
    const where = `groundTruth[${i}]`;
    if (!imageSet.has(g.imageId)) throw new BadInputError(`image ${g.imageId} is not in imageIds`, where);
    if (iouType === 'segm' && !g.segmentation) throw new BadInputError('segm evaluation needs a segmentation on every ground truth', where);
    if (iouType === 'bbox' && (!Array.isArray(g.bbox) || g.bbox.length !== 4)) throw new BadInputError('bbox must be [x, y, w, h]', where);
    const bbox = g.bbox ?? rleToBbox(g.segmentation!);
    const area = g.area ?? (g.segmentation ? rleArea(g.segmentation) : bbox[2] * bbox[3]);
    const list = gts.get(key(g.imageId, g.categoryId)) ?? [];
    list.push({ id: i + 1, bbox, area, iscrowd: Boolean(g.iscrowd), rle: g.segmentation });
    gts.set(key(g.imageId, g.categoryId), list);
  });
  options.detections.forEach((d, i) => {
    const where = `detections[${i}]`;
    if (!imageSet.has(d.imageId)) throw new BadInputError(`image ${d.imageId} is not in imageIds (results do not correspond to the gt set)`, where);
    if (!Number.isFinite(d.score)) throw new BadInputError('score must be a finite number', where);
    if (iouType === 'segm' && !d.segmentation) throw new BadInputError('segm evaluation needs a segmentation on every detection', where);
    if (iouType === 'bbox' && !d.bbox) throw new BadInputError('bbox evaluation needs a bbox on every detection', where);
    const bbox = d.bbox ?? rleToBbox(d.segmentation!);
    const area = d.bbox ? d.bbox[2] * d.bbox[3] : rleArea(d.segmentation!);
    const list = dts.get(key(d.imageId, d.categoryId)) ?? [];
    list.push({ id: i + 1, bbox, area, score: d.score, rle: d.segmentation });
    dts.set(key(d.imageId, d.categoryId), list);
  });

  const T = p.iouThresholds.length;
  const R = p.recallThresholds.length;
  const K = categoryIds.length;
  const A = p.areaRanges.length;
  const M = maxDets.length;
  const maxDet = maxDets[M - 1]!;

  // ---- evaluate: IoUs once per (image, category), then matching per area range ----
  const evalImgs: Array<ImageEval | null> = [];
  for (const cat of categoryIds) {
    const iouCache = new Map<number, { ious: number[][]; dtSorted: Dt[] }>();
    for (const { range } of p.areaRanges) {
      for (const img of imageIds) {
        const gt = gts.get(key(img, cat)) ?? [];
        const dt = dts.get(key(img, cat)) ?? [];
        if (gt.length === 0 && dt.length === 0) {
          evalImgs.push(null);
          continue;
        }
        let cached = iouCache.get(img);
        if (!cached) {
          const dtSorted = stableArgsort(dt.map((d) => -d.score))
            .slice(0, maxDet)
            .map((i) => dt[i]!);
          const crowd = gt.map((g) => g.iscrowd);
          const ious =
            dtSorted.length === 0 || gt.length === 0
              ? []
              : iouType === 'segm'
                ? maskIou(dtSorted.map((d) => d.rle!), gt.map((g) => g.rle!), crowd)
                : boxIou(dtSorted.map((d) => d.bbox), gt.map((g) => g.bbox), crowd);
          cached = { ious, dtSorted };
          iouCache.set(img, cached);
        }
        evalImgs.push(evaluateImage(gt, cached.dtSorted, cached.ious, range, p.iouThresholds));
      }
    }
  }

  // ---- accumulate ----
  const precision = new Float64Array(T * R * K * A * M).fill(-1);
  const recall = new Float64Array(T * K * A * M).fill(-1);
  const pIndex = (t: number, r: number, k: number, a: number, m: number) => (((t * R + r) * K + k) * A + a) * M + m;
  const rIndex = (t: number, k: number, a: number, m: number) => ((t * K + k) * A + a) * M + m;
  const I0 = imageIds.length;
  for (let k = 0; k < K; k++) {
    for (let a = 0; a < A; a++) {
      for (let m = 0; m < M; m++) {
        const md = maxDets[m]!;
        const E = evalImgs.slice((k * A + a) * I0, (k * A + a + 1) * I0).filter((e): e is ImageEval => e !== null);
        if (E.length === 0) continue;
        const scores: number[] = [];
        const matchedCols: Array<{ e: ImageEval; d: number }> = [];
        for (const e of E) {
          const n = Math.min(md, e.dtScores.length);
          for (let d = 0; d < n; d++) {
            scores.push(e.dtScores[d]!);
            matchedCols.push({ e, d });
          }
        }
        const order = stableArgsort(scores.map((s) => -s));
        let npig = 0;
        for (const e of E) for (const ig of e.gtIgnore) if (!ig) npig++;
        if (npig === 0) continue;
        const nd = order.length;
        for (let t = 0; t < T; t++) {
          const rc = new Float64Array(nd);
          const pr = new Float64Array(nd);
          let tp = 0;
          let fp = 0;
          for (let i = 0; i < nd; i++) {
            const { e, d } = matchedCols[order[i]!]!;
            const ignored = e.dtIgnore[t]![d]!;
            const matched = e.dtMatched[t]![d]!;
            if (matched && !ignored) tp++;
            if (!matched && !ignored) fp++;
            rc[i] = tp / npig;
            pr[i] = tp / (fp + tp + Number.EPSILON);
          }
          recall[rIndex(t, k, a, m)] = nd ? rc[nd - 1]! : 0;
          // Make precision monotone (non-increasing) from the right: the interpolated envelope.
          for (let i = nd - 1; i > 0; i--) if (pr[i]! > pr[i - 1]!) pr[i - 1] = pr[i]!;
          let pi = 0;
          for (let r = 0; r < R; r++) {
            const thr = p.recallThresholds[r]!;
            while (pi < nd && rc[pi]! < thr) pi++; // np.searchsorted(rc, thr, side='left')
            precision[pIndex(t, r, k, a, m)] = pi < nd ? pr[pi]! : 0;
          }
        }
      }
    }
  }

  // ---- summarize ----
  const areaIndex = (label: string) => p.areaRanges.findIndex((r) => r.label === label);
  const maxDetIndex = (n: number | undefined) => (n === undefined ? -1 : maxDets.indexOf(n));
  const summarize = (ap: boolean, iouThr: number | null, area: string, md: number | undefined, onlyCategory?: number): number => {
    const a = areaIndex(area);
    const m = maxDetIndex(md);
    if (a < 0 || m < 0) return -1;
    const ts = iouThr === null ? p.iouThresholds.map((_, i) => i) : p.iouThresholds.flatMap((v, i) => (v === iouThr ? [i] : []));
    const ks = onlyCategory === undefined ? categoryIds.map((_, i) => i) : [onlyCategory];
    const values: number[] = [];
    // Same element order as s[s>-1] on the sliced numpy array: t, then r, then k.
    for (const t of ts) {
      if (ap) {
        for (let r = 0; r < R; r++) for (const k of ks) pushValid(values, precision[pIndex(t, r, k, a, m)]!);
      } else {
        for (const k of ks) pushValid(values, recall[rIndex(t, k, a, m)]!);
      }
    }
    return values.length === 0 ? -1 : numpyMean(values);
  };
  const [m0, m1, m2] = [maxDets[0], maxDets[1], maxDets[2]];
  const statsArray = [
    summarize(true, null, 'all', m2),
    summarize(true, 0.5, 'all', m2),
    summarize(true, 0.75, 'all', m2),
    summarize(true, null, 'small', m2),
    summarize(true, null, 'medium', m2),
    summarize(true, null, 'large', m2),
    summarize(false, null, 'all', m0),
    summarize(false, null, 'all', m1),
    summarize(false, null, 'all', m2),
    summarize(false, null, 'small', m2),
    summarize(false, null, 'medium', m2),
    summarize(false, null, 'large', m2),
  ];
  const stats = Object.fromEntries(COCO_STAT_NAMES.map((n, i) => [n, statsArray[i]!])) as Record<CocoStatName, number>;
  const perCategory = categoryIds.map((categoryId, k) => ({
    categoryId,
    AP: summarize(true, null, 'all', maxDet, k),
    AP50: summarize(true, 0.5, 'all', maxDet, k),
    AR100: summarize(false, null, 'all', maxDet, k),
  }));
  return { iouType, stats, perCategory, precision, recall, dims: { T, R, K, A, M } };
}

function pushValid(values: number[], v: number): void {
  if (v > -1) values.push(v);
}

/** COCOeval.evaluateImg for one (image, category, area range) with the detections already score-sorted and cut to maxDet. */
function evaluateImage(gtIn: Gt[], dt: Dt[], iousIn: number[][], range: [number, number], iouThresholds: number[]): ImageEval {
  const gtIgnoreIn = gtIn.map((g) => g.iscrowd || g.area < range[0] || g.area > range[1]);
  // Ignored gts go last, so a detection prefers a regular match and stops before ignored ones.
  const gtOrder = stableArgsort(gtIgnoreIn.map((ig) => (ig ? 1 : 0)));
  const gt = gtOrder.map((i) => gtIn[i]!);
  const gtIgnore = gtOrder.map((i) => gtIgnoreIn[i]!);
  const ious = iousIn.map((row) => gtOrder.map((i) => row[i]!));
  const T = iouThresholds.length;
  const dtMatched = Array.from({ length: T }, () => new Array<boolean>(dt.length).fill(false));
  const dtIgnore = Array.from({ length: T }, () => new Array<boolean>(dt.length).fill(false));
  if (ious.length > 0) {
    for (let t = 0; t < T; t++) {
      const gtTaken = new Array<boolean>(gt.length).fill(false);
      for (let d = 0; d < dt.length; d++) {
        let best = Math.min(iouThresholds[t]!, 1 - 1e-10);
        let m = -1;
        for (let g = 0; g < gt.length; g++) {
          if (gtTaken[g] && !gt[g]!.iscrowd) continue;
          if (m > -1 && !gtIgnore[m] && gtIgnore[g]) break;
          if (ious[d]![g]! < best) continue;
          best = ious[d]![g]!;
          m = g;
        }
        if (m === -1) continue;
        dtIgnore[t]![d] = gtIgnore[m]!;
        dtMatched[t]![d] = true;
        gtTaken[m] = true;
      }
    }
  }
  // Unmatched detections outside the area range do not count as false positives.
  for (let d = 0; d < dt.length; d++) {
    const outside = dt[d]!.area < range[0] || dt[d]!.area > range[1];
    for (let t = 0; t < T; t++) if (!dtMatched[t]![d] && outside) dtIgnore[t]![d] = true;
  }
  return { dtScores: dt.map((d) => d.score), dtMatched, dtIgnore, gtIgnore };
}
