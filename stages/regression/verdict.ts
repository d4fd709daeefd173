/**
 * Regression verdicts: pure functions over numbers, documented in docs/REGRESSION.md.
 *
 * A series is one (method, dataset) of a suite; its seeds are samples of the run-to-run noise. For
 * each quality metric we compare the mean over the current seeds with the mean over the baseline's
 * seeds. The band is baseline mean ± max(k · pooled std, absolute floor): pooled over both sides'
 * seeds because a baseline that happened to land on two close seeds would otherwise call ordinary
 * noise a regression; the floor because a few eval images make the metric move in fixed steps.
 * All quality metrics are higher-is-better (core/metrics.ts keeps losses and throughput out).
 */
import type { NoiseBand } from './suite-config.js';

export type Verdict = 'passed' | 'regressed' | 'improved' | 'inconclusive';

export interface SeriesValues {
  series: string;
  metric: string;
  /** One value per seed that finished (failed members contribute nothing). */
  values: number[];
}

export interface MetricComparison {
  series: string;
  metric: string;
  verdict: Verdict;
  /** Why: the rule that decided it, in words (shown in the report and sent to the webhook). */
  reason: string;
  currentMean: number | null;
  currentStd: number | null;
  currentSeeds: number;
  baselineMean: number | null;
  baselineStd: number | null;
  baselineSeeds: number;
  delta: number | null;
  /** Half-width of the band around the baseline mean; null when there is nothing to compare. */
  bandHalfWidth: number | null;
  bandLow: number | null;
  bandHigh: number | null;
}

export function mean(xs: number[]): number {
  if (xs.length === 0) throw new Error('mean of no values');
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Sample standard deviation (n − 1); 0 for a single value. */
export function sampleStd(xs: number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

/** Pooled sample standard deviation of two groups (each with its own mean). */
export function pooledStd(a: number[], b: number[]): number {
  const dof = a.length - 1 + (b.length - 1);
  if (dof <= 0) return 0;
  const ss = (xs: number[]) => (xs.length < 2 ? 0 : sampleStd(xs) ** 2 * (xs.length - 1));
  return Math.sqrt((ss(a) + ss(b)) / dof);
}

const finite = (xs: number[]) => xs.filter((x) => Number.isFinite(x));

export function compareMetric(current: SeriesValues, baseline: SeriesValues | undefined, band: NoiseBand): MetricComparison {
  const cur = finite(current.values);
  const base = baseline ? finite(baseline.values) : [];
  const nonFinite = current.values.length - cur.length;
  const out: MetricComparison = {
    series: current.series,
    metric: current.metric,
    verdict: 'inconclusive',
    reason: '',
    currentMean: cur.length ? mean(cur) : null,
    currentStd: cur.length ? sampleStd(cur) : null,
    currentSeeds: cur.length,
    baselineMean: base.length ? mean(base) : null,
    baselineStd: base.length ? sampleStd(base) : null,
    baselineSeeds: base.length,
    delta: null,
    bandHalfWidth: null,
    bandLow: null,
    bandHigh: null,
  };
  if (cur.length && base.length) {
    const half = Math.max(band.k * pooledStd(cur, base), band.absoluteFloor);
    out.delta = out.currentMean! - out.baselineMean!;
    out.bandHalfWidth = half;
    out.bandLow = out.baselineMean! - half;
    out.bandHigh = out.baselineMean! + half;
  }
  // A diverged run (NaN metric) is the clearest regression there is: never let it read as "fewer seeds".
  if (nonFinite > 0) {
    out.verdict = 'regressed';
    out.reason = `${nonFinite} of ${current.values.length} seed(s) gave a non-finite value`;
    return out;
  }
  if (!baseline || base.length === 0) {
    out.reason = 'the baseline has no value for this metric';
    return out;
  }
  if (cur.length === 0) {
    out.reason = 'no current value (every member of this series failed)';
    return out;
  }
  if (cur.length < band.minSeeds || base.length < band.minSeeds) {
    out.reason = `too few seeds to estimate the noise (${cur.length} now, ${base.length} in the baseline; need ${band.minSeeds} on each side)`;
    return out;
  }
  const d = out.delta!;
  const half = out.bandHalfWidth!;
  if (d < -half) {
    out.verdict = 'regressed';
    out.reason = `mean fell ${(-d).toFixed(4)}, beyond the band of ±${half.toFixed(4)}`;
  } else if (d > half) {
    out.verdict = 'improved';
    out.reason = `mean rose ${d.toFixed(4)}, beyond the band of ±${half.toFixed(4)}`;
  } else {
    out.verdict = 'passed';
    out.reason = `change ${d >= 0 ? '+' : ''}${d.toFixed(4)} is within the band of ±${half.toFixed(4)}`;
  }
  return out;
}

/**
 * One verdict for the whole suite. Any regression wins; then anything that could not be judged
 * (a failed member, a metric without a baseline, too few seeds) makes the suite inconclusive,
 * so a broken nightly never reads as a pass; then improvements; else passed.
 */
/**
 * `divergedMembers`: members whose training produced a non-finite loss. That is the strongest
 * regression signal there is, even though such a member has no metrics to compare.
 */
export function suiteVerdict(comparisons: MetricComparison[], failedMembers: number, divergedMembers = 0): Verdict {
  if (divergedMembers > 0 || comparisons.some((c) => c.verdict === 'regressed')) return 'regressed';
  if (failedMembers > 0 || comparisons.length === 0 || comparisons.some((c) => c.verdict === 'inconclusive')) return 'inconclusive';
  if (comparisons.some((c) => c.verdict === 'improved')) return 'improved';
  return 'passed';
}
