/**
 * ms per image (CPU time, one thread) of densepipe's proposal methods next to the references,
 * measured in one run on the same images (issue #5, item 7):
 *   selective search (fast) vs OpenCV ximgproc, felzenszwalb vs skimage, slic vs skimage.
 *
 * The references run through bench/proposals-reference.py with the Python named by
 * $DENSEPIPE_REFERENCE_PYTHON (default /tmp/venv-proposals/bin/python, made as in
 * test/fixtures/proposals/README.md). Without it, only our timings are printed, on synthetic
 * images, and the bench says so.
 *
 * Run:  npm run bench -- proposals-speed [repeats]      (the shared bench/_run.ts harness), or
 *       npx esbuild bench/proposals-speed.ts --bundle --platform=node --format=esm \
 *         --packages=external --outfile=dist/bench/proposals-speed.mjs && node dist/bench/proposals-speed.mjs [repeats]
 * CPU time (process.cpuUsage / time.process_time) is reported instead of wall time so that other
 * work on a shared machine distorts the comparison less.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './_run.js';
import { decodeImage, felzenszwalb, imageFrom, selectiveSearch, slic, type RgbImage } from '../stages/proposals/index.js';

interface Timing {
  image: string;
  method: 'selective-search-fast' | 'felzenszwalb' | 'slic';
  ms: number;
  count: number;
}

function cpuMs<T>(fn: () => T, repeats: number): { ms: number; out: T } {
  const times: number[] = [];
  let out!: T;
  fn(); // warm-up: lets V8 optimise before timing, as the Python side is compiled code
  for (let i = 0; i < repeats; i++) {
    const t0 = process.cpuUsage();
    out = fn();
    const t = process.cpuUsage(t0);
    times.push((t.user + t.system) / 1000);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)]!, out };
}

function syntheticImages(): Map<string, RgbImage> {
  const make = (w: number, h: number) =>
    imageFrom(w, h, (x, y) => {
      const inA = (x - w * 0.3) ** 2 + (y - h * 0.4) ** 2 < (h * 0.2) ** 2;
      const inB = x > w * 0.55 && x < w * 0.9 && y > h * 0.3 && y < h * 0.8;
      const noise = ((x * 73856093) ^ (y * 19349663)) & 15;
      if (inA) return [200 + noise, 60, 50];
      if (inB) return [40, 90 + noise, 200];
      return [90 + ((x >> 3) & 7) * 8, 120 + noise, 80];
    });
  return new Map([
    ['synthetic-500x375', make(500, 375)],
    ['synthetic-128x128', make(128, 128)],
  ]);
}

function measureOurs(images: Map<string, RgbImage>, repeats: number): Timing[] {
  const out: Timing[] = [];
  for (const [name, image] of images) {
    const ss = cpuMs(() => selectiveSearch(image, { mode: 'fast', rng: null }), repeats);
    out.push({ image: name, method: 'selective-search-fast', ms: ss.ms, count: ss.out.boxes.length });
    if (name.endsWith('128x128')) continue;
    const fh = cpuMs(() => felzenszwalb(image, { scale: 100, sigma: 0.8, minSize: 20 }), repeats);
    out.push({ image: name, method: 'felzenszwalb', ms: fh.ms, count: fh.out.count });
    const sp = cpuMs(() => slic(image, { nSegments: 100, startLabel: 0 }), repeats);
    out.push({ image: name, method: 'slic', ms: sp.ms, count: sp.out.count });
  }
  return out;
}

export async function main(args: string[] = []): Promise<BenchResult> {
  const repeats = Number(args[0] ?? 5);
  const python = process.env.DENSEPIPE_REFERENCE_PYTHON ?? '/tmp/venv-proposals/bin/python';
  const beside = fileURLToPath(new URL('./proposals-reference.py', import.meta.url));
  const script = existsSync(beside) ? beside : join(process.cwd(), 'bench/proposals-reference.py');
  const notes = [`median CPU ms per image over ${repeats} repeats, one thread (process.cpuUsage / time.process_time)`];
  let reference: { versions: Record<string, string>; results: Timing[] } | null = null;
  let images: Map<string, RgbImage>;
  if (existsSync(python)) {
    const dir = mkdtempSync(join(tmpdir(), 'proposals-bench-'));
    reference = JSON.parse(execFileSync(python, [script, dir, String(repeats)], { encoding: 'utf8', maxBuffer: 1 << 24 }));
    images = new Map();
    for (const file of readdirSync(dir).sort()) images.set(file.replace(/\.png$/, ''), await decodeImage(readFileSync(join(dir, file))));
    notes.push(`references: ${Object.entries(reference!.versions).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  } else {
    notes.push(`reference timings skipped: no Python at ${python} (set DENSEPIPE_REFERENCE_PYTHON; see test/fixtures/proposals/README.md); ours only, on synthetic images`);
    images = syntheticImages();
  }
  const rows = measureOurs(images, repeats).map((o) => {
    const r = reference?.results.find((x) => x.image === o.image && x.method === o.method);
    return {
      case: `${o.image} ${o.method}`,
      ours: { ms: o.ms, count: o.count },
      reference: r ? { ms: r.ms, count: r.count } : null,
      speedup: r ? r.ms / o.ms : null,
    };
  });
  return { name: 'proposals-speed', rows, notes };
}

if (process.argv[1] && /proposals-speed\.(ts|m?js)$/.test(process.argv[1])) {
  const result = await main(process.argv.slice(2));
  console.log(['case', 'ours ms', 'ref ms', 'ref/ours', 'ours count', 'ref count'].join('\t'));
  for (const row of result.rows) {
    console.log([row.case, row.ours.ms!.toFixed(0), row.reference?.ms?.toFixed(0) ?? '-', row.speedup?.toFixed(2) ?? '-', row.ours.count, row.reference?.count ?? '-'].join('\t'));
  }
  for (const note of result.notes ?? []) console.log(`note: ${note}`);
}
