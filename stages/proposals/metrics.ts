import { iou, type Box } from './boxes.js';

/**
 * Proposal quality as the Selective Search paper and later proposal benchmarks define it:
 * best overlap of each ground-truth box with any of the first N proposals; recall = fraction of
 * ground-truth boxes whose best overlap reaches the IoU threshold; ABO = mean best overlap.
 */
export function bestOverlaps(groundTruth: Box[], proposals: Box[], topN = Infinity): number[] {
  const considered = proposals.slice(0, Math.min(proposals.length, topN));
  return groundTruth.map((g) => considered.reduce((best, p) => Math.max(best, iou(g, p)), 0));
}

export interface QualityPoint {
  proposals: number;
  recallAt50: number;
  recallAt70: number;
  averageBestOverlap: number;
}

/** Recall at IoU 0.5 / 0.7 and ABO over a set of images, for each proposal budget in `budgets`. */
export function proposalQuality(images: Array<{ groundTruth: Box[]; proposals: Box[] }>, budgets: number[]): QualityPoint[] {
  return budgets.map((n) => {
    const overlaps = images.flatMap((im) => bestOverlaps(im.groundTruth, im.proposals, n));
    const total = Math.max(1, overlaps.length);
    return {
      proposals: n,
      recallAt50: overlaps.filter((o) => o >= 0.5).length / total,
      recallAt70: overlaps.filter((o) => o >= 0.7).length / total,
      averageBestOverlap: overlaps.reduce((a, b) => a + b, 0) / total,
    };
  });
}

/**
 * Boundary agreement of two label maps of the same size: a boundary pixel is one whose right or
 * lower neighbour has another label. Returns precision/recall of `ours` against `reference`
 * with a tolerance of `tolerance` pixels (Chebyshev), plus their F-measure.
 */
export function boundaryAgreement(ours: Int32Array, reference: Int32Array, width: number, height: number, tolerance = 1): { precision: number; recall: number; f: number } {
  const edges = (labels: Int32Array) => {
    const e = new Uint8Array(width * height);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const p = y * width + x;
        if ((x + 1 < width && labels[p] !== labels[p + 1]) || (y + 1 < height && labels[p] !== labels[p + width])) e[p] = 1;
      }
    }
    return e;
  };
  const a = edges(ours);
  const b = edges(reference);
  const matched = (from: Uint8Array, to: Uint8Array) => {
    let hit = 0;
    let total = 0;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (!from[y * width + x]) continue;
        total++;
        search: for (let dy = -tolerance; dy <= tolerance; dy++) {
          for (let dx = -tolerance; dx <= tolerance; dx++) {
            const yy = y + dy;
            const xx = x + dx;
            if (yy >= 0 && yy < height && xx >= 0 && xx < width && to[yy * width + xx]) {
              hit++;
              break search;
            }
          }
        }
      }
    }
    return total === 0 ? 1 : hit / total;
  };
  const precision = matched(a, b);
  const recall = matched(b, a);
  return { precision, recall, f: precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall) };
}
