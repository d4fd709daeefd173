import { describe, expect, it } from 'vitest';
import { compareMetric, mean, pooledStd, sampleStd, suiteVerdict } from '../../stages/regression/verdict.js';
import { assertCompatible, buildBaseline, collectValues, configDiff, judge } from '../../stages/regression/records.js';
import { parseSuite } from '../../stages/regression/suite-config.js';
import type { MemberOutcome } from '../../stages/regression/types.js';

const band = { k: 2, absoluteFloor: 0.02, minSeeds: 2 };
const series = (values: number[]) => ({ series: 'densecl@synthetic-tiny', metric: 'knn.top1', values });

describe('noise statistics', () => {
  it('computes sample and pooled standard deviations', () => {
    expect(mean([1, 2, 3])).toBe(2);
    expect(sampleStd([1, 2, 3])).toBeCloseTo(1, 12);
    expect(sampleStd([5])).toBe(0);
    // Two groups with variances 1 and 4 and equal sizes: pooled variance 2.5.
    expect(pooledStd([1, 2, 3], [0, 2, 4])).toBeCloseTo(Math.sqrt(2.5), 12);
  });
});

describe('compareMetric', () => {
  const baseline = series([0.5, 0.52, 0.48]);

  it('passes a change inside the band (seed noise)', () => {
    const c = compareMetric(series([0.51, 0.47, 0.5]), baseline, band);
    expect(c.verdict).toBe('passed');
    expect(c.bandHalfWidth!).toBeGreaterThan(Math.abs(c.delta!));
    expect(c.bandLow).toBeCloseTo(0.5 - c.bandHalfWidth!, 12);
  });

  it('flags a drop beyond k·std as regressed and a rise as improved', () => {
    expect(compareMetric(series([0.3, 0.32, 0.31]), baseline, band).verdict).toBe('regressed');
    expect(compareMetric(series([0.7, 0.72, 0.71]), baseline, band).verdict).toBe('improved');
  });

  it('never calls a difference smaller than the absolute floor, even with zero seed noise', () => {
    const tight = series([0.5, 0.5]);
    expect(compareMetric(series([0.49, 0.49]), tight, band).verdict).toBe('passed');
    const c = compareMetric(series([0.47, 0.47]), tight, band);
    expect(c.verdict).toBe('regressed');
    expect(c.bandHalfWidth).toBe(0.02);
  });

  it('is inconclusive with too few seeds on either side, and says why', () => {
    const few = compareMetric(series([0.1]), baseline, band);
    expect(few.verdict).toBe('inconclusive');
    expect(few.reason).toMatch(/too few seeds.*1 now, 3 in the baseline/);
    expect(compareMetric(series([0.5, 0.5]), series([0.5]), band).verdict).toBe('inconclusive');
  });

  it('is inconclusive without a baseline or without current values', () => {
    expect(compareMetric(series([0.5, 0.5]), undefined, band).reason).toMatch(/baseline has no value/);
    expect(compareMetric(series([]), baseline, band).reason).toMatch(/every member of this series failed/);
  });

  it('calls a diverged (NaN) seed a regression rather than a missing value', () => {
    const c = compareMetric(series([0.5, Number.NaN]), baseline, band);
    expect(c.verdict).toBe('regressed');
    expect(c.reason).toMatch(/non-finite/);
  });
});

describe('suiteVerdict', () => {
  const v = (verdict: 'passed' | 'regressed' | 'improved' | 'inconclusive') => ({ ...compareMetric(series([0.5, 0.5]), series([0.5, 0.5]), band), verdict });
  it('lets a regression win, then anything unjudgeable, then improvements', () => {
    expect(suiteVerdict([v('passed'), v('regressed'), v('improved')], 0)).toBe('regressed');
    expect(suiteVerdict([v('passed'), v('inconclusive'), v('improved')], 0)).toBe('inconclusive');
    expect(suiteVerdict([v('passed'), v('improved')], 0)).toBe('improved');
    expect(suiteVerdict([v('passed'), v('passed')], 0)).toBe('passed');
  });
  it('never passes a suite with a failed member or with nothing compared', () => {
    expect(suiteVerdict([v('passed')], 1)).toBe('inconclusive');
    expect(suiteVerdict([], 0)).toBe('inconclusive');
  });
  it('counts a member whose training diverged as a regression', () => {
    expect(suiteVerdict([v('passed')], 1, 1)).toBe('regressed');
  });
});

describe('baselines and judgement', () => {
  const suite = parseSuite({ name: 'unit', methods: ['densecl', 'mocov2'], seeds: [0, 1], tasks: ['knn'] }, 'unit.yaml');
  const version = { packageVersion: '0.1.0', gitCommit: 'abc', dirty: false };
  const outcome = (id: string, top1: number | undefined, status: 'completed' | 'failed' = 'completed'): MemberOutcome => {
    const m = suite.members.find((x) => x.id === id)!;
    return { id, series: m.series, method: m.method, dataset: m.dataset, seed: m.seed, configHash: m.configHash, workflowId: `wf-${id}`, status, metrics: top1 === undefined ? undefined : { 'knn.top1': top1, 'knn.imagesPerSecond': 1000 } };
  };
  const good = [outcome('densecl-synthetic-tiny-s0', 0.6), outcome('densecl-synthetic-tiny-s1', 0.62), outcome('mocov2-synthetic-tiny-s0', 0.5), outcome('mocov2-synthetic-tiny-s1', 0.52)];

  it('groups seeds by series and keeps only the compared (quality) metrics', () => {
    expect(collectValues(good, suite.metrics)).toEqual({
      'densecl@synthetic-tiny': { 'knn.top1': [0.6, 0.62] },
      'mocov2@synthetic-tiny': { 'knn.top1': [0.5, 0.52] },
    });
  });

  it('records provenance and judges a planted regression in one series only', () => {
    const b = buildBaseline({ suite, outcomes: good, source: 'suite-run-1', sourceKind: 'suite', codeVersion: version, promotedAt: '2026-01-01T00:00:00.000Z' });
    expect(b.provenance).toEqual({ source: 'suite-run-1', sourceKind: 'suite', promotedAt: '2026-01-01T00:00:00.000Z', codeVersion: version });
    expect(b.members.map((m) => m.configHash)).toEqual(suite.members.map((m) => m.configHash));
    const broken = [outcome('densecl-synthetic-tiny-s0', 0.2), outcome('densecl-synthetic-tiny-s1', 0.22), outcome('mocov2-synthetic-tiny-s0', 0.51), outcome('mocov2-synthetic-tiny-s1', 0.5)];
    const j = judge(suite, broken, b);
    expect(j.verdict).toBe('regressed');
    expect(j.comparisons.map((c) => [c.series, c.verdict])).toEqual([
      ['densecl@synthetic-tiny', 'regressed'],
      ['mocov2@synthetic-tiny', 'passed'],
    ]);
  });

  it('does not hide a failed member: its series loses a seed and the suite is inconclusive', () => {
    const b = buildBaseline({ suite, outcomes: good, source: 's', sourceKind: 'suite', codeVersion: version });
    const j = judge(suite, [outcome('densecl-synthetic-tiny-s0', 0.6), outcome('densecl-synthetic-tiny-s1', undefined, 'failed'), ...good.slice(2)], b);
    expect(j.verdict).toBe('inconclusive');
    expect(j.comparisons[0]!.reason).toMatch(/too few seeds .*\(1 now/);
  });

  it('judges a diverged member (non-finite loss) as a regression, not as noise', () => {
    const b = buildBaseline({ suite, outcomes: good, source: 's', sourceKind: 'suite', codeVersion: version });
    const diverged = { ...outcome('densecl-synthetic-tiny-s1', undefined, 'failed'), error: 'TrainingDivergedError: pretrain: loss became NaN at step 3 (lr 3.75)' };
    expect(judge(suite, [outcome('densecl-synthetic-tiny-s0', 0.6), diverged, ...good.slice(2)], b).verdict).toBe('regressed');
  });

  it('refuses a baseline from another suite, or one that shares no metric, naming both', () => {
    const b = buildBaseline({ suite, outcomes: good, source: 's', sourceKind: 'suite', codeVersion: version });
    const other = parseSuite({ name: 'other', methods: ['densecl'], seeds: [0], tasks: ['knn'] });
    expect(() => assertCompatible(b, other, 'baselines/unit.json')).toThrow(/baselines\/unit\.json: baseline was promoted from suite 'unit'.*not from suite 'other'/);
    const linearOnly = parseSuite({ name: 'unit', methods: ['densecl'], seeds: [0], tasks: ['linear'] });
    expect(() => assertCompatible(b, linearOnly, 'k')).toThrow(/shares no series and metric/);
    expect(() => assertCompatible(b, suite, 'k')).not.toThrow();
  });

  it('refuses to promote a run without real numbers', () => {
    expect(() => buildBaseline({ suite, outcomes: [outcome('densecl-synthetic-tiny-s0', undefined, 'failed')], source: 's', sourceKind: 'suite', codeVersion: version })).toThrow(/no finished member/);
    expect(() => buildBaseline({ suite, outcomes: [outcome('densecl-synthetic-tiny-s0', Number.NaN)], source: 's', sourceKind: 'suite', codeVersion: version })).toThrow(/not finite/);
  });

  it('lists the config fields that changed since the baseline', () => {
    const b = buildBaseline({ suite, outcomes: good, source: 's', sourceKind: 'suite', codeVersion: version });
    const changed = parseSuite({ name: 'unit', methods: ['densecl', 'mocov2'], seeds: [0, 1], tasks: ['knn'], base: { pretrain: { optimizer: { baseLr: 30 } } } });
    const diff = configDiff(b, changed);
    expect(diff.filter((c) => c.member === 'densecl-synthetic-tiny-s0')).toEqual([{ member: 'densecl-synthetic-tiny-s0', path: 'pretrain.optimizer.baseLr', before: 0.03, after: 30 }]);
    expect(configDiff(b, suite)).toEqual([]);
  });
});
