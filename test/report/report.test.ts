import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileArtifactStore, putJson } from '../../core/store/index.js';
import { parseRunConfig } from '../../core/config.js';
import { writeRunReport, type ReportRequest } from '../../stages/report/index.js';
import { splitMetrics } from '../../core/metrics.js';

const ref = <T>(stage: string, result: T) => ({ stage, hash: `${stage}h`, manifestKey: `stages/${stage}/h/manifest.json`, result });

describe('run report', () => {
  it('writes HTML, Markdown and JSON with metrics against the baseline, stage timings, the loss curve and the config', async () => {
    const store = new FileArtifactStore(mkdtempSync(join(tmpdir(), 'dp-report-')));
    await putJson(store, 'curve.json', { points: [{ step: 1, loss: 5 }, { step: 2, loss: 4 }, { step: 3, loss: 3.5 }] });
    const config = parseRunConfig({ name: 'r1', pretrain: { method: 'densecl' } });
    const req: ReportRequest = {
      run: { workflowId: 'r1-x', runId: 'abc', startedAt: '2026-11-22T00:00:00Z', config, configHash: 'cafe', resumedFrom: 'r1-old' },
      stages: [
        { step: 'shard', status: 'cached', parts: 1, partsDone: 1, cachedParts: 1, computeSeconds: 0 },
        { step: 'pretrain', status: 'done', parts: 1, partsDone: 1, cachedParts: 0, computeSeconds: 12.5 },
      ],
      refs: {
        dataset: ref('shard', {}),
        proposals: [],
        pretrain: ref('pretrain', { finalLoss: 3.5, steps: 3, lossCurveKey: 'curve.json', imagesPerSecond: 50 }),
        evaluation: ref('evaluate', { metrics: { 'knn.top1': 0.75, 'features.imagesPerSecond': 100 } }),
        baseline: ref('evaluate', { metrics: { 'knn.top1': 0.5, 'features.imagesPerSecond': 120 } }),
      },
    };
    const written = await writeRunReport(store, req);
    expect(written.htmlKey).toBe('runs/r1-x/report.html');
    const html = Buffer.from(await store.get(written.htmlKey)).toString();
    expect(html).toMatch(/<tr><td>knn\.top1<\/td><td>0\.7500<\/td><td>0\.5000<\/td><td>0\.2500<\/td><\/tr>/);
    // Throughput is not a quality metric: it sits in its own table.
    expect(html.indexOf('features.imagesPerSecond')).toBeGreaterThan(html.indexOf('id="diagnostics"'));
    expect(html).toMatch(/<path class="series" d="M[\d.]+,[\d.]+L[\d.]+,[\d.]+L/);
    expect(html).toContain('resumed from <code>r1-old</code>');
    expect(html).toContain('method: densecl');
    const md = Buffer.from(await store.get(written.markdownKey)).toString();
    expect(md).toContain('| pretrain | done | 1/1 | 0 | 12.50 |');
    const json = JSON.parse(Buffer.from(await store.get(written.jsonKey)).toString());
    expect(json.totalComputeSeconds).toBe(12.5);
    expect(json.metrics['knn.top1']).toBe(0.75);
  });

  it('separates quality metrics from throughput and bookkeeping', () => {
    expect(splitMetrics({ 'semseg.mIoU': 1, 'det.AP50': 1, 'knn.imagesPerSecond': 1, 'linear.secondsPerEpoch': 1, 'eval.trainSamples': 1, 'linear.finalLoss': 1 })).toEqual({
      quality: ['det.AP50', 'semseg.mIoU'],
      diagnostic: ['eval.trainSamples', 'knn.imagesPerSecond', 'linear.finalLoss', 'linear.secondsPerEpoch'],
    });
  });
});
