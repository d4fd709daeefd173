import { z } from 'zod';
import { limitMessage } from '../../core/bounds.js';
import { PRESET_NAMES, presets, type ProposalRecipe } from './presets.js';

const boxFilterSchema = z
  .object({
    minAspect: z.number().positive().nullable(),
    maxAspect: z.number().positive().nullable(),
    aspectInclusive: z.boolean(),
    minSqrtArea: z.number().nonnegative().nullable(),
    minSide: z.number().nonnegative().nullable(),
    minRelativeScale: z.number().nonnegative().nullable(),
    maxRelativeScale: z.number().positive().nullable(),
  })
  .partial()
  .strict();

/** Upper bounds (core/bounds.ts); each message says what it protects. */
export const PROPOSAL_LIMITS = { side: 4096, boxes: 100_000, segments: 100_000, workers: 64, checkpointEvery: 1_000_000 } as const;
const side = () => z.number().int().positive().max(PROPOSAL_LIMITS.side, limitMessage(PROPOSAL_LIMITS.side, 'every image is resampled to this size in memory before segmentation'));

const colourSpace = z.enum(['hsv', 'lab', 'gray', 'hue', 'blue', 'rgi']);
const strategyName = z.enum(['colour', 'texture', 'size', 'fill']);

/**
 * Stage config: a named preset plus optional overrides of any part of its recipe. Overrides are
 * merged field by field into the preset (docs/proposals.md lists every field).
 */
export const proposalConfigSchema = z
  .object({
    preset: z.enum(PRESET_NAMES).default('detreg'),
    /** Seeds OpenCV-style ranking, CCOP's NMS scores and random boxes; per sample via (seed, key). */
    seed: z.number().int().default(0),
    resize: z
      .object({ width: side(), height: side(), kernel: z.enum(['linear', 'cubic']).default('linear') })
      .strict()
      .nullable()
      .optional(),
    maxBoxes: z.number().int().positive().max(PROPOSAL_LIMITS.boxes, limitMessage(PROPOSAL_LIMITS.boxes, 'every box of every image is stored in the proposals shard and read by each training step')).nullable().optional(),
    ranking: z.enum(['random', 'level']).optional(),
    nmsThreshold: z.number().min(0).max(1).nullable().optional(),
    filters: z.array(boxFilterSchema).optional(),
    wholeImageFallback: z.boolean().optional(),
    segments: z.boolean().optional(),
    selectiveSearch: z
      .object({
        mode: z.enum(['single', 'fast', 'quality']),
        baseK: z.number().nonnegative(),
        incK: z.number().nonnegative(),
        k: z.number().nonnegative(),
        sigma: z.number().nonnegative(),
        minSize: z.number().int().nonnegative(),
        colourSpaces: z.array(colourSpace).min(1),
        strategies: z.array(z.array(strategyName).min(1)).min(1),
        treatRgbAsBgr: z.boolean(),
      })
      .partial()
      .strict()
      .optional(),
    slic: z
      .object({
        nSegments: z.number().int().positive().max(PROPOSAL_LIMITS.segments, limitMessage(PROPOSAL_LIMITS.segments, 'SLIC keeps per-segment state for every segment of an image')),
        compactness: z.number().positive(),
        maxNumIter: z.number().int().nonnegative(),
        sigma: z.number().nonnegative(),
        convert2lab: z.boolean(),
        enforceConnectivity: z.boolean(),
        minSizeFactor: z.number().nonnegative(),
        maxSizeFactor: z.number().positive(),
        startLabel: z.union([z.literal(0), z.literal(1)]),
        imagenetNormalize: z.boolean(),
      })
      .partial()
      .strict()
      .optional(),
    felzenszwalb: z
      .object({
        variant: z.enum(['skimage', 'opencv']),
        scale: z.number().nonnegative(),
        sigma: z.number().nonnegative(),
        minSize: z.number().int().nonnegative(),
      })
      .partial()
      .strict()
      .optional(),
    random: z
      .object({
        count: z.number().int().nonnegative().max(PROPOSAL_LIMITS.boxes, limitMessage(PROPOSAL_LIMITS.boxes, 'every box of every image is stored in the proposals shard and read by each training step')),
        minPixel: z.number().int().positive(),
      })
      .partial()
      .strict()
      .optional(),
    /** Worker threads within a shard; 0 = one per core, 1 = run on the calling thread. Not part of the key. */
    workers: z.number().int().nonnegative().max(PROPOSAL_LIMITS.workers, limitMessage(PROPOSAL_LIMITS.workers, 'each worker thread holds its own images and segmentation buffers')).default(0),
    /** Save a resumable checkpoint after this many images. Not part of the key. */
    checkpointEvery: z.number().int().positive().max(PROPOSAL_LIMITS.checkpointEvery, limitMessage(PROPOSAL_LIMITS.checkpointEvery, 'work lost to a killed worker grows with the interval')).default(64),
  })
  .strict();

export type ProposalConfig = z.infer<typeof proposalConfigSchema>;

/** The preset with the config's overrides applied: the full, explicit description of the work. */
export function resolveRecipe(config: ProposalConfig): ProposalRecipe {
  const base = presets[config.preset];
  return {
    ...base,
    resize: config.resize === undefined ? base.resize : config.resize,
    maxBoxes: config.maxBoxes === undefined ? base.maxBoxes : config.maxBoxes,
    ranking: config.ranking ?? base.ranking,
    nmsThreshold: config.nmsThreshold === undefined ? base.nmsThreshold : config.nmsThreshold,
    filters: config.filters ?? base.filters,
    wholeImageFallback: config.wholeImageFallback ?? base.wholeImageFallback,
    segments: config.segments ?? base.segments,
    selectiveSearch: { ...base.selectiveSearch, ...config.selectiveSearch },
    slic: { ...base.slic, ...config.slic },
    felzenszwalb: { ...base.felzenszwalb, ...config.felzenszwalb },
    random: { ...base.random, ...config.random },
  };
}
