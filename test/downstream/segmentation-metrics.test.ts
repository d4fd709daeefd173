import { describe, expect, it } from 'vitest';
import { hungarian } from '../../stages/engine/hungarian.js';
import { ConfusionMatrix, meanIoU, segmentationScores, top1Accuracy } from '../../stages/downstream/metrics/segmentation.js';
import { Rng } from '../../core/rng.js';

function bruteForceMinCost(cost: number[][]): number {
  const n = cost.length;
  const m = cost[0]!.length;
  let best = Infinity;
  const usedCols = new Array<boolean>(m).fill(false);
  // Assign min(n, m) pairs: every row when n <= m, otherwise every column.
  const rowsFirst = n <= m;
  const recurse = (i: number, acc: number, skipped: number) => {
    if (i === n) {
      best = Math.min(best, acc);
      return;
    }
    if (!rowsFirst && skipped < n - m) recurse(i + 1, acc, skipped + 1);
    for (let j = 0; j < m; j++) {
      if (usedCols[j]) continue;
      usedCols[j] = true;
      recurse(i + 1, acc + cost[i]![j]!, skipped);
      usedCols[j] = false;
    }
  };
  recurse(0, 0, 0);
  return best;
}

describe('hungarian', () => {
  it('matches brute force on 300 random matrices up to 6x6, square and rectangular, with ties', () => {
    const rng = Rng.fromSeed('hungarian-test');
    for (let trial = 0; trial < 300; trial++) {
      const n = rng.int(1, 7);
      const m = rng.int(1, 7);
      const integer = trial % 2 === 0; // integer costs produce many ties
      const cost = Array.from({ length: n }, () => Array.from({ length: m }, () => (integer ? rng.int(-3, 4) : rng.uniform(-1, 1))));
      const a = hungarian(cost);
      expect(a.cost).toBeCloseTo(bruteForceMinCost(cost), 9);
      const assigned = a.rowToColumn.filter((c) => c >= 0);
      expect(assigned.length).toBe(Math.min(n, m));
      expect(new Set(assigned).size).toBe(assigned.length);
      a.rowToColumn.forEach((c, r) => c >= 0 && expect(a.columnToRow[c]).toBe(r));
    }
  });

  it('maximises IoU when given negated IoU', () => {
    const iou = [
      [0.1, 0.8, 0.0],
      [0.7, 0.75, 0.0],
    ];
    expect(hungarian(iou.map((r) => r.map((x) => -x))).rowToColumn).toEqual([1, 0]);
  });
});

describe('segmentation scores', () => {
  it('per-class IoU, ignore index and classes absent everywhere', () => {
    // classes 0..3; class 3 appears nowhere -> NaN and not averaged
    const gt = [0, 0, 1, 1, 2, 255, 255, 2];
    const pred = [0, 1, 1, 1, 2, 3, 0, 0];
    const s = meanIoU([{ gt, pred }], 4);
    // class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: tp 1, gt 2, pred 1 -> 1/2
    expect(s.perClassIoU.slice(0, 3)).toEqual([1 / 3, 2 / 3, 1 / 2]);
    expect(Number.isNaN(s.perClassIoU[3])).toBe(true);
    expect(s.mIoU).toBeCloseTo((1 / 3 + 2 / 3 + 1 / 2) / 3, 12);
    expect(s.pixelAccuracy).toBe(4 / 6);
  });

  it('merging matrices equals accumulating all maps in one', () => {
    const a = new ConfusionMatrix(3);
    const b = new ConfusionMatrix(3);
    const all = new ConfusionMatrix(3);
    a.add([0, 1, 2], [0, 2, 2]);
    b.add([1, 1], [1, 0]);
    all.add([0, 1, 2, 1, 1], [0, 2, 2, 1, 0]);
    a.merge(b);
    expect(segmentationScores(a)).toEqual(segmentationScores(all));
  });

  it('rejects labels outside the class range, naming them', () => {
    expect(() => meanIoU([{ gt: [5], pred: [0] }], 3)).toThrow(/ground-truth label 5/);
  });

  it('top-1', () => {
    expect(top1Accuracy([1, 2, 3, 4], [1, 0, 3, 0])).toBe(0.5);
  });
});
