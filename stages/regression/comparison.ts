/**
 * The comparison table of a suite: for each series (method × dataset), the pretrained backbone next
 * to the random-init and supervised baselines on the same evaluation, every quality metric as
 * mean ± sample std over the seeds that finished.
 */
import { splitMetrics } from '../../core/metrics.js';
import type { MemberOutcome } from './types.js';

export interface ComparisonCell {
  mean: number;
  std: number;
  n: number;
}

export interface ComparisonRow {
  series: string;
  /** 'pretrained' (the series' own method), 'random init' or 'supervised'. */
  backbone: string;
  cells: Record<string, ComparisonCell>;
}

export function meanStd(values: number[]): ComparisonCell {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  // Sample standard deviation (n - 1), as seed spreads are reported; 0 for a single seed.
  const std = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std, n };
}

export function comparisonTable(members: MemberOutcome[]): { metrics: string[]; rows: ComparisonRow[] } {
  const done = members.filter((m) => m.status === 'completed');
  const kinds: Array<[string, (m: MemberOutcome) => Record<string, number> | undefined]> = [
    ['pretrained', (m) => m.metrics],
    ['random init', (m) => m.baselineMetrics],
    ['supervised', (m) => m.supervisedMetrics],
  ];
  const metrics = splitMetrics(Object.assign({}, ...done.flatMap((m) => kinds.map(([, get]) => get(m) ?? {})))).quality;
  const rows: ComparisonRow[] = [];
  for (const series of [...new Set(done.map((m) => m.series))]) {
    const inSeries = done.filter((m) => m.series === series);
    for (const [backbone, get] of kinds) {
      const cells: Record<string, ComparisonCell> = {};
      for (const metric of metrics) {
        const values = inSeries.map((m) => get(m)?.[metric]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
        if (values.length) cells[metric] = meanStd(values);
      }
      if (Object.keys(cells).length) rows.push({ series, backbone: backbone === 'pretrained' ? `${inSeries[0]!.method}` : backbone, cells });
    }
  }
  return { metrics, rows };
}
