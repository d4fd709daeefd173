import { describe, expect, it } from 'vitest';
import { comparisonTable, meanStd } from '../../stages/regression/comparison.js';
import type { MemberOutcome } from '../../stages/regression/types.js';

const member = (series: string, method: string, seed: number, status: 'completed' | 'failed', m?: number, b?: number, s?: number): MemberOutcome => ({
  id: `${series}-s${seed}`,
  series,
  method,
  dataset: 'synthetic-tiny',
  seed,
  configHash: 'h',
  workflowId: `wf-${seed}`,
  status,
  ...(m === undefined ? {} : { metrics: { 'knn.top1': m, 'knn.imagesPerSecond': 100 } }),
  ...(b === undefined ? {} : { baselineMetrics: { 'knn.top1': b } }),
  ...(s === undefined ? {} : { supervisedMetrics: { 'knn.top1': s } }),
});

describe('suite comparison table', () => {
  it('gives mean ± sample std over finished seeds, per series and backbone, quality metrics only', () => {
    const { metrics, rows } = comparisonTable([
      member('densecl', 'densecl', 0, 'completed', 0.6, 0.3, 0.7),
      member('densecl', 'densecl', 1, 'completed', 0.8, 0.3, 0.9),
      member('densecl', 'densecl', 2, 'failed'),
      member('mocov2', 'mocov2', 0, 'completed', 0.5, 0.3),
    ]);
    expect(metrics).toEqual(['knn.top1']);
    expect(rows.map((r) => [r.series, r.backbone, r.cells['knn.top1']?.n])).toEqual([
      ['densecl', 'densecl', 2],
      ['densecl', 'random init', 2],
      ['densecl', 'supervised', 2],
      ['mocov2', 'mocov2', 1],
      ['mocov2', 'random init', 1],
    ]);
    expect(rows[0]!.cells['knn.top1']!.mean).toBeCloseTo(0.7, 12);
    expect(rows[0]!.cells['knn.top1']!.std).toBeCloseTo(Math.SQRT2 * 0.1, 12);
  });

  it('uses the sample standard deviation', () => {
    expect(meanStd([1, 2, 3, 4])).toEqual({ mean: 2.5, std: Math.sqrt(5 / 3), n: 4 });
    expect(meanStd([5])).toEqual({ mean: 5, std: 0, n: 1 });
  });
});
