import type { BoxFilter } from './boxes.js';
import type { FelzenszwalbOptions } from './felzenszwalb.js';
import type { RandomBoxOptions } from './random-boxes.js';
import type { SelectiveSearchOptions } from './selective-search.js';
import type { SlicOptions } from './slic.js';

export const PRESET_NAMES = ['detreg', 'ccop', 'soco', 'r2o', 'updetr-random', 'felzenszwalb'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

export type ProposalMethod = 'selective-search' | 'slic' | 'felzenszwalb' | 'random';

/**
 * Everything that decides one image's proposals, as plain JSON (it is hashed into the stage key
 * and posted to worker threads). Steps run in this order: resize -> method -> filter (with
 * fallbacks) -> NMS with random scores -> first maxBoxes -> boxes mapped back to the original size.
 */
export interface ProposalRecipe {
  method: ProposalMethod;
  /** Squash to exactly this size first (aspect not kept), or null for full resolution. */
  resize: { width: number; height: number; kernel: 'linear' | 'cubic' } | null;
  selectiveSearch: Omit<SelectiveSearchOptions, 'rng'>;
  /** 'random' = OpenCV's rand()*level order (seeded per sample); 'level' = deterministic level order. */
  ranking: 'random' | 'level';
  slic: SlicOptions;
  felzenszwalb: FelzenszwalbOptions;
  random: RandomBoxOptions;
  /** Applied in order: the first filter that keeps at least one box wins (SoCo's fallbacks). */
  filters: BoxFilter[];
  /** When every filter leaves nothing: use the whole image as the one proposal (SoCo's dataset does). */
  wholeImageFallback: boolean;
  /** Greedy NMS over random scores U(0.01, 1) at this IoU (CCOP), or null. */
  nmsThreshold: number | null;
  maxBoxes: number | null;
  /** Also store the label map (SLIC / FH methods only). */
  segments: boolean;
}

const OPENCV_FAST: Omit<SelectiveSearchOptions, 'rng'> = { mode: 'fast', baseK: 150, incK: 150, sigma: 0.8, minSize: 100, treatRgbAsBgr: false };
const NONE = { slic: {}, felzenszwalb: {}, random: {} };

/**
 * The methods' settings, from their code (docs/proposals.md and the shared reference cite lines):
 * - detreg: DETReg `topk`: OpenCV SS fast on a 128x128 squash (cv2.resize, bilinear) of the PIL
 *   RGB array, which OpenCV reads as BGR; first 30 boxes of OpenCV's random rank order; boxes
 *   scaled back to the original size as floats.
 * - ccop: CCOP tools/selective_search.py: SS fast at full resolution on a BGR imread (so colours
 *   are read correctly), keep 1/3 < w/h < 3 and sqrt(wh) > 20, NMS 0.5 with random scores, first 50.
 * - soco: SoCo's 'ratio3size0308post' filters (w, h >= 32; 1/3 <= w/h <= 3;
 *   0.3 <= sqrt(wh/WH) <= 0.8; then ratio only; then size only; then the whole image) over a
 *   single-strategy selective search with SoCo's FH parameters (k 300, sigma 0.9, min size 100).
 *   SoCo itself ran AlpacaDB's Python selective search, whose colour histogram and neighbour test
 *   are buggy (reference notes section 1.6); this preset does not reproduce those bugs.
 * - r2o: R2O: skimage SLIC, 100 segments, compactness 10, on a 224x224 bicubic squash of the
 *   ImageNet-normalised image, labels from 0; the label map is stored, boxes are per-segment.
 * - updetr-random: UP-DETR random patches (10 per image, min 8 px).
 * - felzenszwalb: skimage felzenszwalb with sigma 0.8 and min_size 20 (its defaults) but scale
 *   100, because the default scale 1 gives segments of a few pixels; label map stored, boxes are
 *   per-segment.
 */
export const presets: Record<PresetName, ProposalRecipe> = {
  detreg: {
    method: 'selective-search',
    resize: { width: 128, height: 128, kernel: 'linear' },
    selectiveSearch: { ...OPENCV_FAST, treatRgbAsBgr: true },
    ranking: 'random',
    ...NONE,
    filters: [],
    wholeImageFallback: false,
    nmsThreshold: null,
    maxBoxes: 30,
    segments: false,
  },
  ccop: {
    method: 'selective-search',
    resize: null,
    selectiveSearch: OPENCV_FAST,
    ranking: 'random',
    ...NONE,
    filters: [{ minAspect: 1 / 3, maxAspect: 3, aspectInclusive: false, minSqrtArea: 20 }],
    wholeImageFallback: false,
    nmsThreshold: 0.5,
    maxBoxes: 50,
    segments: false,
  },
  soco: {
    method: 'selective-search',
    resize: null,
    selectiveSearch: { mode: 'single', k: 300, sigma: 0.9, minSize: 100, treatRgbAsBgr: false },
    ranking: 'level',
    ...NONE,
    filters: [
      { minSide: 32, minAspect: 1 / 3, maxAspect: 3, aspectInclusive: true, minRelativeScale: 0.3, maxRelativeScale: 0.8 },
      { minSide: 32, minAspect: 1 / 3, maxAspect: 3, aspectInclusive: true },
      { minSide: 32 },
    ],
    wholeImageFallback: true,
    nmsThreshold: null,
    maxBoxes: null,
    segments: false,
  },
  r2o: {
    method: 'slic',
    resize: { width: 224, height: 224, kernel: 'cubic' },
    selectiveSearch: {},
    ranking: 'level',
    slic: { nSegments: 100, compactness: 10, maxNumIter: 10, sigma: 0, startLabel: 0, enforceConnectivity: true, imagenetNormalize: true },
    felzenszwalb: {},
    random: {},
    filters: [],
    wholeImageFallback: false,
    nmsThreshold: null,
    maxBoxes: null,
    segments: true,
  },
  'updetr-random': {
    method: 'random',
    resize: null,
    selectiveSearch: {},
    ranking: 'level',
    slic: {},
    felzenszwalb: {},
    random: { count: 10, minPixel: 8 },
    filters: [],
    wholeImageFallback: false,
    nmsThreshold: null,
    maxBoxes: null,
    segments: false,
  },
  felzenszwalb: {
    method: 'felzenszwalb',
    resize: null,
    selectiveSearch: {},
    ranking: 'level',
    slic: {},
    felzenszwalb: { variant: 'skimage', scale: 100, sigma: 0.8, minSize: 20 },
    random: {},
    filters: [],
    wholeImageFallback: false,
    nmsThreshold: null,
    maxBoxes: null,
    segments: true,
  },
};
