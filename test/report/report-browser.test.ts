/**
 * The run report as a person sees it: written from a real dataset shard and evaluation outputs,
 * opened from disk in headless Chromium with the network cut off, screenshotted, and checked pixel
 * by pixel inside each gallery picture's bounding box.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRunConfig } from '../../core/config.js';
import { FileArtifactStore, putJson } from '../../core/store/index.js';
import { readShardFromStore } from '../../core/webdataset.js';
import { decodeSample, type DecodedSample } from '../../stages/data/sample.js';
import { writeRunReport, type ReportRequest } from '../../stages/report/index.js';
import { SQUARE_CLASSES, writeSquaresDataset } from '../downstream/squares-dataset.js';

const CHROMIUM = '/usr/bin/chromium';
const SIZE = 48;

let dir: string;
let store: FileArtifactStore;
let val: DecodedSample[];
let req: ReportRequest;

const ref = <T>(stage: string, hash: string, result: T) => ({ stage, hash, manifestKey: `stages/${stage}/${hash}/manifest.json`, result });
const b64 = (a: Uint8Array) => Buffer.from(a).toString('base64');

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dp-report-browser-'));
  store = new FileArtifactStore(dir);
  const dataset = await writeSquaresDataset(store, { size: SIZE, train: 4, val: 4, seed: 'report-browser' });
  val = [];
  for await (const raw of readShardFromStore(store, dataset.result.splits.val!.shardKeys[0]!)) val.push(await decodeSample(raw));
  // Three evaluations, written as the evaluation stage writes them: the method predicts the ground
  // truth exactly, random init predicts background everywhere, the supervised model predicts
  // background and detects every object.
  // Per-seed semseg mIoU (evaluation.repeats 3): the method is clearly above random init, and within noise of supervised.
  const seeds: Record<string, number[]> = { method: [0.3, 0.31, 0.29], random: [0.2, 0.22, 0.21], supervised: [0.29, 0.33, 0.25] };
  const evaluation = async (name: string, semseg: (s: DecodedSample) => Uint8Array, detection?: (s: DecodedSample) => unknown[]) => {
    const predictionsKey = `stages/evaluate/${name}/predictions.json`;
    const perClassKey = `stages/evaluate/${name}/per-class.json`;
    await putJson(store, predictionsKey, {
      semseg: val.map((s) => ({ key: s.key, labels: b64(semseg(s)), size: SIZE })),
      ...(detection ? { detection: val.map((s) => ({ key: s.key, detections: detection(s) })) } : {}),
    });
    await putJson(store, perClassKey, {
      classes: SQUARE_CLASSES,
      semseg: { mode: 'frozen', classes: ['background', ...SQUARE_CLASSES], IoU: name === 'method' ? [1, 1, 1, 1] : [0.8, 0, 0, 0] },
      linear: { accuracy: [0.5, 0.25, null], support: [2, 2, 0] },
    });
    const mIoU = seeds[name]!;
    // kNN on a pretrained backbone does not depend on the evaluation seed: no spread for the method or supervised.
    const knn = name === 'random' ? [0.2, 0.25, 0.3] : [0.25, 0.25, 0.25];
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    return ref('evaluate', name, { metrics: { 'semseg.mIoU': mean(mIoU), 'knn.top1': mean(knn) }, predictionsKey, perClassKey, seedMetrics: { seeds: [0, 1, 2], metrics: { 'semseg.mIoU': mIoU, 'knn.top1': knn } } });
  };
  const gtBoxes = (s: DecodedSample) =>
    [...s.labels].map((label, i) => {
      const [x0, y0, x1, y1] = s.boxes.subarray(i * 4, i * 4 + 4);
      return { bbox: [x0, y0, x1! - x0!, y1! - y0!], category: SQUARE_CLASSES[label], score: 0.9 };
    });
  await putJson(store, 'curves/method.json', { points: [1, 2, 3, 4, 5].map((step) => ({ step, loss: 7 - step * 0.5 })) });
  await putJson(store, 'curves/supervised.json', { points: [1, 2, 3, 4, 5].map((step) => ({ step, loss: 0.7 / step })) });
  const config = parseRunConfig({ name: 'browser', pretrain: { method: 'densecl' }, proposals: { preset: 'updetr-random' }, evaluation: { imageSize: SIZE } });
  req = {
    run: { workflowId: 'browser-1', runId: 'r', startedAt: '2026-11-22T00:00:00Z', config, configHash: 'h' },
    stages: [],
    refs: {
      dataset: dataset,
      proposals: [],
      pretrain: ref('pretrain', 'p', { finalLoss: 4.5, steps: 5, lossCurveKey: 'curves/method.json' }),
      supervisedPretrain: ref('pretrain-supervised', 's', { finalLoss: 0.14, steps: 5, lossCurveKey: 'curves/supervised.json' }),
      evaluation: await evaluation('method', (s) => s.semantic!),
      baseline: await evaluation('random', () => new Uint8Array(SIZE * SIZE)),
      supervised: await evaluation('supervised', () => new Uint8Array(SIZE * SIZE), gtBoxes),
    },
  };
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('run report pictures', () => {
  it('is self-contained (no network fetches) and holds a gallery row per image with every panel', async () => {
    const written = await writeRunReport(store, req);
    const html = Buffer.from(await store.get(written.htmlKey)).toString();
    expect(html).not.toMatch(/<(script|link)\b/i);
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
    const hrefs = [...html.matchAll(/<image href="([^"]{0,30})/g)].map((m) => m[1]!);
    expect(hrefs.length).toBeGreaterThan(0);
    for (const h of hrefs) expect(h.startsWith('data:image/png;base64,')).toBe(true);
    expect((html.match(/class="gallery-row"/g) ?? []).length).toBe(4);
    // truth, masks, proposals, and one segmentation per evaluated model
    expect((html.match(/class="gallery-panel"/g) ?? []).length).toBe(4 * 6);
    expect(html).toContain('id="per-class-semseg"');
    expect(html).toContain('id="per-class-linear"');
    // The seed noise: the method's gain over random init leaves the band, its difference from supervised does not.
    expect(html).toMatch(/<td>0\.3000 ± 0\.0100<\/td><td>0\.2100 ± 0\.0100<\/td><td>0\.2900 ± 0\.0400<\/td><td>0\.0900 \(beyond noise\)<\/td><td>0\.0100 \(within noise\)<\/td>/);
    expect(html).toMatch(/<td>semseg\.mIoU<\/td><td>random init<\/td><td>\+0\.0900<\/td><td>above, beyond noise, band ±0\.0200<\/td>/);
    expect(html).toMatch(/<td>semseg\.mIoU<\/td><td>supervised<\/td><td>\+0\.0100<\/td><td>within noise, band ±0\.0583<\/td>/);
    expect(html).toContain('id="noise"');
    // No spread on either side is no noise estimate: not judged rather than "beyond noise" on a zero band.
    expect(html).toMatch(/<td>knn\.top1<\/td><td>supervised<\/td><td>\+0\.0000<\/td><td>not judged: neither side varies with the evaluation seed/);
    expect(html).toMatch(/<td>knn\.top1<\/td><td>random init<\/td><td>\+0\.0000<\/td><td>within noise, band ±0\.0707<\/td>/);
    const md = Buffer.from(await store.get(written.markdownKey)).toString();
    expect(md).toContain('| semseg.mIoU | random init | 0.0900 | above, beyond noise, band ±0.0200 |');
    expect(md).toContain('| background | 1.000 | 0.800 | 0.800 |');
  });

  it.skipIf(!existsSync(CHROMIUM))('draws every picture in headless Chromium: ground truth, proposals, predictions, loss curves', async () => {
    const { chromium } = await import('playwright-core');
    const written = await writeRunReport(store, req);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    try {
      const context = await browser.newContext({ viewport: { width: 1100, height: 800 }, deviceScaleFactor: 1 });
      const remote: string[] = [];
      await context.route(/^(?!file:|data:)/, (route) => {
        remote.push(route.request().url());
        return route.abort();
      });
      const page = await context.newPage();
      await page.goto(`file://${join(dir, written.htmlKey)}`);
      const shot = await page.screenshot({ fullPage: true });
      writeFileSync(join(dir, 'report.png'), shot);
      expect(remote, 'the report fetched nothing from the network').toEqual([]);
      const { data, info } = await sharp(shot).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      const panels = await page.$$eval('#gallery svg.gallery-panel', (svgs) =>
        svgs.map((svg) => {
          const r = svg.getBoundingClientRect();
          return { kind: svg.getAttribute('data-kind')!, title: svg.getAttribute('aria-label')!, x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height };
        }),
      );
      expect(panels.length).toBe(24);
      /** Pixels of the full-page screenshot inside a panel's box (1 px in from each edge). */
      const crop = (p: (typeof panels)[number]) => {
        const x0 = Math.round(p.x) + 1;
        const y0 = Math.round(p.y) + 1;
        const w = Math.round(p.w) - 2;
        const h = Math.round(p.h) - 2;
        const out = new Uint8Array(w * h * 3);
        for (let y = 0; y < h; y++) out.set(data.subarray(((y0 + y) * info.width + x0) * 3, ((y0 + y) * info.width + x0 + w) * 3), y * w * 3);
        return out;
      };
      const meanAbsDiff = (a: Uint8Array, b: Uint8Array) => a.reduce((s, v, i) => s + Math.abs(v - b[i]!), 0) / a.length;
      const std = (a: Uint8Array) => {
        const m = a.reduce((s, v) => s + v, 0) / a.length;
        return Math.sqrt(a.reduce((s, v) => s + (v - m) ** 2, 0) / a.length);
      };
      const near = (px: Uint8Array, rgb: [number, number, number], tol = 40) => {
        let n = 0;
        for (let i = 0; i < px.length; i += 3) if (Math.abs(px[i]! - rgb[0]) + Math.abs(px[i + 1]! - rgb[1]) + Math.abs(px[i + 2]! - rgb[2]) < tol) n++;
        return n;
      };
      for (let row = 0; row < 4; row++) {
        const p = panels.slice(row * 6, row * 6 + 6);
        expect(p.map((x) => x.kind)).toEqual(['truth', 'masks', 'proposals', 'semseg', 'semseg', 'semseg']);
        const px = p.map(crop);
        for (const [i, pixels] of px.entries()) {
          expect(p[i]!.w, p[i]!.title).toBeGreaterThan(100);
          // Not blank: the image (grey noise and coloured squares) is there.
          expect(std(pixels), `${p[i]!.title}: pixel spread`).toBeGreaterThan(10);
          expect(near(pixels, [238, 238, 238], 6) / (pixels.length / 3), `${p[i]!.title}: empty background`).toBeLessThan(0.05);
        }
        const [truth, masks, proposals, method, random, supervised] = px as [Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array];
        // The method predicted the ground truth: its panel is the ground-truth mask panel.
        expect(meanAbsDiff(method, masks)).toBeLessThan(1);
        // Background everywhere: dimmed image, squares not tinted, so it differs from the masks panel.
        expect(meanAbsDiff(random, masks)).toBeGreaterThan(5);
        // The overlays are drawn: the masks panel is not the plain image.
        expect(meanAbsDiff(masks, truth)).toBeGreaterThan(5);
        // Proposal boxes in white; none in the ground-truth panel.
        expect(near(proposals, [255, 255, 255])).toBeGreaterThan(50);
        expect(near(truth, [255, 255, 255])).toBe(0);
        // Detections (dashed, in class colours) on the supervised panel only.
        expect(meanAbsDiff(supervised, random)).toBeGreaterThan(0.5);
      }
      const curves = await page.$$eval('svg.plot path.series', (paths) => paths.map((p) => (p as SVGPathElement).getTotalLength()));
      expect(curves.length).toBe(2); // the method's loss and the supervised baseline's
      // The noise band plot: a dot per seed and a band per model, drawn with a size.
      const strip = await page.$$eval('svg.strip', (svgs) =>
        svgs.map((svg) => ({
          dots: Array.from(svg.querySelectorAll('circle.seed')).map((c) => c.getBoundingClientRect().width),
          bands: Array.from(svg.querySelectorAll('rect.band')).map((r) => r.getBoundingClientRect().width),
        })),
      );
      expect(strip.length).toBe(2); // semseg.mIoU and knn.top1
      for (const plot of strip) {
        expect(plot.dots.length).toBe(9);
        for (const w of plot.dots) expect(w).toBeGreaterThan(5);
        expect(plot.bands.length).toBe(3);
      }
      for (const w of strip[0]!.bands) expect(w).toBeGreaterThan(5);
      for (const length of curves) expect(length).toBeGreaterThan(50);
      expect(await page.locator('#per-class-semseg tbody tr').count()).toBe(1 + SQUARE_CLASSES.length);
    } finally {
      await browser.close();
    }
  });
});
