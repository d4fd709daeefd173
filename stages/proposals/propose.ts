import { Rng } from '../../core/rng.js';
import { nms, passesFilter, randomScores, rescaleBoxes, type Box } from './boxes.js';
import { felzenszwalb, type Segmentation } from './felzenszwalb.js';
import type { ProposalRecipe } from './presets.js';
import { randomBoxes } from './random-boxes.js';
import { assertRgbImage, type RgbImage } from './raster.js';
import { selectiveSearch } from './selective-search.js';
import { slic } from './slic.js';

export interface ImageProposals {
  /** [x1, y1, x2, y2) in pixels of the ORIGINAL image (fractional after a resize). */
  boxes: Box[];
  /** The label map, at the working (possibly resized) resolution, when the recipe keeps it. */
  segments?: Segmentation;
  /** Boxes the method produced before filtering, NMS and the top-k cut. */
  rawCount: number;
}

/** Bounding box [x1, y1, x2, y2) of every label, in label order (labels may start at 0 or 1). */
export function segmentBoxes(seg: Segmentation): Box[] {
  let base = Infinity;
  for (let i = 0; i < seg.labels.length; i++) if (seg.labels[i]! < base) base = seg.labels[i]!;
  const boxes: Box[] = Array.from({ length: seg.count }, () => [Infinity, Infinity, -Infinity, -Infinity] as Box);
  for (let y = 0; y < seg.height; y++) {
    for (let x = 0; x < seg.width; x++) {
      const b = boxes[seg.labels[y * seg.width + x]! - base]!;
      if (x < b[0]) b[0] = x;
      if (y < b[1]) b[1] = y;
      if (x + 1 > b[2]) b[2] = x + 1;
      if (y + 1 > b[3]) b[3] = y + 1;
    }
  }
  // a label id skimage skipped (the connectivity pass can leave a gap) has no pixels
  return boxes.filter((b) => Number.isFinite(b[0]));
}

/**
 * Run a recipe on an image that has ALREADY been resized to `recipe.resize` (the resize needs
 * sharp and happens on the main thread; this part is pure and runs in worker threads).
 * `rng` drives every random choice for this image (ranking, NMS scores, random boxes).
 */
export function proposeOnPrepared(image: RgbImage, originalWidth: number, originalHeight: number, recipe: ProposalRecipe, rng: Rng): ImageProposals {
  assertRgbImage(image, 'proposals.image');
  let boxes: Box[];
  let segments: Segmentation | undefined;
  switch (recipe.method) {
    case 'selective-search':
      boxes = selectiveSearch(image, { ...recipe.selectiveSearch, rng: recipe.ranking === 'random' ? rng.fork('ranking') : null }).boxes;
      break;
    case 'slic':
      segments = slic(image, recipe.slic);
      boxes = segmentBoxes(segments);
      break;
    case 'felzenszwalb':
      segments = felzenszwalb(image, recipe.felzenszwalb);
      boxes = segmentBoxes(segments);
      break;
    case 'random':
      boxes = randomBoxes(image.width, image.height, rng.fork('random'), recipe.random);
      break;
    default:
      throw new Error(`unknown proposal method ${String((recipe as ProposalRecipe).method)}`);
  }
  const rawCount = boxes.length;
  // Filters are defined on the working image (CCOP and SoCo filter at the resolution they ran at).
  if (recipe.filters.length > 0) {
    let kept: Box[] = [];
    for (const filter of recipe.filters) {
      kept = boxes.filter((b) => passesFilter(b, filter, image.width, image.height));
      if (kept.length > 0) break;
    }
    boxes = kept;
  }
  if (boxes.length === 0 && recipe.wholeImageFallback) boxes = [[0, 0, image.width, image.height]];
  if (recipe.nmsThreshold !== null) {
    const scores = randomScores(boxes.length, rng.fork('nms'));
    boxes = nms(boxes, scores, recipe.nmsThreshold).map((i) => boxes[i]!);
  }
  if (recipe.maxBoxes !== null) boxes = boxes.slice(0, recipe.maxBoxes);
  if (image.width !== originalWidth || image.height !== originalHeight) {
    boxes = rescaleBoxes(boxes, image.width, image.height, originalWidth, originalHeight);
  }
  return segments && recipe.segments ? { boxes, segments, rawCount } : { boxes, rawCount };
}

/** The per-sample random stream: a pure function of (seed, key), so order and parallelism do not matter. */
export function sampleRng(seed: number, sampleKey: string): Rng {
  return Rng.fromSeed('proposals', seed, sampleKey);
}
