/**
 * The regression report: HTML (self-contained, renders offline) and JSON. Per (series, metric) it
 * shows the baseline and current means with the band and the verdict, a trend plot over the most
 * recent nightly runs, links to every member run in the Temporal UI, and what changed since the
 * baseline (config fields and code).
 */
import { putJson, type ArtifactStore } from '../../core/store/index.js';
import { temporalUiLink } from '../../cli/env.js';
import { escapeHtml as esc, linePlot } from '../report/svg.js';
import type { Baseline, ConfigChange, NightlyRecord } from './records.js';
import { describeCodeVersion } from './provenance.js';
import type { CodeVersion, MemberOutcome } from './types.js';
import type { MetricComparison, Verdict } from './verdict.js';
import { comparisonTable } from './comparison.js';
import { claimCheck } from './claims.js';

export interface RegressionReportData {
  suite: string;
  suiteHash: string;
  workflowId: string;
  startedAt: string;
  verdict: Verdict;
  codeVersion: CodeVersion;
  ui: { url: string; namespace: string };
  members: MemberOutcome[];
  comparisons: MetricComparison[];
  baseline: (Pick<Baseline, 'suiteHash' | 'provenance'> & { key: string }) | null;
  configChanges: ConfigChange[];
  codeDiff: string;
  /** Oldest first, including this run. */
  trend: Array<Pick<NightlyRecord, 'workflowId' | 'startedAt' | 'comparisons'>>;
  warnings: string[];
}

const VERDICT_COLOURS: Record<Verdict, string> = { passed: '#2ca02c', improved: '#1f77b4', regressed: '#d62728', inconclusive: '#ff7f0e' };
const num = (v: number | null | undefined, digits = 4) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits));
const badge = (v: Verdict) => `<span class="verdict ${v}" style="background:${VERDICT_COLOURS[v]}">${v}</span>`;

/** One plot per compared (series, metric): the nightly means, and the baseline band as two lines. */
export function trendPlot(c: MetricComparison, trend: RegressionReportData['trend']): string {
  const points: Array<[number, number]> = [];
  trend.forEach((run, i) => {
    const m = run.comparisons.find((x) => x.series === c.series && x.metric === c.metric)?.currentMean;
    if (m !== null && m !== undefined && Number.isFinite(m)) points.push([i + 1, m]);
  });
  const series = [{ label: 'nightly mean', points }];
  if (c.bandLow !== null && c.bandHigh !== null && trend.length > 0) {
    const span: Array<[number, number]> = [[1, 0], [Math.max(trend.length, 2), 0]];
    series.push({ label: 'band high', points: span.map(([x]) => [x, c.bandHigh!] as [number, number]) });
    series.push({ label: 'band low', points: span.map(([x]) => [x, c.bandLow!] as [number, number]) });
  }
  return linePlot(series, { title: `${c.series} ${c.metric}`, xLabel: `nightly run (last ${trend.length})`, yLabel: c.metric, width: 480, height: 240 });
}

export function renderRegressionHtml(d: RegressionReportData): string {
  const link = (id: string) => `<a href="${esc(temporalUiLink(d.ui.url, d.ui.namespace, id))}">${esc(id)}</a>`;
  const rows = d.comparisons
    .map(
      (c) =>
        `<tr class="${c.verdict}"><td>${esc(c.series)}</td><td>${esc(c.metric)}</td><td>${num(c.baselineMean)} ± ${num(c.baselineStd)} (n=${c.baselineSeeds})</td>` +
        `<td>${num(c.currentMean)} ± ${num(c.currentStd)} (n=${c.currentSeeds})</td><td>${c.delta === null ? '–' : (c.delta >= 0 ? '+' : '') + num(c.delta)}</td>` +
        `<td>${c.bandLow === null ? '–' : `[${num(c.bandLow)}, ${num(c.bandHigh)}] (±${num(c.bandHalfWidth)})`}</td><td>${badge(c.verdict)}</td><td>${esc(c.reason)}</td></tr>`,
    )
    .join('\n');
  const members = d.members
    .map(
      (m) =>
        `<tr class="${m.status}"><td>${esc(m.id)}</td><td>${m.seed}</td><td>${link(m.workflowId)}</td><td>${m.status}</td><td><code>${esc(m.configHash)}</code></td><td>${esc(m.error ?? '')}</td></tr>`,
    )
    .join('\n');
  const plots = d.comparisons.map((c) => `<figure class="trend">${trendPlot(c, d.trend)}</figure>`).join('\n');
  const table = comparisonTable(d.members);
  const comparison = table.rows.length
    ? `<table id="method-comparison"><tr><th>series</th><th>backbone</th>${table.metrics.map((m) => `<th>${esc(m)}</th>`).join('')}</tr>${table.rows
        .map(
          (r) =>
            `<tr><td>${esc(r.series)}</td><td>${esc(r.backbone)}</td>${table.metrics
              .map((m) => (r.cells[m] ? `<td>${num(r.cells[m]!.mean)} ± ${num(r.cells[m]!.std)} (n=${r.cells[m]!.n})</td>` : '<td>–</td>'))
              .join('')}</tr>`,
        )
        .join('')}</table>`
    : '<p id="method-comparison">no member finished</p>';
  const claims = claimCheck(d.members);
  const claimTable = claims.length
    ? `<table id="claim-check"><tr><th>method</th><th>dataset</th><th>claim</th><th>paper</th><th>paired difference over seeds</th><th>t</th><th>ahead</th><th>verdict</th></tr>${claims
        .map((c) => `<tr><td>${esc(c.method)}</td><td>${esc(c.dataset)}</td><td>${esc(`${c.metric} > ${c.over}`)}</td><td>${esc(c.paper)}</td><td>${c.paired.mean >= 0 ? '+' : ''}${num(c.paired.mean)} ± ${num(c.paired.std)}</td><td>${num(c.paired.t)}</td><td>${c.paired.positive}/${c.seeds.length}</td><td>${esc(c.verdict)}</td></tr>`)
        .join('')}</table>`
    : '<p id="claim-check">no claim to check: a method with claims and the method it claims over must both be in the suite</p>';
  const changes = d.configChanges.length
    ? `<table id="config-diff"><tr><th>member</th><th>field</th><th>baseline</th><th>now</th></tr>${d.configChanges
        .map((c) => `<tr><td>${esc(c.member)}</td><td><code>${esc(c.path)}</code></td><td>${esc(JSON.stringify(c.before) ?? '–')}</td><td>${esc(JSON.stringify(c.after) ?? '–')}</td></tr>`)
        .join('')}</table>`
    : `<p id="config-diff">${d.baseline ? 'no config change since the baseline' : 'no baseline to compare with'}</p>`;
  const warnings = d.warnings.length ? `<div id="warnings"><h2>Warnings</h2><ul>${d.warnings.map((w) => `<li>${esc(w)}</li>`).join('')}</ul></div>` : '';
  const baseline = d.baseline
    ? `baseline <code>${esc(d.baseline.key)}</code>, promoted ${esc(d.baseline.provenance.promotedAt)} from ${link(d.baseline.provenance.source)} (suite hash ${esc(d.baseline.suiteHash)}, code ${esc(describeCodeVersion(d.baseline.provenance.codeVersion))})`
    : 'no baseline promoted yet: every metric is inconclusive (promote one with <code>densepipe baseline promote RUN</code>)';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(d.suite)} regression: ${d.verdict}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.verdict{color:#fff;padding:1px 8px;border-radius:8px}figure.trend{display:inline-block;margin:6px}pre{background:#f6f6f6;padding:8px;overflow:auto}tr.failed td{background:#fde0e0}#warnings{border:2px solid #ff7f0e;padding:4px 12px}</style></head>
<body>
<h1>${esc(d.suite)}: ${badge(d.verdict)}</h1>
<p>suite run ${link(d.workflowId)}, started ${esc(d.startedAt)}; suite hash <code>${esc(d.suiteHash)}</code>; code ${esc(describeCodeVersion(d.codeVersion))}</p>
<p>${baseline}</p>
${warnings}
<h2>Methods and baselines (mean ± std over seeds)</h2>
${comparison}
<h2>Claim check (each paper's claim over its baseline, paired by seed)</h2>
${claimTable}
<h2>Metrics against the baseline</h2>
<table id="comparisons"><tr><th>series</th><th>metric</th><th>baseline mean ± std</th><th>now mean ± std</th><th>delta</th><th>band</th><th>verdict</th><th>why</th></tr>
${rows}
</table>
<h2>Trends</h2>
<div id="trends">${plots}</div>
<h2>Member runs</h2>
<table id="members"><tr><th>member</th><th>seed</th><th>run</th><th>status</th><th>config hash</th><th>error</th></tr>
${members}
</table>
<h2>Config changes since the baseline</h2>
${changes}
<h2>Code changes since the baseline</h2>
<pre id="code-diff">${esc(d.codeDiff)}</pre>
</body></html>
`;
}

export async function writeRegressionReport(store: ArtifactStore, prefix: string, d: RegressionReportData): Promise<{ htmlKey: string; jsonKey: string; url: string }> {
  const htmlKey = `${prefix}report.html`;
  const jsonKey = `${prefix}report.json`;
  await putJson(store, jsonKey, d);
  await store.put(htmlKey, renderRegressionHtml(d), { contentType: 'text/html; charset=utf-8' });
  return { htmlKey, jsonKey, url: store.url(htmlKey) };
}
