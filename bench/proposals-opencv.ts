/**
 * Selective search against OpenCV 4.6 ximgproc on real photographs (issue #18), in one run:
 * identical boxes (share of OpenCV's de-duplicated boxes that we also return), box counts, CPU ms
 * per image on one thread (median of `repeats`, after one warm-up call; `cold` = that first call),
 * and whether the inputs agree byte for byte (8-bit Lab; DETReg's 128x128 INTER_LINEAR squash).
 *
 * The OpenCV side is bench/proposals-opencv46.py run by $DENSEPIPE_REFERENCE_PYTHON (default
 * /usr/bin/python3 with Debian's python3-opencv 4.6 and python3-skimage 0.19.3; see its header).
 *
 * Run:  npm run bench -- proposals-opencv [repeats] [modes]     e.g. `npm run bench -- proposals-opencv 3 fast`
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult, BenchRow } from './_run.js';
import { decodeImage, fromXywh, resizeImage, selectiveSearch, type RgbImage } from '../stages/proposals/index.js';
import { toColourSpace } from '../stages/proposals/colour-spaces.js';

interface ReferenceCase {
  image: string;
  mode: 'fast' | 'quality';
  detreg128: boolean;
  ms: number;
  boxes: number[][];
}

const hash16 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

function cpuMs(fn: () => number, repeats: number): { ms: number; cold: number; count: number } {
  const t0 = process.cpuUsage();
  let count = fn();
  const c = process.cpuUsage(t0);
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t = process.cpuUsage();
    count = fn();
    const u = process.cpuUsage(t);
    times.push((u.user + u.system) / 1000);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)]!, cold: (c.user + c.system) / 1000, count };
}

function labBytes(image: RgbImage): Uint8Array {
  const { planes } = toColourSpace(image, 'lab');
  const out = new Uint8Array(image.width * image.height * 3);
  for (let p = 0; p < image.width * image.height; p++) for (let c = 0; c < 3; c++) out[p * 3 + c] = planes[c]![p]!;
  return out;
}

export async function main(args: string[] = []): Promise<BenchResult> {
  const repeats = Number(args[0] ?? 3);
  const modes = args[1] ?? 'fast,quality';
  const python = process.env.DENSEPIPE_REFERENCE_PYTHON ?? '/usr/bin/python3';
  const beside = fileURLToPath(new URL('./proposals-opencv46.py', import.meta.url));
  const script = existsSync(beside) ? beside : join(process.cwd(), 'bench/proposals-opencv46.py');
  const dir = mkdtempSync(join(tmpdir(), 'proposals-opencv-'));
  let reference: { versions: Record<string, string>; images: Record<string, { labSha256_16: string; resize128Sha256_16: string }>; cases: ReferenceCase[] };
  try {
    reference = JSON.parse(execFileSync(python, [script, dir, String(repeats), modes], { encoding: 'utf8', maxBuffer: 1 << 28 }));
  } catch (err) {
    throw new Error(`the OpenCV 4.6 reference did not run (${python} ${script}): ${(err as Error).message.split('\n')[0]}; install python3-opencv and python3-skimage or set DENSEPIPE_REFERENCE_PYTHON`);
  }
  const rows: BenchRow[] = [];
  const notes = [`one thread; CPU ms (process.cpuUsage / time.process_time), median of ${repeats} after a warm-up call; ours.cold = the first call in the process`, `reference: ${Object.entries(reference.versions).map(([k, v]) => `${k} ${v}`).join(', ')}`];
  const images = new Map<string, RgbImage>();
  for (const name of Object.keys(reference.images)) {
    const image = await decodeImage(readFileSync(join(dir, `${name}.png`)));
    images.set(name, image);
    const lab = hash16(labBytes(image)) === reference.images[name]!.labSha256_16;
    const small = await resizeImage(image, 128, 128, 'linear');
    const resize = hash16(small.data) === reference.images[name]!.resize128Sha256_16;
    notes.push(`${name}: Lab bytes ${lab ? 'equal' : 'DIFFER'}; cv2.resize 128x128 INTER_LINEAR bytes ${resize ? 'equal' : 'DIFFER'}`);
  }
  for (const c of reference.cases) {
    let image = images.get(c.image)!;
    if (c.detreg128) image = await resizeImage(image, 128, 128, 'linear');
    let boxes: string[] = [];
    const timing = cpuMs(() => {
      boxes = selectiveSearch(image, { mode: c.mode, treatRgbAsBgr: c.detreg128, rng: null }).boxes.map((b) => b.join(','));
      return boxes.length;
    }, repeats);
    const theirs = new Set(c.boxes.map((b) => fromXywh(b[0]!, b[1]!, b[2]!, b[3]!).join(',')));
    const identical = boxes.filter((b) => theirs.has(b)).length;
    rows.push({
      case: `${c.image}${c.detreg128 ? ' 128x128 (DETReg)' : ` ${image.width}x${image.height}`} ${c.mode}`,
      ours: { ms: timing.ms, cold: timing.cold, boxes: timing.count, identicalPct: (100 * identical) / theirs.size, countDiffPct: (100 * (timing.count - theirs.size)) / theirs.size },
      reference: { ms: c.ms, boxes: theirs.size },
      speedup: c.ms / timing.ms,
    });
  }
  return { name: 'proposals-opencv', rows, notes };
}
