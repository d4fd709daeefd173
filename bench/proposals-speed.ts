/**
 * ms per image (CPU time, one thread) of densepipe's proposal methods next to the references,
 * measured in one run on the same images (issue #5, item 7; SLIC cold and warm: issue #18):
 *   selective search (fast) vs OpenCV ximgproc, felzenszwalb vs skimage, slic vs skimage.
 *
 * The references run through bench/proposals-reference.py. Its Python is the first of:
 * $DENSEPIPE_REFERENCE_PYTHON; /usr/bin/python3 with Debian's python3-skimage (0.19.3) and
 * python3-opencv (4.6, contrib included), the versions issue #18 measured against; the venv of
 * test/fixtures/proposals/README.md (/tmp/venv-proposals); else a venv this bench makes under
 * ~/.cache/densepipe (pip install numpy scikit-image opencv-contrib-python-headless from PyPI:
 * current versions, recorded in the result). Where none works, only our timings are printed, on
 * synthetic images, and the bench says so.
 *
 * SLIC is reported warm and cold. Warm: the median of `repeats` calls in this process after a
 * warm-up call, like every other row. Cold: the first call in a fresh Node process (what a
 * per-shard proposal worker pays), measured in a child process running bench/_slic-cold.ts
 * bundled with esbuild, as the worker pool bundles its worker; that child also reports the time
 * to load slic.ts and its own warm median, and the label map's hash, which must equal
 * scikit-image's. A second row times the JavaScript path (no WebAssembly) for comparison.
 *
 * Run:  npm run bench -- proposals-speed [repeats]      (the shared bench/_run.ts harness), or
 *       npx esbuild bench/proposals-speed.ts --bundle --platform=node --format=esm \
 *         --packages=external --outfile=dist/bench/proposals-speed.mjs && node dist/bench/proposals-speed.mjs [repeats]
 * CPU time (process.cpuUsage / time.process_time) is reported instead of wall time so that other
 * work on a shared machine distorts the comparison less; the load average is recorded beside it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, homedir, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult, BenchRow } from './_run.js';
import { decodeImage, felzenszwalb, imageFrom, selectiveSearch, slic, type RgbImage } from '../stages/proposals/index.js';

interface Timing {
  image: string;
  method: 'selective-search-fast' | 'felzenszwalb' | 'slic';
  ms: number;
  count: number;
  labelsSha256?: string;
}

const SLIC_OPTIONS = { nSegments: 100, startLabel: 0 } as const;

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

const sha256 = (labels: Int32Array) => createHash('sha256').update(new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength)).digest('hex');

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

/** Does `python` import what proposals-reference.py needs? */
function usable(python: string): boolean {
  if (!existsSync(python)) return false;
  try {
    execFileSync(python, ['-c', 'import cv2, numpy, skimage, skimage.segmentation; cv2.ximgproc'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The reference Python (see the header), installing a venv from PyPI as the last resort; null with a note when none works. */
function referencePython(notes: string[]): string | null {
  const candidates = [process.env.DENSEPIPE_REFERENCE_PYTHON, '/usr/bin/python3', '/tmp/venv-proposals/bin/python'].filter((p): p is string => !!p);
  const found = candidates.find(usable);
  if (found) return found;
  const venv = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'densepipe', 'venv-proposals-reference');
  const python = join(venv, 'bin', 'python');
  if (!usable(python)) {
    try {
      process.stderr.write(`proposals-speed: no Python with scikit-image and OpenCV (tried ${candidates.join(', ')}); installing them into ${venv} from PyPI\n`);
      execFileSync('python3', ['-m', 'venv', venv], { stdio: 'inherit' });
      execFileSync(join(venv, 'bin', 'pip'), ['install', '--quiet', 'numpy', 'scikit-image', 'opencv-contrib-python-headless'], { stdio: 'inherit' });
    } catch (err) {
      notes.push(`reference timings skipped: no Python with scikit-image + OpenCV contrib, and installing them into ${venv} failed (${(err as Error).message.split('\n')[0]}); set DENSEPIPE_REFERENCE_PYTHON; ours only, on synthetic images`);
      return null;
    }
  }
  return usable(python) ? python : null;
}

function measureOurs(images: Map<string, RgbImage>, repeats: number): Timing[] {
  const out: Timing[] = [];
  for (const [name, image] of images) {
    const ss = cpuMs(() => selectiveSearch(image, { mode: 'fast', rng: null }), repeats);
    out.push({ image: name, method: 'selective-search-fast', ms: ss.ms, count: ss.out.boxes.length });
    if (name.endsWith('128x128')) continue;
    const fh = cpuMs(() => felzenszwalb(image, { scale: 100, sigma: 0.8, minSize: 20 }), repeats);
    out.push({ image: name, method: 'felzenszwalb', ms: fh.ms, count: fh.out.count });
    const sp = cpuMs(() => slic(image, SLIC_OPTIONS), repeats);
    out.push({ image: name, method: 'slic', ms: sp.ms, count: sp.out.count, labelsSha256: sha256(sp.out.labels) });
  }
  return out;
}

interface ColdRun {
  importMs: number;
  coldMs: number;
  warmMs: number | null;
  count: number;
  labelsSha256: string;
  simd: boolean;
}

/** bench/_slic-cold.ts bundled once, then run in a fresh `node` per image. */
async function coldRunner(dir: string): Promise<(image: RgbImage, repeats: number) => ColdRun> {
  const esbuild = await import('esbuild');
  const beside = fileURLToPath(new URL('./_slic-cold.ts', import.meta.url));
  const entry = existsSync(beside) ? beside : join(process.cwd(), 'bench/_slic-cold.ts');
  const bundle = join(dir, 'slic-cold.mjs');
  await esbuild.build({ entryPoints: [entry], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: bundle, logLevel: 'silent' });
  return (image, repeats) => {
    const raw = join(dir, `rgb-${image.width}x${image.height}.bin`);
    writeFileSync(raw, image.data);
    return JSON.parse(execFileSync(process.execPath, [bundle, raw, String(image.width), String(image.height), String(repeats)], { encoding: 'utf8' })) as ColdRun;
  };
}

const round = (v: number) => Math.round(v * 10) / 10;

export async function main(args: string[] = []): Promise<BenchResult> {
  const repeats = Number(args[0] ?? 5);
  const loadAtStart = loadavg()[0]!;
  const beside = fileURLToPath(new URL('./proposals-reference.py', import.meta.url));
  const script = existsSync(beside) ? beside : join(process.cwd(), 'bench/proposals-reference.py');
  const notes = [`median CPU ms per image over ${repeats} repeats, one thread (process.cpuUsage / time.process_time)`];
  const python = referencePython(notes);
  let reference: { versions: Record<string, string>; results: Timing[] } | null = null;
  let images: Map<string, RgbImage>;
  const dir = mkdtempSync(join(tmpdir(), 'proposals-bench-'));
  if (python) {
    reference = JSON.parse(execFileSync(python, [script, dir, String(repeats)], { encoding: 'utf8', maxBuffer: 1 << 24 }));
    images = new Map();
    for (const file of readdirSync(dir).sort()) images.set(file.replace(/\.png$/, ''), await decodeImage(readFileSync(join(dir, file))));
    notes.push(`references (${python}): ${Object.entries(reference!.versions).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  } else {
    images = syntheticImages();
  }
  const rows: BenchRow[] = [];
  let runCold: ((image: RgbImage, repeats: number) => ColdRun) | null = null;
  for (const o of measureOurs(images, repeats)) {
    const r = reference?.results.find((x) => x.image === o.image && x.method === o.method);
    rows.push({ case: `${o.image} ${o.method}`, ours: { ms: o.ms, count: o.count }, reference: r ? { ms: r.ms, count: r.count } : null, speedup: r ? r.ms / o.ms : null });
    if (o.method !== 'slic') continue;
    const image = images.get(o.image)!;
    const row = rows.at(-1)!;
    // cold: a fresh process; labels checked against scikit-image's
    runCold ??= await coldRunner(dir);
    const cold = runCold(image, repeats);
    row.case = `${o.image} slic (warm; cold = first call in a fresh process)`;
    row.ours = {
      ms: o.ms,
      cold: round(cold.coldMs),
      coldOverWarm: cold.coldMs / o.ms,
      speedupCold: r ? r.ms / cold.coldMs : NaN,
      importMs: round(cold.importMs),
      childWarm: cold.warmMs ?? NaN,
      count: o.count,
      labelsIdentical: r?.labelsSha256 ? Number(r.labelsSha256 === o.labelsSha256 && r.labelsSha256 === cold.labelsSha256) : NaN,
      simd: Number(cold.simd),
    };
    const js = cpuMs(() => slic(image, SLIC_OPTIONS, { simd: false }), repeats);
    rows.push({
      case: `${o.image} slic (JavaScript path, warm)`,
      ours: { ms: js.ms, count: js.out.count, labelsIdentical: r?.labelsSha256 ? Number(r.labelsSha256 === sha256(js.out.labels)) : NaN },
      reference: r ? { ms: r.ms, count: r.count } : null,
      speedup: r ? r.ms / js.ms : null,
    });
  }
  const loadAtEnd = loadavg()[0]!;
  notes.push(
    'slic rows: ms = warm (median in this process after a warm-up call); cold = the first call in a fresh Node process (bench/_slic-cold.ts, esbuild-bundled like the worker pool); coldOverWarm = cold / ms; speedupCold = reference ms / cold; importMs = loading slic.ts in that process; childWarm = its warm median; labelsIdentical = 1 when our label map (warm and cold) hashes as scikit-image\'s',
    `load average (1 min) ${loadAtStart.toFixed(2)} at the start, ${loadAtEnd.toFixed(2)} at the end, on ${cpus().length} CPUs`,
  );
  return { name: 'proposals-speed', rows, notes, load: { start: loadAtStart, end: loadAtEnd, cpus: cpus().length } };
}

if (process.argv[1] && /proposals-speed\.(ts|m?js)$/.test(process.argv[1])) {
  const result = await main(process.argv.slice(2));
  console.log(['case', 'ours ms', 'ref ms', 'ref/ours', 'ours count', 'ref count'].join('\t'));
  for (const row of result.rows) {
    console.log([row.case, row.ours.ms!.toFixed(0), row.reference?.ms?.toFixed(0) ?? '-', row.speedup?.toFixed(2) ?? '-', row.ours.count, row.reference?.count ?? '-'].join('\t'));
  }
  for (const note of result.notes ?? []) console.log(`note: ${note}`);
}
