/**
 * Training throughput of one MoCo v2 and one DenseCL step: ResNet-18 (torchvision topology), batch 32, at 64×64
 * and 224×224, queue K = 65536, on the native TensorFlow backend, against PyTorch eager on the same CPU with the
 * same thread count, measured in the same run (the reference is spawned from here, case by case, alternating).
 *
 * A step = momentum update + key forward + query forward/backward + SGD update + enqueue (augmentation and data
 * loading excluded on both sides; inputs are fixed random tensors). Reported: median seconds per step after one
 * warm-up step. speedup = reference time / our time (> 1: we are faster).
 *
 * Usage: npm run bench -- train-throughput [--steps N] [--sizes 64,224] [--python /usr/bin/python3]
 */
import { spawnSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Rng } from '../core/rng.js';
import { initBackend, tf } from '../core/tf.js';
import { createMethod, createOptimizer, learningRate, pretrainConfigSchema } from '../stages/pretrain/index.js';

const BATCH = 32;
const QUEUE = 65536;
const REFERENCE_SCRIPT = fileURLToPath(new URL('../test/fixtures/methods/train_step_reference.py', import.meta.url));

interface Timing {
  imagesPerSecond: number;
  secondsPerStep: number;
}

export interface BenchResult {
  name: string;
  machine: { cpus: number; model: string; memGiB: number };
  rows: Array<{ case: string; ours: Timing; reference: Timing | null; speedup: number | null }>;
  peakRssMiB: number;
  notes: string[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const timing = (secondsPerStep: number): Timing => ({ secondsPerStep, imagesPerSecond: BATCH / secondsPerStep });

function randomImages(size: number, seed: number): tf.Tensor4D {
  const rng = new Rng(seed);
  const values = new Float32Array(BATCH * size * size * 3);
  for (let i = 0; i < values.length; i++) values[i] = rng.normal();
  return tf.tensor4d(values, [BATCH, size, size, 3]);
}

/** Our step, timed: the same code path as the pretraining stage (createMethod + createOptimizer + step). */
function measureOurs(method: 'mocov2' | 'densecl', size: number, steps: number): { seconds: number[]; losses: number[] } {
  const config = pretrainConfigSchema.parse({
    method,
    backbone: { arch: 'resnet18' },
    batchSize: BATCH,
    imageSize: size,
    args: { queueSize: QUEUE, shuffleBnGroups: 1 }, // the reference runs single-process BN too
    steps: steps + 1,
  });
  const model = createMethod(config);
  const optimizer = createOptimizer(config, model.online);
  const [view0, view1] = [randomImages(size, 1), randomImages(size, 2)];
  const seconds: number[] = [];
  const losses: number[] = [];
  try {
    for (let step = 0; step <= steps; step++) {
      const lr = learningRate(config, step, steps + 1);
      const t0 = performance.now();
      const r = model.step({ views: [view0, view1], geometry: [] }, { step, totalSteps: steps + 1, rng: new Rng(step), applyGradients: (g) => optimizer.step(g, lr) });
      const dt = (performance.now() - t0) / 1000; // step reads the loss back, so the step has finished
      if (step > 0) seconds.push(dt);
      losses.push(r.loss);
    }
  } finally {
    tf.dispose([view0, view1]);
    optimizer.dispose();
    model.dispose();
  }
  return { seconds, losses };
}

/**
 * On an oversubscribed machine OpenMP's default spin-waiting makes PyTorch several times slower than its
 * own single-thread speed (measured: 10 s vs 3.5 s per MoCo v2 step at 64 px, load 7 on 2 cores), which
 * would flatter us; passive waiting is then the fair setting. On an idle machine the default is kept.
 */
function referenceEnv(threads: number): { env: NodeJS.ProcessEnv; note: string | null } {
  if (process.env.OMP_WAIT_POLICY || loadavg()[0]! <= threads) return { env: process.env, note: null };
  return { env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' }, note: 'machine busy at start (load > cores): reference run with OMP_WAIT_POLICY=PASSIVE' };
}

function measureReference(python: string, method: string, size: number, threads: number, steps: number, env: NodeJS.ProcessEnv): { seconds: number[]; torch: string; blasGflops: number } | { error: string } {
  const res = spawnSync(python, [REFERENCE_SCRIPT, method, String(size), String(BATCH), String(threads), String(steps), String(QUEUE)], { encoding: 'utf8', timeout: 30 * 60_000, env });
  if (res.status !== 0) return { error: `${python} exited ${res.status ?? res.signal}: ${(res.stderr || res.error?.message || '').trim().split('\n').slice(-2).join(' ')}` };
  const line = res.stdout.trim().split('\n').pop()!;
  const out = JSON.parse(line) as { secondsPerStep: number[]; torch: string; blasGflops: number };
  return { seconds: out.secondsPerStep, torch: out.torch, blasGflops: out.blasGflops };
}

function parseArgs(args: string[]): { steps: number; sizes: number[]; python: string } {
  const get = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const steps = Number(get('--steps') ?? 3);
  const sizes = (get('--sizes') ?? '64,224').split(',').map(Number);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps: expected a positive integer, got ${get('--steps')}`);
  if (sizes.some((s) => !Number.isInteger(s) || s < 32)) throw new Error(`--sizes: expected integers >= 32, got ${get('--sizes')}`);
  return { steps, sizes, python: get('--python') ?? process.env.DENSEPIPE_PYTHON ?? '/usr/bin/python3' };
}

export async function main(args: string[] = []): Promise<BenchResult> {
  const { steps, sizes, python } = parseArgs(args);
  const info = await initBackend('tensorflow');
  const threads = cpus().length; // TensorFlow's default intra-op pool = all cores; torch is set to match
  const rows: BenchResult['rows'] = [];
  const notes: string[] = [];
  const load0 = loadavg()[0]!;
  const reference = referenceEnv(threads);
  if (reference.note) notes.push(reference.note);
  const stepTime: Record<string, { ours: number; ref: number | null }> = {};
  let torchVersion = '';
  for (const size of sizes) {
    for (const method of ['mocov2', 'densecl'] as const) {
      const ours = measureOurs(method, size, steps);
      const ref = measureReference(python, method, size, threads, steps, reference.env);
      const oursT = median(ours.seconds);
      const refT = 'seconds' in ref ? median(ref.seconds) : null;
      if ('error' in ref) notes.push(`reference ${method}@${size}: ${ref.error}`);
      else {
        torchVersion = ref.torch;
        // A netlib (reference) BLAS runs a 512² matmul at ~2 GFLOP/s; OpenBLAS on one core is > 20.
        if (ref.blasGflops < 10 && !notes.some((n) => n.startsWith('SLOW BLAS'))) {
          notes.push(`SLOW BLAS: PyTorch's matmul ran at ${ref.blasGflops.toFixed(1)} GFLOP/s (reference BLAS?); install libopenblas0-pthread for a fair reference`);
        }
      }
      stepTime[`${method}@${size}`] = { ours: oursT, ref: refT };
      rows.push({
        case: `${method} resnet18 ${size}x${size} b${BATCH}`,
        ours: timing(oursT),
        reference: refT === null ? null : timing(refT),
        speedup: refT === null ? null : refT / oursT,
      });
    }
  }
  for (const size of sizes) {
    const m = stepTime[`mocov2@${size}`]!;
    const d = stepTime[`densecl@${size}`]!;
    notes.push(
      `DenseCL / MoCo v2 step time at ${size}px: ours ${(d.ours / m.ours).toFixed(2)}x` + (m.ref && d.ref ? `, reference ${(d.ref / m.ref).toFixed(2)}x` : ''),
    );
  }
  notes.push(
    `ours: tfjs-node backend '${info.backend}' (TensorFlow ${info.tensorflowVersion ?? '?'}), reference: PyTorch ${torchVersion || 'n/a'} eager CPU, ${threads} threads both; K=${QUEUE}, ` +
      `median of ${steps} steps after 1 warm-up; load average at start ${load0.toFixed(2)} (a shared machine inflates both sides)`,
  );
  return {
    name: 'train-throughput',
    machine: { cpus: threads, model: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30) },
    rows,
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    notes,
  };
}
