/**
 * Region proposals (issue #5): Felzenszwalb-Huttenlocher, OpenCV-style selective search, SLIC and
 * UP-DETR random boxes, the presets of DETReg / CCOP / SoCo / R2O, and the per-shard stage.
 * Box convention everywhere: [x1, y1, x2, y2) with exclusive right/bottom edges (boxes.ts).
 */
import { resizeImage } from './image-io.js';
import type { PresetName, ProposalRecipe } from './presets.js';
import { presets } from './presets.js';
import { proposeOnPrepared, sampleRng, type ImageProposals } from './propose.js';
import type { RgbImage } from './raster.js';

export { proposalStage, type ProposalInputs, type ProposalResult, type ProposalsFile, type SampleProposals } from './stage.js';
export { proposalConfigSchema, resolveRecipe, type ProposalConfig } from './config.js';
export { presets, PRESET_NAMES, type PresetName, type ProposalRecipe, type ProposalMethod } from './presets.js';
export { felzenszwalb, type FelzenszwalbOptions, type FelzenszwalbVariant, type PlanarImage, type Segmentation } from './felzenszwalb.js';
export { selectiveSearch, modeSettings, type SelectiveSearchOptions, type SelectiveSearchResult, type SelectiveSearchMode } from './selective-search.js';
export { slic, regularGrid, type SlicOptions } from './slic.js';
export { randomBoxes, type RandomBoxOptions } from './random-boxes.js';
export { proposeOnPrepared, segmentBoxes, sampleRng, type ImageProposals } from './propose.js';
export { iou, nms, fromXywh, toXywh, rescaleBoxes, passesFilter, boxArea, type Box, type BoxFilter } from './boxes.js';
export { bestOverlaps, proposalQuality, boundaryAgreement, type QualityPoint } from './metrics.js';
export { drawProposals, drawSegmentBoundaries } from './draw.js';
export { decodeImage, resizeImage, encodePng, encodeLabelPng, decodeLabelPng } from './image-io.js';
export { imageFrom, type RgbImage } from './raster.js';
export { inlineRunner, workerPoolRunner, type ProposalRunner, type ProposalJob } from './worker-pool.js';

/** One image, one preset (or recipe), on the calling thread: resize, propose, map boxes back. */
export async function propose(image: RgbImage, recipe: PresetName | ProposalRecipe, options: { seed?: number; key?: string } = {}): Promise<ImageProposals> {
  const r = typeof recipe === 'string' ? presets[recipe] : recipe;
  const prepared = r.resize ? await resizeImage(image, r.resize.width, r.resize.height, r.resize.kernel) : image;
  return proposeOnPrepared(prepared, image.width, image.height, r, sampleRng(options.seed ?? 0, options.key ?? 'image'));
}
