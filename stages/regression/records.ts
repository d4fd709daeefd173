/**
 * Baselines and nightly records in the store, and the step from member outcomes to verdicts.
 *
 *   regression/baselines/<suite>.json                      the current baseline
 *   regression/baselines/<suite>/<stamp>.json               every promotion, kept
 *   regression/suites/<suite>/nightly/<stamp>-<run>.json    one record per suite run (trends)
 *   regression/suites/<suite>/runs/<run>/report.{html,json} the regression report
 */
import { IncompatibleArtifactError } from '../../core/errors.js';
import { getJson, putJson, type ArtifactStore } from '../../core/store/index.js';
import type { RunConfig } from '../../core/config.js';
import type { Suite } from './suite-config.js';
import type { CodeVersion, MemberOutcome } from './types.js';
import { compareMetric, suiteVerdict, type MetricComparison, type Verdict } from './verdict.js';

export const BASELINE_KIND = 'densepipe.regression-baseline';

export interface Baseline {
  kind: typeof BASELINE_KIND;
  suiteName: string;
  suiteHash: string;
  metrics: string[];
  /** series → metric → one value per seed. */
  values: Record<string, Record<string, number[]>>;
  members: Array<{ id: string; series: string; seed: number; configHash: string; config: RunConfig }>;
  provenance: {
    /** The suite run or reproduction run it was promoted from. */
    source: string;
    sourceKind: 'suite' | 'run';
    promotedAt: string;
    codeVersion: CodeVersion;
  };
}

export interface NightlyRecord {
  suiteName: string;
  suiteHash: string;
  workflowId: string;
  startedAt: string;
  codeVersion: CodeVersion;
  verdict: Verdict;
  members: MemberOutcome[];
  comparisons: MetricComparison[];
}

export const baselineKey = (suite: string) => `regression/baselines/${suite}.json`;
export const nightlyPrefix = (suite: string) => `regression/suites/${suite}/nightly/`;
export const reportPrefix = (suite: string, workflowId: string) => `regression/suites/${suite}/runs/${workflowId}/`;
const stamp = (iso: string) => iso.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');

/** Values per (series, metric) from the members that finished; failed members contribute nothing. */
export function collectValues(members: MemberOutcome[], metrics: string[]): Record<string, Record<string, number[]>> {
  const out: Record<string, Record<string, number[]>> = {};
  for (const m of members) {
    const series = (out[m.series] ??= Object.fromEntries(metrics.map((k) => [k, [] as number[]])));
    if (m.status !== 'completed' || !m.metrics) continue;
    for (const k of metrics) {
      const v = m.metrics[k];
      // A missing metric reads as NaN: the member finished but did not measure what the suite asks for.
      series[k]!.push(v === undefined || v === null ? Number.NaN : v);
    }
  }
  return out;
}

export function buildBaseline(args: {
  suite: Pick<Suite, 'name' | 'suiteHash' | 'metrics' | 'members'>;
  outcomes: MemberOutcome[];
  source: string;
  sourceKind: 'suite' | 'run';
  codeVersion: CodeVersion;
  promotedAt?: string;
}): Baseline {
  const completed = args.outcomes.filter((o) => o.status === 'completed');
  if (completed.length === 0) throw new IncompatibleArtifactError(`${args.source} has no finished member to promote`, args.source);
  const values = collectValues(completed, args.suite.metrics);
  for (const [series, byMetric] of Object.entries(values)) {
    for (const [metric, xs] of Object.entries(byMetric)) {
      if (xs.some((x) => !Number.isFinite(x))) {
        throw new IncompatibleArtifactError(`${series} ${metric} is missing or not finite in a member; a baseline must hold real numbers`, args.source);
      }
    }
  }
  const byId = new Map(args.suite.members.map((m) => [m.id, m]));
  return {
    kind: BASELINE_KIND,
    suiteName: args.suite.name,
    suiteHash: args.suite.suiteHash,
    metrics: args.suite.metrics,
    values,
    members: completed.map((o) => ({ id: o.id, series: o.series, seed: o.seed, configHash: o.configHash, config: byId.get(o.id)!.config })),
    provenance: { source: args.source, sourceKind: args.sourceKind, promotedAt: args.promotedAt ?? new Date().toISOString(), codeVersion: args.codeVersion },
  };
}

export async function saveBaseline(store: ArtifactStore, baseline: Baseline): Promise<{ key: string; historyKey: string }> {
  const key = baselineKey(baseline.suiteName);
  const historyKey = `regression/baselines/${baseline.suiteName}/${stamp(baseline.provenance.promotedAt)}.json`;
  await putJson(store, historyKey, baseline);
  await putJson(store, key, baseline);
  return { key, historyKey };
}

/** The baseline, or null when none was promoted yet; a file that is not a baseline is an error. */
export async function loadBaseline(store: ArtifactStore, key: string): Promise<Baseline | null> {
  if (!(await store.exists(key))) return null;
  const b = await getJson<Partial<Baseline>>(store, key);
  if (b.kind !== BASELINE_KIND || typeof b.suiteName !== 'string' || !b.values || !b.provenance) {
    throw new IncompatibleArtifactError(`not a densepipe regression baseline (kind ${JSON.stringify(b.kind)})`, store.url(key));
  }
  return b as Baseline;
}

/**
 * A baseline promoted from another suite, or one that shares no (series, metric) with this suite,
 * cannot be compared: refuse it by name rather than report every metric as inconclusive.
 */
export function assertCompatible(baseline: Baseline, suite: Pick<Suite, 'name' | 'metrics' | 'members'>, where: string): void {
  if (baseline.suiteName !== suite.name) {
    throw new IncompatibleArtifactError(`baseline was promoted from suite '${baseline.suiteName}' (${baseline.provenance.source}), not from suite '${suite.name}'`, where);
  }
  const series = [...new Set(suite.members.map((m) => m.series))];
  const shared = series.flatMap((s) => suite.metrics.filter((k) => (baseline.values[s]?.[k]?.length ?? 0) > 0));
  if (shared.length === 0) {
    throw new IncompatibleArtifactError(
      `baseline shares no series and metric with suite '${suite.name}' (baseline: ${Object.keys(baseline.values).join(', ')} × ${baseline.metrics.join(', ')}; suite: ${series.join(', ')} × ${suite.metrics.join(', ')})`,
      where,
    );
  }
}

export function judge(suite: Pick<Suite, 'metrics' | 'members' | 'noise'>, outcomes: MemberOutcome[], baseline: Baseline | null): { verdict: Verdict; comparisons: MetricComparison[] } {
  const current = collectValues(outcomes, suite.metrics);
  const comparisons: MetricComparison[] = [];
  for (const series of [...new Set(suite.members.map((m) => m.series))]) {
    for (const metric of suite.metrics) {
      const values = current[series]?.[metric] ?? [];
      const base = baseline?.values[series]?.[metric];
      comparisons.push(compareMetric({ series, metric, values }, base ? { series, metric, values: base } : undefined, suite.noise));
    }
  }
  const failed = outcomes.filter((o) => o.status === 'failed');
  // Member errors read `<type>: <message>` (the innermost failure of the child run).
  const diverged = failed.filter((o) => o.error?.startsWith('TrainingDivergedError')).length;
  return { verdict: suiteVerdict(comparisons, failed.length, diverged), comparisons };
}

export async function saveNightly(store: ArtifactStore, record: NightlyRecord): Promise<string> {
  const key = `${nightlyPrefix(record.suiteName)}${stamp(record.startedAt)}-${record.workflowId}.json`;
  await putJson(store, key, record);
  return key;
}

/** The most recent `limit` nightly records, oldest first (keys sort by start time). */
export async function recentNightlies(store: ArtifactStore, suite: string, limit: number): Promise<NightlyRecord[]> {
  const keys = (await store.list(nightlyPrefix(suite))).filter((k) => k.endsWith('.json')).sort().slice(-limit);
  return Promise.all(keys.map((k) => getJson<NightlyRecord>(store, k)));
}

export interface ConfigChange {
  member: string;
  path: string;
  before: unknown;
  after: unknown;
}

function flatten(value: unknown, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = value;
  }
  return out;
}

/** Config fields that differ between each member and the baseline member with the same id. */
export function configDiff(baseline: Baseline, suite: Pick<Suite, 'members'>): ConfigChange[] {
  const changes: ConfigChange[] = [];
  const before = new Map(baseline.members.map((m) => [m.id, m]));
  for (const m of suite.members) {
    const b = before.get(m.id);
    if (!b) {
      changes.push({ member: m.id, path: '(member)', before: undefined, after: 'new in this suite run' });
      continue;
    }
    if (b.configHash === m.configHash) continue;
    const fa = flatten(b.config);
    const fb = flatten(m.config);
    for (const path of [...new Set([...Object.keys(fa), ...Object.keys(fb)])].sort()) {
      if (JSON.stringify(fa[path]) !== JSON.stringify(fb[path])) changes.push({ member: m.id, path, before: fa[path], after: fb[path] });
    }
  }
  return changes;
}
