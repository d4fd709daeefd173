import { z } from 'zod';

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
  shardSamples: z.number().int().positive().default(64),
  /** Optional byte cap per shard: a shard closes before the sample that would push it past this (a lone oversize sample still gets its own shard). */
  shardBytes: z.number().int().positive().optional(),
  /** Seed of the deterministic sample shuffle before sharding. */
  seed: z.number().int().default(0),
  /** Skip bad items (recording them in the manifest's `skipped`) instead of failing the stage. */
  skipBad: z.boolean().default(false),
  imageFormat: z.enum(['png', 'jpg']).default('png'),
  jpegQuality: z.number().int().min(1).max(100).default(92),
  /** Items loaded and encoded at once; changes speed, not output, so it is not part of the cache key. */
  concurrency: z.number().int().min(1).max(64).default(4),
});
export type ShardConfig = z.infer<typeof shardConfigSchema>;
export type ShardConfigInput = z.input<typeof shardConfigSchema>;
