import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileArtifactStore } from '../../core/store/index.js';
import { compareMetric } from '../../stages/regression/verdict.js';
import { writeRegressionReport, type RegressionReportData } from '../../stages/regression/report.js';
import { postWebhook } from '../../stages/regression/webhook.js';

const CHROMIUM = '/usr/bin/chromium';
const band = { k: 2, absoluteFloor: 0.02, minSeeds: 2 };

function reportData(): RegressionReportData {
  const comparisons = [
    compareMetric({ series: 'densecl@synthetic-tiny', metric: 'knn.top1', values: [0.3, 0.31] }, { series: '', metric: '', values: [0.6, 0.62] }, band),
    compareMetric({ series: 'mocov2@synthetic-tiny', metric: 'knn.top1', values: [0.5, 0.51] }, { series: '', metric: '', values: [0.5, 0.52] }, band),
    compareMetric({ series: 'mocov2@synthetic-tiny', metric: 'linear.top1', values: [0.4, 0.42] }, { series: '', metric: '', values: [0.41, 0.43] }, band),
  ];
  const trend = [0, 1, 2, 3].map((i) => ({
    workflowId: `nightly-${i}`,
    startedAt: `2026-01-0${i + 1}T02:30:00.000Z`,
    comparisons: comparisons.map((c) => ({ ...c, currentMean: c.currentMean! + 0.01 * i })),
  }));
  return {
    suite: 'nightly-tiny',
    suiteHash: 'abc123',
    workflowId: 'nightly-3',
    startedAt: trend[3]!.startedAt,
    verdict: 'regressed',
    codeVersion: { packageVersion: '0.1.0', gitCommit: 'b'.repeat(40), dirty: false },
    ui: { url: 'http://localhost:8233', namespace: 'default' },
    members: [
      { id: 'densecl-synthetic-tiny-s0', series: 'densecl@synthetic-tiny', method: 'densecl', dataset: 'synthetic-tiny', seed: 0, configHash: 'c0', workflowId: 'nightly-3-densecl-s0', status: 'completed', metrics: { 'knn.top1': 0.3 } },
      { id: 'densecl-synthetic-tiny-s9', series: 'densecl@synthetic-tiny', method: 'densecl', dataset: 'synthetic-tiny', seed: 9, configHash: 'c9', workflowId: 'nightly-3-densecl-s9', status: 'failed', error: 'BadInputError: <boom>' },
    ],
    comparisons,
    baseline: { key: 'regression/baselines/nightly-tiny.json', suiteHash: 'abc123', provenance: { source: 'nightly-0', sourceKind: 'suite', promotedAt: '2026-01-01T03:00:00.000Z', codeVersion: { packageVersion: '0.1.0', gitCommit: 'a'.repeat(40), dirty: false } } },
    configChanges: [{ member: 'densecl-synthetic-tiny-s0', path: 'pretrain.optimizer.baseLr', before: 0.03, after: 30 }],
    codeDiff: 'abc1234 a commit\n 1 file changed',
    trend,
    warnings: ['webhook not delivered after 2 attempt(s): no answer'],
  };
}

describe('regression report', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'densepipe-regression-report-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes HTML and JSON to the store with deltas, bands, links and what changed', async () => {
    const store = new FileArtifactStore(dir);
    const w = await writeRegressionReport(store, 'regression/suites/nightly-tiny/runs/nightly-3/', reportData());
    const html = Buffer.from(await store.get(w.htmlKey)).toString();
    expect(html).toContain('http://localhost:8233/namespaces/default/workflows/nightly-3-densecl-s9');
    expect(html).toContain('pretrain.optimizer.baseLr');
    expect(html).toContain('&lt;boom&gt;'); // escaped, not markup
    expect(html).toMatch(/class="verdict regressed"/);
    expect(html).toContain('webhook not delivered');
    const json = JSON.parse(Buffer.from(await store.get(w.jsonKey)).toString()) as RegressionReportData;
    expect(json.comparisons[0]!.verdict).toBe('regressed');
  });

  it.skipIf(!existsSync(CHROMIUM))('renders in headless Chromium with one drawn trend plot per compared metric', async () => {
    const { chromium } = await import('playwright-core');
    const store = new FileArtifactStore(dir);
    const data = reportData();
    const w = await writeRegressionReport(store, 'browser/', data);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`file://${join(dir, w.htmlKey)}`);
      const drawn = await page.$$eval('#trends svg.plot', (svgs) =>
        svgs.map((svg) => {
          const paths = Array.from(svg.querySelectorAll("path.series")) as SVGPathElement[];
          const box = svg.getBoundingClientRect();
          return { title: svg.getAttribute('aria-label'), width: box.width, paths: paths.map((p) => ({ d: p.getAttribute('d') ?? '', length: p.getTotalLength() })) };
        }),
      );
      expect(drawn.map((d) => d.title)).toEqual(data.comparisons.map((c) => `${c.series} ${c.metric}`));
      for (const plot of drawn) {
        expect(plot.width).toBeGreaterThan(100);
        expect(plot.paths.length).toBe(3); // nightly mean and the two band edges
        for (const p of plot.paths) {
          expect(p.d).toMatch(/^M[\d.]+,[\d.]+L/);
          expect(p.length).toBeGreaterThan(10);
        }
      }
      expect(await page.locator('#comparisons tr').count()).toBe(1 + data.comparisons.length);
      expect(await page.title()).toBe('nightly-tiny regression: regressed');
    } finally {
      await browser.close();
    }
  });
});

describe('webhook delivery', () => {
  let server: Server;
  let port: number;
  const received: unknown[] = [];
  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (req.url === '/ok') {
          received.push(JSON.parse(body));
          res.writeHead(204).end();
        } else if (req.url === '/error') {
          res.writeHead(503).end();
        }
        // '/silent' never answers.
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('posts the JSON verdict', async () => {
    expect(await postWebhook(`http://127.0.0.1:${port}/ok`, { verdict: 'passed' }, 5)).toEqual({ status: 204 });
    expect(received).toEqual([{ verdict: 'passed' }]);
  });

  it('fails loudly on an error status and on a webhook that never answers', async () => {
    const err = (await postWebhook(`http://127.0.0.1:${port}/error`, {}, 5, '$HOOK').catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/webhook \$HOOK \(http:\/\/127\.0\.0\.1:\d+\/…\): HTTP 503/);
    // The URL is a credential: its path never appears in the message.
    expect(err.message).not.toContain('/error');
    const t0 = Date.now();
    await expect(postWebhook(`http://127.0.0.1:${port}/silent`, {}, 0.5)).rejects.toThrow(/no answer within 0\.5 s/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});
