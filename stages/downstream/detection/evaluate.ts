/**
 * Scoring detections with the repository's pycocotools-equal `cocoEvaluate` (bbox): image ids are
 * 1..n in sample order, category ids are class index + 1 (COCO's ids start at 1), ground-truth
 * area is the instance mask's pixel count where the sample has a mask (what COCO stores), else
 * the box area, and crowd objects are passed as crowd.
 */
import { BadInputError } from '../../../core/errors.js';
import { cocoEvaluate, COCO_STAT_NAMES, type CocoDetection, type CocoGroundTruth } from '../metrics/coco-eval.js';
import { rleEncode, rleToString } from '../metrics/rle.js';
import { toXywh } from './boxes.js';
import type { Detection } from './postprocess.js';

export interface ScoredImage {
  key: string;
  boxes: Float32Array;
  labels: Int32Array;
  masks?: Array<Uint8Array | null>;
  iscrowd?: boolean[];
}

export interface DetectionScores {
  /** 'det.AP', 'det.AP50', ... 'det.ARl' (the 12 COCO summary numbers, -1 where undefined). */
  metrics: Record<string, number>;
  perClass: { classes: string[]; AP: Array<number | null>; AP50: Array<number | null>; AR100: Array<number | null>; support: number[] };
  predictions: Array<{ key: string; detections: Array<{ bbox: [number, number, number, number]; category: string; score: number; segmentation?: { size: [number, number]; counts: string } }> }>;
}

/** Box scores; `size` (the square image side) is needed only to store detections' masks as COCO RLE. */
export function scoreDetections(images: ScoredImage[], detections: Detection[][], classes: string[], size?: number): DetectionScores {
  if (images.length !== detections.length) throw new Error(`scoreDetections: ${images.length} images but ${detections.length} detection lists`);
  const groundTruth: CocoGroundTruth[] = [];
  const support = classes.map(() => 0);
  images.forEach((img, i) => {
    for (let g = 0; g < img.labels.length; g++) {
      const box = img.boxes.subarray(g * 4, g * 4 + 4);
      const mask = img.masks?.[g];
      const area = mask ? mask.reduce((a, v) => a + (v ? 1 : 0), 0) : undefined;
      const iscrowd = Boolean(img.iscrowd?.[g]);
      if (!iscrowd) support[img.labels[g]!]!++;
      groundTruth.push({ imageId: i + 1, categoryId: img.labels[g]! + 1, bbox: toXywh(box), area, iscrowd });
    }
  });
  const dts: CocoDetection[] = detections.flatMap((list, i) => list.map((d) => ({ imageId: i + 1, categoryId: d.label + 1, score: d.score, bbox: toXywh(d.box) })));
  const result = cocoEvaluate({ imageIds: images.map((_, i) => i + 1), categoryIds: classes.map((_, c) => c + 1), groundTruth, detections: dts, iouType: 'bbox' });
  const metrics: Record<string, number> = {};
  for (const name of COCO_STAT_NAMES) metrics[`det.${name}`] = result.stats[name];
  const orNull = (v: number) => (v < 0 ? null : v);
  return {
    metrics,
    perClass: {
      classes,
      AP: result.perCategory.map((c) => orNull(c.AP)),
      AP50: result.perCategory.map((c) => orNull(c.AP50)),
      AR100: result.perCategory.map((c) => orNull(c.AR100)),
      support,
    },
    predictions: images.map((img, i) => ({
      key: img.key,
      detections: detections[i]!.map((d) => ({
        bbox: toXywh(d.box).map(round3) as [number, number, number, number],
        category: classes[d.label]!,
        score: round3(d.score),
        ...(d.mask && size ? { segmentation: { size: [size, size] as [number, number], counts: rleToString(rleEncode(d.mask, size, size).counts) } } : {}),
      })),
    })),
  };
}

/**
 * Instance-mask scores ('mask.AP' ... 'mask.ARl', cocoEvaluate segm) of the detections that carry
 * masks (the others, below the detector's maskMaxDetections, are left out). Detections are passed
 * with their segmentation only, no box, so a detection's area is its mask's (pycocotools' loadRes
 * of segm results without 'bbox'). Every ground truth needs a mask.
 */
export function scoreMasks(images: ScoredImage[], detections: Detection[][], classes: string[], size: number): { metrics: Record<string, number>; AP: Array<number | null> } {
  const groundTruth: CocoGroundTruth[] = [];
  images.forEach((img, i) => {
    for (let g = 0; g < img.labels.length; g++) {
      const mask = img.masks?.[g];
      if (!mask) throw new BadInputError(`object ${g} of '${img.key}' has no instance mask; mask evaluation needs one on every object`, 'evaluation.detection.masks');
      groundTruth.push({ imageId: i + 1, categoryId: img.labels[g]! + 1, segmentation: rleEncode(mask, size, size), iscrowd: Boolean(img.iscrowd?.[g]) });
    }
  });
  const dts: CocoDetection[] = detections.flatMap((list, i) =>
    list.flatMap((d) => (d.mask ? [{ imageId: i + 1, categoryId: d.label + 1, score: d.score, segmentation: rleEncode(d.mask, size, size) }] : [])),
  );
  const result = cocoEvaluate({ imageIds: images.map((_, i) => i + 1), categoryIds: classes.map((_, c) => c + 1), groundTruth, detections: dts, iouType: 'segm' });
  const metrics: Record<string, number> = {};
  for (const name of COCO_STAT_NAMES) metrics[`mask.${name}`] = result.stats[name];
  return { metrics, AP: result.perCategory.map((c) => (c.AP < 0 ? null : c.AP)) };
}

const round3 = (v: number) => Math.round(v * 1000) / 1000;
