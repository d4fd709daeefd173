import { z } from 'zod';
import { DEFAULT_MAX_IMAGE_PIXELS, limitMessage, MAX_IMAGE_PIXELS_CEILING } from '../../core/bounds.js';

/** Bounds (core/bounds.ts): each says what it protects. */
export const MAX_SHARD_SAMPLES = 100_000;
export const MAX_SHARD_BYTES = 4 * 1024 ** 3;
export const MAX_SHARD_CONCURRENCY = 64;

export const syntheticSourceSchema = z.strictObject({
  kind: z.literal('synthetic'),
  size: z.enum(['tiny', 'small', 'full']).default('tiny'),
  seed: z.number().int().default(0),
});

export const sourceSchema = z.discriminatedUnion('kind', [
  syntheticSourceSchema,
  z.strictObject({
    kind: z.literal('coco'),
    /** An instances JSON file, or a folder of instances_<split>.json files (one split each). */
    annotations: z.string().min(1),
    /** Folder that `file_name` entries are relative to. */
    images: z.string().min(1),
  }),
  z.strictObject({ kind: z.literal('voc'), root: z.string().min(1) }),
  z.strictObject({ kind: z.literal('imagefolder'), root: z.string().min(1) }),
]);
export type SourceConfig = z.infer<typeof sourceSchema>;

export const shardConfigSchema = z.strictObject({
  source: sourceSchema.default({ kind: 'synthetic', size: 'tiny', seed: 0 }),
  /** Most samples per shard. */
  shardSamples: z
    .number()
    .int()
    .positive()
    .max(MAX_SHARD_SAMPLES, limitMessage(MAX_SHARD_SAMPLES, 'a shard is assembled in the worker\'s memory before its upload, and a checkpoint is written only between shards'))
    .default(64),
  /** Optional byte cap per shard: a shard closes before the sample that would push it past this (a lone oversize sample still gets its own shard). */
  shardBytes: z
    .number()
    .int()
    .positive()
    .max(MAX_SHARD_BYTES, limitMessage(MAX_SHARD_BYTES, 'a shard is assembled in the worker\'s memory (4 GiB) before its upload'))
    .optional(),
  /** Seed of the deterministic sample shuffle before sharding. */
  seed: z.number().int().default(0),
  /** Skip bad items (recording them in the manifest's `skipped`) instead of failing the stage. */
  skipBad: z.boolean().default(false),
  imageFormat: z.enum(['png', 'jpg']).default('png'),
  jpegQuality: z.number().int().min(1).max(100).default(92),
  /**
   * Items loaded and encoded at once; changes speed, not output, so it is not part of the cache key.
   * Decoding also waits for the worker's decode memory budget (DENSEPIPE_DECODE_BUDGET_MB), so large
   * images run fewer at a time whatever this says.
   */
  concurrency: z
    .number()
    .int()
    .min(1)
    .max(MAX_SHARD_CONCURRENCY, limitMessage(MAX_SHARD_CONCURRENCY, 'each item in flight holds its file and decoded pixels in the worker\'s memory'))
    .default(4),
  /**
   * Largest image accepted, in pixels (width × height), read from the file's header before any
   * decoding: a small PNG can declare 16000×16000 and decode to 768 MB. A larger image is bad input
   * (or a skip record with skipBad).
   */
  maxImagePixels: z
    .number()
    .int()
    .positive()
    .max(MAX_IMAGE_PIXELS_CEILING, limitMessage(MAX_IMAGE_PIXELS_CEILING, 'the decoder\'s own ceiling (0x3FFF × 0x3FFF pixels); one such image decodes to 805 MB'))
    .default(DEFAULT_MAX_IMAGE_PIXELS),
});
export type ShardConfig = z.infer<typeof shardConfigSchema>;
export type ShardConfigInput = z.input<typeof shardConfigSchema>;
