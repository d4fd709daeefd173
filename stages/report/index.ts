import { stringify } from 'yaml';
import type { ArtifactStore } from '../../core/store/index.js';
import { getJson, joinKey } from '../../core/store/index.js';
import type { RunConfig } from '../../core/config.js';
import { keyUris, type StageRef } from '../../core/stage.js';
import type { StageProgress } from '../../workflows/types.js';
import { escapeHtml as esc, linePlot } from './svg.js';
import { splitMetrics } from '../../core/metrics.js';
import { buildGallery, galleryHtml, GALLERY_CSS, type Gallery } from './gallery.js';
import { perClassHtml, perClassMarkdown, perClassTables } from './per-class.js';
import { noiseComparisons, noiseHtml, noiseMarkdown, noiseShort, seedStd } from './noise.js';

export interface ReportRequest {
  run: {
    workflowId: string;
    runId: string;
    startedAt: string;
    config: RunConfig;
    configHash: string;
    resumedFrom?: string;
  };
  stages: StageProgress[];
  refs: {
    dataset: StageRef;
    proposals: StageRef[];
    pretrain: StageRef<{ backboneKey?: string; finalLoss?: number; steps?: number; lossCurveKey?: string; imagesPerSecond?: number; resumedFromStep?: number }>;
    evaluation: StageRef<EvaluationRefResult>;
    baseline: StageRef<EvaluationRefResult>;
    /** The supervised baseline's evaluation, when the run trained one. */
    supervised?: StageRef<EvaluationRefResult>;
    /** The supervised baseline's training (its loss curve is drawn beside the method's). */
    supervisedPretrain?: StageRef<{ finalLoss?: number; steps?: number; lossCurveKey?: string }>;
  };
}

/** What the report reads of an evaluation stage's result (stages/downstream EvaluationResult). */
export interface EvaluationRefResult {
  metrics: Record<string, number>;
  perClassKey?: string;
  predictionsKey?: string;
  /** With evaluation.repeats > 1: each seed's value of every quality metric (`metrics` holds the means). */
  seedMetrics?: { seeds: number[]; metrics: Record<string, number[]> };
}

export interface WrittenReport {
  htmlKey: string;
  markdownKey: string;
  jsonKey: string;
  url: string;
}

interface LossPoint {
  step: number;
  loss: number;
}

/** Accept either [{step, loss}] or {step: [...], loss: [...]} from the pretraining stage. */
async function readLossCurve(store: ArtifactStore, key: string | undefined): Promise<LossPoint[]> {
  if (!key) return [];
  try {
    const raw = await getJson<unknown>(store, key);
    if (Array.isArray(raw)) return raw.filter((p) => p && typeof p.step === 'number' && typeof p.loss === 'number') as LossPoint[];
    const obj = raw as { step?: number[]; steps?: number[]; loss?: number[]; points?: LossPoint[] };
    if (obj.points) return obj.points;
    const steps = obj.step ?? obj.steps ?? [];
    return (obj.loss ?? []).map((loss, i) => ({ step: steps[i] ?? i, loss }));
  } catch {
    return [];
  }
}

/** The method's loss curve and, beside it on its own y axis, the supervised baseline's (a different objective on another scale). */
function lossPlot(method: string, curve: LossPoint[], supervised: LossPoint[]): string {
  const points = (c: LossPoint[]) => c.map((p) => [p.step, p.loss] as [number, number]);
  if (supervised.length === 0) return linePlot([{ label: `${method} loss`, points: points(curve) }], { title: 'Pretraining loss', xLabel: 'step', yLabel: 'loss' });
  return `<div class="loss-plots">${linePlot([{ label: `${method} loss`, points: points(curve) }], { title: `Pretraining loss: ${method}`, xLabel: 'step', yLabel: 'loss', width: 460 })}${linePlot(
    [{ label: 'supervised loss', points: points(supervised), color: '#d62728' }],
    { title: 'Supervised baseline loss (multi-label BCE)', xLabel: 'step', yLabel: 'loss', width: 460 },
  )}</div>`;
}

/** The gallery, or an empty one with the reason when the images cannot be read (the report still renders). */
async function galleryFor(store: ArtifactStore, req: ReportRequest, evaluated: Array<{ label: string; ref: EvaluationRefResult }>): Promise<Gallery> {
  const { config } = req.run;
  const dataset = req.refs.dataset.result as { splits?: Record<string, { shardKeys: string[]; samples: number }>; classes?: string[] };
  if (!dataset?.splits) return { rows: [], classes: [], notes: ['the dataset reference has no splits'] };
  try {
    return await buildGallery(store, {
      dataset: { splits: dataset.splits, classes: dataset.classes ?? [] },
      evalSplit: config.evaluation.evalSplit,
      evalImageSize: config.evaluation.imageSize,
      proposals: config.proposals,
      models: evaluated.map((e) => ({ label: e.label, predictionsKey: e.ref.predictionsKey })),
    });
  } catch (err) {
    return { rows: [], classes: dataset.classes ?? [], notes: [`the gallery could not be drawn: ${(err as Error).message}`] };
  }
}

function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '–';
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4);
}

export function reportPrefix(workflowId: string): string {
  return joinKey('runs', workflowId.replace(/[^A-Za-z0-9_-]/g, '_'));
}

/**
 * The run report: config, stage timings (and which stages were reused), pretraining curve, and
 * the metrics of the pretrained backbone next to a random-init baseline on the same evaluation.
 * Written per run (timings differ between runs), in HTML, Markdown and JSON.
 */
export async function writeRunReport(store: ArtifactStore, req: ReportRequest): Promise<WrittenReport> {
  const prefix = reportPrefix(req.run.workflowId);
  const { config } = req.run;
  const metrics = req.refs.evaluation.result.metrics ?? {};
  const baseline = req.refs.baseline.result.metrics ?? {};
  const supervised = req.refs.supervised?.result.metrics;
  const { quality: metricNames, diagnostic: diagnosticNames } = splitMetrics({ ...baseline, ...(supervised ?? {}), ...metrics });
  const method = config.pretrain.method;
  // Columns: the method, random init, supervised (when trained), and the method's gain over each.
  const columns: Array<{ label: string; values: Record<string, number> }> = [
    { label: method, values: metrics },
    { label: 'random init', values: baseline },
    ...(supervised ? [{ label: 'supervised', values: supervised }] : []),
  ];
  const deltas = columns.slice(1).map((c) => ({ label: `Δ vs ${c.label}`, values: c.values }));
  const curve = await readLossCurve(store, req.refs.pretrain.result.lossCurveKey);
  const supervisedCurve = await readLossCurve(store, req.refs.supervisedPretrain?.result.lossCurveKey);
  const evaluated = [
    { label: method, ref: req.refs.evaluation.result },
    { label: 'random init', ref: req.refs.baseline.result },
    ...(req.refs.supervised ? [{ label: 'supervised', ref: req.refs.supervised.result }] : []),
  ];
  const tables = await perClassTables(store, evaluated.map((e) => ({ label: e.label, perClassKey: e.ref.perClassKey })));
  const gallery = await galleryFor(store, req, evaluated);
  const noise = noiseComparisons(metricNames, evaluated);
  const totalCompute = req.stages.reduce((a, s) => a + s.computeSeconds, 0);
  const title = `densepipe report: ${config.name} (${method})`;

  const json = {
    schema: 'densepipe.run-report/v1',
    run: { ...req.run, config: undefined },
    config,
    stages: req.stages,
    totalComputeSeconds: totalCompute,
    metrics,
    baselineMetrics: baseline,
    supervisedMetrics: supervised,
    /** Per metric, the method against each other model over the evaluation seeds (when evaluation.repeats > 1). */
    noise: Object.fromEntries([...noise].map(([m, row]) => [m, Object.fromEntries([...row].map(([vs, c]) => [vs, { verdict: c.verdict, reason: c.reason, delta: c.delta, band: c.bandHalfWidth }]))])),
    seedMetrics: Object.fromEntries(evaluated.filter((e) => e.ref.seedMetrics).map((e) => [e.label, e.ref.seedMetrics])),
    pretrain: req.refs.pretrain.result,
    refs: Object.fromEntries(
      Object.entries(req.refs).map(([k, v]) => [k, Array.isArray(v) ? v.map((r) => r.manifestKey) : (v as StageRef).manifestKey]),
    ),
    /** The same references as full URIs (`s3://…` or `file://…`), and the pretraining outputs' files. */
    uris: {
      store: store.uri,
      refs: Object.fromEntries(Object.entries(req.refs).map(([k, v]) => [k, Array.isArray(v) ? v.map((r) => store.url(r.manifestKey)) : store.url((v as StageRef).manifestKey)])),
      pretrain: keyUris(store, req.refs.pretrain.result),
    },
  };

  const stageRows = req.stages.map(
    (s) => `| ${s.step} | ${s.status} | ${s.partsDone}/${s.parts} | ${s.cachedParts} | ${s.computeSeconds.toFixed(2)} |`,
  );
  // With repeated evaluations: mean ± seed std in the model columns, and whether each Δ leaves the noise band.
  const metricCells = (m: string) => [
    ...columns.map((c, i) => {
      const s = seedStd(evaluated[i]!.ref, m);
      return s ? `${fmt(c.values[m])} ± ${s.std.toFixed(4)}` : fmt(c.values[m]);
    }),
    ...deltas.map((d) => {
      const c = noise.get(m)?.get(d.label.replace(/^Δ vs /, ''));
      const delta = fmt((metrics[m] ?? NaN) - (d.values[m] ?? NaN));
      return c ? `${delta} (${noiseShort(c)})` : delta;
    }),
  ];
  const metricHeader = ['metric', ...columns.map((c) => c.label), ...deltas.map((d) => d.label)];
  const metricRows = metricNames.map((m) => `| ${m} | ${metricCells(m).join(' | ')} |`);
  const diagnosticRows = diagnosticNames.map((m) => `| ${m} | ${columns.map((c) => fmt(c.values[m])).join(' | ')} |`);
  const markdown = [
    `# ${title}`,
    '',
    `- workflow: \`${req.run.workflowId}\` (run \`${req.run.runId}\`), started ${req.run.startedAt}`,
    `- config hash: \`${req.run.configHash}\`${req.run.resumedFrom ? `, resumed from \`${req.run.resumedFrom}\`` : ''}`,
    `- pretraining: ${req.refs.pretrain.result.steps ?? '?'} steps, final loss ${fmt(req.refs.pretrain.result.finalLoss)}, ${fmt(req.refs.pretrain.result.imagesPerSecond)} images/s`,
    '',
    '## Metrics',
    '',
    `| ${metricHeader.join(' | ')} |`,
    `|${metricHeader.map(() => '---').join('|')}|`,
    ...metricRows,
    '',
    ...noiseMarkdown(metricNames, evaluated, noise),
    '### Throughput and bookkeeping',
    '',
    `| metric | ${columns.map((c) => c.label).join(' | ')} |`,
    `|---|${columns.map(() => '---').join('|')}|`,
    ...diagnosticRows,
    '',
    '## Per class',
    '',
    ...perClassMarkdown(tables),
    `The gallery (${gallery.rows.length} evaluation images with ground truth, proposals and predictions) is in report.html.`,
    '',
    '## Stages',
    '',
    '| stage | status | parts | reused | compute s |',
    '|---|---|---|---|---|',
    ...stageRows,
    '',
    `Total stage compute: ${totalCompute.toFixed(2)} s.`,
    '',
    '## Config',
    '',
    '```yaml',
    stringify(config).trimEnd(),
    '```',
    '',
  ].join('\n');

  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:960px;margin:24px auto;padding:0 16px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}.cached{color:#2a7}.failed{color:#c22}
pre{background:#f7f7f7;padding:12px;overflow:auto}code{background:#f3f3f3;padding:1px 4px}
${GALLERY_CSS}
.loss-plots{display:flex;flex-wrap:wrap;gap:8px}#noise td:last-child{text-align:left}
</style></head><body>
<h1>${esc(title)}</h1>
<p>Workflow <code>${esc(req.run.workflowId)}</code> (run <code>${esc(req.run.runId)}</code>), started ${esc(req.run.startedAt)}; config hash <code>${esc(req.run.configHash)}</code>${req.run.resumedFrom ? `; resumed from <code>${esc(req.run.resumedFrom)}</code>` : ''}.</p>
<h2>Metrics</h2>
<table id="metrics"><thead><tr>${metricHeader.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>
${metricNames.map((m) => `<tr><td>${esc(m)}</td>${metricCells(m).map((v) => `<td>${v}</td>`).join('')}</tr>`).join('\n')}
</tbody></table>
${noiseHtml(metricNames, evaluated, noise)}
<details><summary>Throughput and bookkeeping</summary>
<table id="diagnostics"><thead><tr><th>metric</th>${columns.map((c) => `<th>${esc(c.label)}</th>`).join('')}</tr></thead><tbody>
${diagnosticNames.map((m) => `<tr><td>${esc(m)}</td>${columns.map((c) => `<td>${fmt(c.values[m])}</td>`).join('')}</tr>`).join('\n')}
</tbody></table></details>
<h2>Gallery</h2>
${galleryHtml(gallery)}
<h2>Per class</h2>
${perClassHtml(tables)}
<h2>Pretraining</h2>
<p>${req.refs.pretrain.result.steps ?? '?'} steps, final loss ${fmt(req.refs.pretrain.result.finalLoss)}, ${fmt(req.refs.pretrain.result.imagesPerSecond)} images/s${req.refs.pretrain.result.resumedFromStep ? `, resumed from step ${req.refs.pretrain.result.resumedFromStep}` : ''}.${
    supervisedCurve.length
      ? ` Supervised baseline: ${req.refs.supervisedPretrain?.result.steps ?? '?'} steps, final loss ${fmt(req.refs.supervisedPretrain?.result.finalLoss)}. The two losses are different objectives on different scales, so each has its own axis.`
      : ''
  }</p>
${lossPlot(method, curve, supervisedCurve)}
<h2>Stages</h2>
<table id="stages"><thead><tr><th>stage</th><th>status</th><th>parts</th><th>reused</th><th>compute s</th></tr></thead><tbody>
${req.stages.map((s) => `<tr><td>${esc(s.step)}</td><td class="${s.status}">${s.status}</td><td>${s.partsDone}/${s.parts}</td><td>${s.cachedParts}</td><td>${s.computeSeconds.toFixed(2)}</td></tr>`).join('\n')}
</tbody></table>
<p>Total stage compute ${totalCompute.toFixed(2)} s.</p>
<h2>Config</h2>
<pre>${esc(stringify(config))}</pre>
</body></html>
`;
  const htmlKey = joinKey(prefix, 'report.html');
  const markdownKey = joinKey(prefix, 'report.md');
  const jsonKey = joinKey(prefix, 'report.json');
  await store.put(jsonKey, JSON.stringify(json, null, 2), { contentType: 'application/json' });
  await store.put(markdownKey, markdown, { contentType: 'text/markdown; charset=utf-8' });
  await store.put(htmlKey, html, { contentType: 'text/html; charset=utf-8' });
  return { htmlKey, markdownKey, jsonKey, url: store.url(htmlKey) };
}
