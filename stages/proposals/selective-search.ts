import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import type { Box } from './boxes.js';
import { swapRedBlue, toColourSpace, type SelectiveSearchColourSpace } from './colour-spaces.js';
import { buildSortedGraph, segmentSortedGraph } from './felzenszwalb.js';
import { groupRegions, type GroupedRegion, type SimilarityMeasure } from './hierarchical-grouping.js';
import { assertRgbImage, type RgbImage } from './raster.js';
import { describeRegions, pixelBins } from './region-features.js';

export type SelectiveSearchMode = 'single' | 'fast' | 'quality';
export type SimilarityStrategyName = SimilarityMeasure;

export interface SelectiveSearchOptions {
  mode?: SelectiveSearchMode;
  /** fast/quality: k runs from baseK in steps of incK (3 values for fast, 5 for quality). */
  baseK?: number;
  incK?: number;
  /** single mode's k. */
  k?: number;
  sigma?: number;
  /** OpenCV hard-codes 100 (selective search never calls setMinSize). */
  minSize?: number;
  /** Override the mode's colour spaces / strategies (each strategy = equal-weight mix of its measures). */
  colourSpaces?: SelectiveSearchColourSpace[];
  strategies?: SimilarityStrategyName[][];
  /**
   * Ranking: OpenCV sorts by rand()*level ascending (small, low-level regions first). With an Rng
   * we draw the same way but reproducibly; with null the order is level, then discovery order.
   */
  rng?: Rng | null;
  /** Read the RGB image as if it were BGR, reproducing DETReg's call (PIL RGB array into OpenCV). */
  treatRgbAsBgr?: boolean;
}

/** OpenCV ximgproc's parameter sets (switchToSingleStrategy / SelectiveSearchFast / Quality). */
export function modeSettings(mode: SelectiveSearchMode, o: SelectiveSearchOptions = {}): { colourSpaces: SelectiveSearchColourSpace[]; ks: number[]; strategies: SimilarityStrategyName[][] } {
  const baseK = o.baseK ?? 150;
  const incK = o.incK ?? 150;
  const all: SimilarityStrategyName[] = ['colour', 'fill', 'texture', 'size'];
  const tsf: SimilarityStrategyName[] = ['fill', 'texture', 'size'];
  switch (mode) {
    case 'single':
      return { colourSpaces: ['hsv'], ks: [o.k ?? 200], strategies: [all] };
    case 'fast':
      return { colourSpaces: ['hsv', 'lab'], ks: [baseK, baseK + incK, baseK + 2 * incK], strategies: [all, tsf] };
    case 'quality':
      // OpenCV means HSV, Lab, gray, hue and rgI, but its hue image is the first plane of
      // split(hsv, channel) and the next split(base_image, channel) writes the blue plane into that
      // same buffer: the fourth image it segments is the B plane. Reproduced as such.
      return {
        colourSpaces: ['hsv', 'lab', 'gray', 'blue', 'rgi'],
        ks: [0, 1, 2, 3, 4].map((i) => baseK + i * incK),
        strategies: [all, tsf, ['fill'], ['size']],
      };
    default:
      throw new BadInputError(`unknown mode ${JSON.stringify(mode)} (use single, fast or quality)`, 'selectiveSearch.mode');
  }
}

export interface SelectiveSearchResult {
  /** Ranked, de-duplicated boxes [x1, y1, x2, y2), integer pixels, x2 <= width. */
  boxes: Box[];
  /** Hierarchy level of each returned box (1 = an FH region). */
  levels: number[];
  /** Regions produced before de-duplication, summed over groupings. */
  regionCount: number;
  groupings: number;
}

/**
 * Selective search with OpenCV ximgproc's semantics: for every colour space and k, one FH
 * segmentation (OpenCV variant, min_size 100), then one hierarchical grouping per strategy; all
 * regions are ranked by rand*level ascending and de-duplicated by exact box, first one kept.
 */
export function selectiveSearch(image: RgbImage, options: SelectiveSearchOptions = {}): SelectiveSearchResult {
  assertRgbImage(image, 'selectiveSearch.image');
  const mode = options.mode ?? 'fast';
  const settings = modeSettings(mode, options);
  const colourSpaces = options.colourSpaces ?? settings.colourSpaces;
  const strategies = options.strategies ?? settings.strategies;
  // OpenCV takes sigma as a float (switchToSelectiveSearchFast(int, int, float)) and widens it
  const sigma = Math.fround(options.sigma ?? 0.8);
  const minSize = options.minSize ?? 100;
  for (const k of settings.ks) if (!(k >= 0)) throw new BadInputError(`k values must be >= 0 (got ${k})`, 'selectiveSearch.baseK');
  if (strategies.length === 0 || strategies.some((s) => s.length === 0)) throw new BadInputError('need at least one non-empty strategy', 'selectiveSearch.strategies');
  const source = options.treatRgbAsBgr ? swapRedBlue(image) : image;
  const imageSize = image.width * image.height;
  const regions: GroupedRegion[] = [];
  let groupings = 0;
  for (const space of colourSpaces) {
    const colourImage = toColourSpace(source, space);
    const bins = pixelBins(colourImage);
    const planar = { width: image.width, height: image.height, planes: colourImage.planes.map((p) => Float64Array.from(p)) };
    // smoothing, edge weights and their order do not depend on k: one graph per colour space
    const graph = buildSortedGraph(planar, 'opencv', sigma);
    for (const k of settings.ks) {
      const seg = segmentSortedGraph(graph, k, minSize);
      const initial = describeRegions(seg, bins);
      for (const strategy of strategies) {
        regions.push(...groupRegions(initial, strategy, imageSize));
        groupings++;
      }
    }
  }
  return rankAndDeduplicate(regions, options.rng ?? null, groupings);
}

function rankAndDeduplicate(regions: GroupedRegion[], rng: Rng | null, groupings: number): SelectiveSearchResult {
  const rank = regions.map((r) => (rng ? rng.next() * r.level : r.level));
  const order = regions.map((_, i) => i).sort((i, j) => rank[i]! - rank[j]! || i - j);
  const seen = new Set<string>();
  const boxes: Box[] = [];
  const levels: number[] = [];
  for (const i of order) {
    const r = regions[i]!;
    const key = r.box.join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    boxes.push([...r.box]);
    levels.push(r.level);
  }
  return { boxes, levels, regionCount: regions.length, groupings };
}
