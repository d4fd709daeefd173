/**
 * The seed noise of a run's evaluations (evaluation.repeats > 1, stages/downstream/repeats.ts): each
 * model's per-seed values, and whether the method's difference from each other model leaves the
 * noise band, judged by the regression verdict's rule (stages/regression/verdict.ts): a difference
 * counts when it is larger than k = 2 pooled seed standard deviations.
 */
import { compareMetric, type MetricComparison } from '../regression/verdict.js';
import { escapeHtml as esc, stripPlot } from './svg.js';

export const REPORT_NOISE_BAND = { k: 2, absoluteFloor: 0, minSeeds: 2 } as const;

export interface SeededResult {
  metrics: Record<string, number>;
  seedMetrics?: { seeds: number[]; metrics: Record<string, number[]> };
}

export interface EvaluatedModel {
  label: string;
  ref: SeededResult;
}

/** The method (first model) against each other model, per metric, where both have per-seed values. */
export function noiseComparisons(metricNames: string[], models: EvaluatedModel[]): Map<string, Map<string, MetricComparison>> {
  const [method, ...others] = models;
  const out = new Map<string, Map<string, MetricComparison>>();
  if (!method) return out;
  for (const metric of metricNames) {
    const mine = method.ref.seedMetrics?.metrics[metric];
    if (!mine) continue;
    const row = new Map<string, MetricComparison>();
    for (const other of others) {
      const theirs = other.ref.seedMetrics?.metrics[metric];
      if (!theirs) continue;
      const c = compareMetric({ series: method.label, metric, values: mine }, { series: other.label, metric, values: theirs }, REPORT_NOISE_BAND);
      // Neither side moves with the evaluation seed (e.g. kNN on two pretrained backbones): there is no noise estimate to judge by.
      if (c.verdict !== 'inconclusive' && c.bandHalfWidth === 0) {
        c.verdict = 'inconclusive';
        c.reason = 'neither side varies with the evaluation seed, so these seeds give no noise estimate';
      }
      row.set(other.label, c);
    }
    if (row.size) out.set(metric, row);
  }
  return out;
}

/** The words for a comparison of the method with another model. */
export function noiseWords(c: MetricComparison): string {
  const band = c.bandHalfWidth === null ? '' : `, band ±${c.bandHalfWidth.toFixed(4)}`;
  switch (c.verdict) {
    case 'improved':
      return `above, beyond noise${band}`;
    case 'regressed':
      return `below, beyond noise${band}`;
    case 'passed':
      return `within noise${band}`;
    default:
      return `not judged: ${c.reason}`;
  }
}

/** A few words for a table cell (the seed-noise table gives the band and the reason). */
export function noiseShort(c: MetricComparison): string {
  return c.verdict === 'improved' || c.verdict === 'regressed' ? 'beyond noise' : c.verdict === 'passed' ? 'within noise' : 'no noise estimate';
}

export function seedStd(ref: SeededResult, metric: string): { std: number; n: number } | null {
  const v = ref.seedMetrics?.metrics[metric];
  if (!v || v.length < 2) return null;
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  return { std: Math.sqrt(v.reduce((a, x) => a + (x - mean) ** 2, 0) / (v.length - 1)), n: v.length };
}

/** Localisation first (what dense methods claim), then the rest in name order. */
const LOCALIZATION = /^(semseg|unsup-seg|det|mask|detr)\./;

export function noiseHtml(metricNames: string[], models: EvaluatedModel[], comparisons: Map<string, Map<string, MetricComparison>>): string {
  const seeded = models.filter((m) => m.ref.seedMetrics);
  if (seeded.length === 0) return '';
  const seeds = seeded[0]!.ref.seedMetrics!.seeds;
  const names = metricNames.filter((m) => comparisons.has(m)).sort((a, b) => Number(!LOCALIZATION.test(a)) - Number(!LOCALIZATION.test(b)) || a.localeCompare(b));
  const verdictRows = names.flatMap((m) =>
    [...comparisons.get(m)!].map(
      ([vs, c]) =>
        `<tr class="verdict-${c.verdict}"><td>${esc(m)}</td><td>${esc(vs)}</td><td>${c.delta === null ? '–' : `${c.delta >= 0 ? '+' : ''}${c.delta.toFixed(4)}`}</td><td>${esc(noiseWords(c))}</td></tr>`,
    ),
  );
  const plots = names.map((m) => stripPlot(models.map((x) => ({ label: x.label, values: x.ref.seedMetrics?.metrics[m] ?? [] })), { title: m, xLabel: `${m}: one dot per evaluation seed, bar at the mean, band mean ± ${REPORT_NOISE_BAND.k} std`, k: REPORT_NOISE_BAND.k }));
  return `<h2>Seed noise</h2>
<p>Every model was evaluated with ${seeds.length} seeds (${seeds.join(', ')}). A seed changes the trained heads' initialisation and data order, k-means' initialisation and the random-init backbone itself; it does not change a pretrained backbone, whose pretraining ran once, so the noise of pretraining is not in these bands. A difference counts when it exceeds ${REPORT_NOISE_BAND.k} pooled seed standard deviations (the regression verdict's rule); otherwise it is reported as within noise.</p>
<table id="noise"><thead><tr><th>metric</th><th>${esc(models[0]?.label ?? 'method')} vs</th><th>Δ (means)</th><th>verdict</th></tr></thead><tbody>
${verdictRows.join('\n')}
</tbody></table>
<div class="noise-plots">${plots.join('\n')}</div>`;
}

export function noiseMarkdown(metricNames: string[], models: EvaluatedModel[], comparisons: Map<string, Map<string, MetricComparison>>): string[] {
  if (comparisons.size === 0) return [];
  const seeds = models.find((m) => m.ref.seedMetrics)?.ref.seedMetrics?.seeds ?? [];
  return [
    '## Seed noise',
    '',
    `Evaluation seeds ${seeds.join(', ')} (heads, k-means, the random-init backbone; pretraining ran once). A difference counts beyond ${REPORT_NOISE_BAND.k} pooled seed stds.`,
    '',
    `| metric | ${models[0]?.label ?? 'method'} vs | Δ (means) | verdict |`,
    '|---|---|---|---|',
    ...metricNames.flatMap((m) => [...(comparisons.get(m) ?? [])].map(([vs, c]) => `| ${m} | ${vs} | ${c.delta === null ? '–' : c.delta.toFixed(4)} | ${noiseWords(c)} |`)),
    '',
  ];
}
