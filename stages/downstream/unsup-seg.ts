/**
 * Unsupervised object segmentation as R2O evaluates its region prior: cluster one image's dense
 * features with k-means into masks, match clusters to ground-truth segments (background + each
 * object) with the Hungarian method maximising IoU, and score the mean IoU over ground-truth
 * segments (a segment left without a cluster scores 0). The data-set score is the mean over images.
 */
import { hungarian } from '../engine/hungarian.js';
import { kmeans } from './kmeans.js';

export interface UnsupSegImage {
  /** h x w x C features of the image. */
  features: Float32Array;
  h: number;
  w: number;
  channels: number;
  /** Ground-truth segments at label resolution (size x size, row-major 0/1): background first. */
  segments: Uint8Array[];
  size: number;
}

/** Cluster map at label resolution (nearest-neighbour upsampling of the feature-grid clusters). */
export function clusterImage(img: UnsupSegImage, k: number, seed: number | string): Int32Array {
  const { assignment } = kmeans(img.features, img.channels, k, seed);
  const out = new Int32Array(img.size * img.size);
  for (let y = 0; y < img.size; y++) {
    const fy = Math.min(img.h - 1, Math.floor(((y + 0.5) * img.h) / img.size));
    for (let x = 0; x < img.size; x++) out[y * img.size + x] = assignment[fy * img.w + Math.min(img.w - 1, Math.floor(((x + 0.5) * img.w) / img.size))]!;
  }
  return out;
}

/** IoU of every cluster with every segment, Hungarian-matched; mean over segments. */
export function matchedSegmentIoU(clusters: Int32Array, k: number, segments: Uint8Array[]): { mIoU: number; perSegment: number[] } {
  const iou = Array.from({ length: k }, (_, c) =>
    segments.map((seg) => {
      let inter = 0;
      let union = 0;
      for (let p = 0; p < seg.length; p++) {
        const a = clusters[p] === c;
        const b = seg[p] !== 0;
        if (a && b) inter++;
        if (a || b) union++;
      }
      return union > 0 ? inter / union : 0;
    }),
  );
  const { columnToRow } = hungarian(iou.map((row) => row.map((v) => -v)));
  const perSegment = segments.map((_, s) => (columnToRow[s]! >= 0 ? iou[columnToRow[s]!]![s]! : 0));
  return { mIoU: perSegment.reduce((a, b) => a + b, 0) / Math.max(1, perSegment.length), perSegment };
}

export function evaluateUnsupervisedSegmentation(images: UnsupSegImage[], options: { clusters: number | 'segments'; seed: number }): { mIoU: number; perImage: number[] } {
  const perImage = images.map((img, i) => {
    const k = options.clusters === 'segments' ? img.segments.length : options.clusters;
    const clusters = clusterImage(img, k, `${options.seed}-${i}`);
    return matchedSegmentIoU(clusters, k, img.segments).mIoU;
  });
  return { mIoU: perImage.reduce((a, b) => a + b, 0) / Math.max(1, perImage.length), perImage };
}
