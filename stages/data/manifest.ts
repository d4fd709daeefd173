import { z } from 'zod';
import type { SampleObject } from './sample.js';

export const DATASET_MANIFEST_SCHEMA = 'densepipe.dataset/v1';

/** Object size bins by sqrt(object area / image area), i.e. the object's side as a fraction of the image's. */
export const SIZE_BINS = [0.1, 0.2, 0.3, 0.5] as const;
export const SIZE_BIN_NAMES = ['<0.1', '0.1-0.2', '0.2-0.3', '0.3-0.5', '>=0.5'] as const;

export const shardRecordSchema = z.object({
  key: z.string(),
  sha256: z.string(),
  bytes: z.number().int(),
  samples: z.number().int(),
  firstKey: z.string(),
  lastKey: z.string(),
});
export type ShardRecord = z.infer<typeof shardRecordSchema>;

export interface SplitStats {
  images: number;
  objects: number;
  objectsPerImage: { mean: number; min: number; max: number; histogram: Record<string, number> };
  /** Objects per class name. */
  classCounts: Record<string, number>;
  /** Images containing at least one object (or, for ImageFolder, with the image label) per class. */
  imagesPerClass: Record<string, number>;
  sizeHistogram: Record<string, number>;
  /** Only for sources that record occlusion (the synthetic benchmark). */
  occlusion?: { mean: number; fractionOccluded10: number; max: number };
}

export interface SplitManifest {
  samples: number;
  shards: ShardRecord[];
  stats: SplitStats;
}

export interface SkippedItem {
  split: string;
  origin: string;
  reason: string;
}

export interface DatasetManifest {
  schema: typeof DATASET_MANIFEST_SCHEMA;
  description: string;
  classes: string[];
  /** [width, height] when every image has the same size. */
  imageSize?: [number, number];
  imageFormat: 'png' | 'jpg';
  shuffleSeed: number;
  splits: Record<string, SplitManifest>;
  skipped: SkippedItem[];
}

/** Raw, mergeable counters behind SplitStats: kept per shard in checkpoints so a resumed run can still report whole-split statistics. */
export interface StatsCounters {
  images: number;
  objects: number;
  minObjects: number | null;
  maxObjects: number;
  perImage: Record<string, number>;
  classCounts: number[];
  imagesPerClass: number[];
  sizes: number[];
  occlusionSeen: number;
  occlusionSum: number;
  occlusionMax: number;
  occluded10: number;
}

export function emptyCounters(numClasses: number): StatsCounters {
  return {
    images: 0,
    objects: 0,
    minObjects: null,
    maxObjects: 0,
    perImage: {},
    classCounts: new Array<number>(numClasses).fill(0),
    imagesPerClass: new Array<number>(numClasses).fill(0),
    sizes: new Array<number>(SIZE_BIN_NAMES.length).fill(0),
    occlusionSeen: 0,
    occlusionSum: 0,
    occlusionMax: 0,
    occluded10: 0,
  };
}

export function countSample(c: StatsCounters, width: number, height: number, objects: readonly SampleObject[], imageLabel?: number): void {
  c.images++;
  c.objects += objects.length;
  c.minObjects = c.minObjects === null ? objects.length : Math.min(c.minObjects, objects.length);
  c.maxObjects = Math.max(c.maxObjects, objects.length);
  c.perImage[objects.length] = (c.perImage[objects.length] ?? 0) + 1;
  const present = new Set<number>();
  if (imageLabel !== undefined) present.add(imageLabel);
  for (const o of objects) {
    c.classCounts[o.label] = (c.classCounts[o.label] ?? 0) + 1;
    present.add(o.label);
    const side = Math.sqrt(o.area / (width * height));
    let bin = SIZE_BINS.findIndex((edge) => side < edge);
    if (bin < 0) bin = SIZE_BINS.length;
    c.sizes[bin]!++;
    if (o.occlusion !== undefined) {
      c.occlusionSeen++;
      c.occlusionSum += o.occlusion;
      c.occlusionMax = Math.max(c.occlusionMax, o.occlusion);
      if (o.occlusion > 0.1) c.occluded10++;
    }
  }
  for (const label of present) c.imagesPerClass[label] = (c.imagesPerClass[label] ?? 0) + 1;
}

export function mergeCounters(numClasses: number, parts: readonly StatsCounters[]): StatsCounters {
  const out = emptyCounters(numClasses);
  for (const p of parts) {
    out.images += p.images;
    out.objects += p.objects;
    if (p.minObjects !== null) out.minObjects = out.minObjects === null ? p.minObjects : Math.min(out.minObjects, p.minObjects);
    out.maxObjects = Math.max(out.maxObjects, p.maxObjects);
    for (const [k, v] of Object.entries(p.perImage)) out.perImage[k] = (out.perImage[k] ?? 0) + v;
    p.classCounts.forEach((v, i) => (out.classCounts[i] = (out.classCounts[i] ?? 0) + v));
    p.imagesPerClass.forEach((v, i) => (out.imagesPerClass[i] = (out.imagesPerClass[i] ?? 0) + v));
    p.sizes.forEach((v, i) => (out.sizes[i] = (out.sizes[i] ?? 0) + v));
    out.occlusionSeen += p.occlusionSeen;
    out.occlusionSum += p.occlusionSum;
    out.occlusionMax = Math.max(out.occlusionMax, p.occlusionMax);
    out.occluded10 += p.occluded10;
  }
  return out;
}

export function statsFromCounters(classes: readonly string[], c: StatsCounters): SplitStats {
  const byName = (counts: number[]) => Object.fromEntries(classes.map((name, i) => [name, counts[i] ?? 0]));
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  return {
    images: c.images,
    objects: c.objects,
    objectsPerImage: { mean: c.images ? round(c.objects / c.images) : 0, min: c.minObjects ?? 0, max: c.maxObjects, histogram: { ...c.perImage } },
    classCounts: byName(c.classCounts),
    imagesPerClass: byName(c.imagesPerClass),
    sizeHistogram: Object.fromEntries(SIZE_BIN_NAMES.map((n, i) => [n, c.sizes[i] ?? 0])),
    ...(c.occlusionSeen
      ? { occlusion: { mean: round(c.occlusionSum / c.occlusionSeen), fractionOccluded10: round(c.occluded10 / c.occlusionSeen), max: round(c.occlusionMax) } }
      : {}),
  };
}
