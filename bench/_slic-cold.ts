/**
 * Child process of bench/proposals-speed.ts: SLIC in a fresh Node process, as a per-shard proposal
 * worker meets it. proposals-speed bundles this file with esbuild (as the worker pool bundles its
 * worker) and runs it with plain `node`, once per image, so the first call is really the first.
 *
 * usage: node slic-cold.mjs RGB_FILE WIDTH HEIGHT REPEATS  (RGB_FILE: raw interleaved RGB bytes)
 * prints JSON: importMs (loading slic.ts), coldMs (the first call), warmMs (median of the next
 * REPEATS calls), count, labelsSha256 (of the int32 labels), simd. CPU time (process.cpuUsage).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const [file, width, height, repeats] = process.argv.slice(2);
const image = { width: Number(width), height: Number(height), channels: 3 as const, data: new Uint8Array(readFileSync(file!)) };
const options = { nSegments: 100, startLabel: 0 as const };

let t = cpuMs();
const { slic } = await import('../stages/proposals/slic.js');
const { slicWorkspace } = await import('../stages/proposals/slic-kernel.js');
const importMs = cpuMs() - t;

t = cpuMs();
const first = slic(image, options);
const coldMs = cpuMs() - t;

const times: number[] = [];
for (let i = 0; i < Number(repeats); i++) {
  t = cpuMs();
  slic(image, options);
  times.push(cpuMs() - t);
}
times.sort((a, b) => a - b);
process.stdout.write(
  JSON.stringify({
    importMs,
    coldMs,
    warmMs: times[Math.floor(times.length / 2)] ?? null,
    count: first.count,
    labelsSha256: createHash('sha256').update(new Uint8Array(first.labels.buffer, first.labels.byteOffset, first.labels.byteLength)).digest('hex'),
    simd: slicWorkspace(image.width, image.height, 1).simd,
  }),
);
