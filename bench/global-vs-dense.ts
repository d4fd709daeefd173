// Issue #4, measured: is the built-in benchmark hard enough that a global-only representation
// (MoCo v2) is measurably worse at localization than a dense one (DenseCL)?
//
// Both methods are pretrained with identical budgets (arch, steps, batch, image size, queue,
// optimizer, seeds) on the synthetic benchmark through the real stages (no Temporal), then
// evaluated with a frozen backbone on localization (semseg mIoU with a trained head, unsupervised
// object segmentation mIoU with k-means) and on global tasks (kNN and linear top-1). A random-init
// backbone, seeded the same way, is the floor. Each seed `s` seeds pretraining (init, data order,
// augmentations) and the evaluation (heads, random-init backbone), so seeds are independent samples
// of the whole pipeline's noise.
//
// Usage: npm run bench -- global-vs-dense [key=value ...]
//   size=small arch=resnet-tiny imageSize=64 batch=32 steps=3000 seeds=0,1,2,3,4 maxSamples=1000
//   queue=1024 baseLr=0.3 emaMomentum=0.99 semsegEpochs=10 linearEpochs=30
// The defaults are docs/EXPERIMENTS.md §1 (~26 min per seed on this 2-core machine); its first,
// shorter attempt was `steps=300 seeds=0,1,2 emaMomentum=0.999`.
// Stage outputs are cached in the experiment store, so re-running with more seeds only trains the new ones.
import { initBackend } from '../core/tf.js';
import type { PretrainResult } from '../stages/pretrain/index.js';
import type { BenchResult, BenchRow } from './_run.js';
import { evaluate, experimentStore, lossCurve, meanStd, pretrain, runConfig, say, shard } from './_stage-runs.js';

const LOCALIZATION = ['semseg.mIoU', 'unsup-seg.mIoU'] as const;
const GLOBAL = ['knn.top1', 'linear.top1'] as const;
const METRICS = [...LOCALIZATION, ...GLOBAL, 'semseg.pixelAccuracy'] as const;
const ARMS = ['random-init', 'mocov2', 'densecl'] as const;
type Arm = (typeof ARMS)[number];

interface Options {
  size: 'tiny' | 'small' | 'full';
  arch: string;
  imageSize: number;
  batch: number;
  steps: number;
  seeds: number[];
  maxSamples: number;
  queue: number;
  /** SGD base lr (scaled by batch/256 in the stage); both methods get the same. */
  baseLr: number;
  /** m of the momentum (key) encoder; both methods get the same. */
  emaMomentum: number;
  semsegEpochs: number;
  linearEpochs: number;
}

const DEFAULTS: Options = { size: 'small', arch: 'resnet-tiny', imageSize: 64, batch: 32, steps: 3000, seeds: [0, 1, 2, 3, 4], maxSamples: 1000, queue: 1024, baseLr: 0.3, emaMomentum: 0.99, semsegEpochs: 10, linearEpochs: 30 };

function parseOptions(args: string[]): Options {
  const o: Options = { ...DEFAULTS, seeds: [...DEFAULTS.seeds] };
  for (const arg of args) {
    const eq = arg.indexOf('=');
    if (eq <= 0) throw new Error(`global-vs-dense: argument ${JSON.stringify(arg)} is not key=value (keys: ${Object.keys(DEFAULTS).join(', ')})`);
    const key = arg.slice(0, eq) as keyof Options;
    const value = arg.slice(eq + 1);
    if (!(key in DEFAULTS)) throw new Error(`global-vs-dense: unknown key '${key}' (keys: ${Object.keys(DEFAULTS).join(', ')})`);
    if (key === 'seeds') o.seeds = value.split(',').map((s) => Number(s));
    else if (key === 'size') o.size = value as Options['size'];
    else if (key === 'arch') o.arch = value;
    else (o[key] as number) = Number(value);
    if (key !== 'size' && key !== 'arch' && (key === 'seeds' ? o.seeds.some((s) => !Number.isInteger(s)) : !Number.isFinite(o[key] as number))) {
      throw new Error(`global-vs-dense: ${key}=${value} is not a number`);
    }
  }
  return o;
}

/** Loss at the start and end of training and the mean drop per 100 steps over the last half: the basis for extrapolating a budget. */
function summariseCurve(points: Array<{ step: number; loss: number }>): { first: number; last: number; dropPer100StepsLastHalf: number } {
  const window = Math.max(1, Math.floor(points.length / 10));
  const avg = (xs: typeof points) => xs.reduce((a, p) => a + p.loss, 0) / xs.length;
  const half = points.slice(Math.floor(points.length / 2));
  // Least-squares slope of loss against step over the last half.
  const mx = half.reduce((a, p) => a + p.step, 0) / half.length;
  const my = avg(half);
  const sxy = half.reduce((a, p) => a + (p.step - mx) * (p.loss - my), 0);
  const sxx = half.reduce((a, p) => a + (p.step - mx) ** 2, 0);
  return { first: avg(points.slice(0, window)), last: avg(points.slice(-window)), dropPer100StepsLastHalf: sxx > 0 ? (-sxy / sxx) * 100 : 0 };
}

/** Welch's t for two independent samples (NaN when a side has < 2 values or no spread). */
function welchT(a: number[], b: number[]): number {
  const A = meanStd(a);
  const B = meanStd(b);
  const se = Math.sqrt(A.std ** 2 / A.n + B.std ** 2 / B.n);
  return A.n < 2 || B.n < 2 || se === 0 ? Number.NaN : (A.mean - B.mean) / se;
}

/**
 * Paired comparison over seeds: seed s gives both methods the same backbone init, data order and
 * augmentations (and the same evaluation seed), so the per-seed difference removes the noise the two
 * runs share. Returns the differences, their mean and std, and the paired t (mean / (std / sqrt n)).
 */
function paired(a: number[], b: number[]): { diffs: number[]; mean: number; std: number; t: number; positive: number } {
  const diffs = a.map((x, i) => x - b[i]!);
  const s = meanStd(diffs);
  return { diffs, mean: s.mean, std: s.std, t: s.n >= 2 && s.std > 0 ? s.mean / (s.std / Math.sqrt(s.n)) : Number.NaN, positive: diffs.filter((d) => d > 0).length };
}

function pooledStd(a: number[], b: number[]): number {
  const A = meanStd(a);
  const B = meanStd(b);
  const dof = A.n + B.n - 2;
  return dof > 0 ? Math.sqrt(((A.n - 1) * A.std ** 2 + (B.n - 1) * B.std ** 2) / dof) : Number.NaN;
}

export async function main(args: string[]): Promise<BenchResult> {
  const o = parseOptions(args);
  const info = await initBackend('tensorflow');
  const store = experimentStore('global-vs-dense');
  const t0 = performance.now();

  const base = (method: 'mocov2' | 'densecl', seed: number) =>
    runConfig(
      {
        name: `global-vs-dense-${method}-s${seed}`,
        data: { source: { kind: 'synthetic', size: o.size, seed: 0 }, shardSamples: 256 },
        proposals: { enabled: false },
        pretrain: { method, seed, backbone: { arch: o.arch }, batchSize: o.batch, steps: o.steps, imageSize: o.imageSize, args: { queueSize: o.queue, momentum: o.emaMomentum }, optimizer: { baseLr: o.baseLr } },
        evaluation: {
          tasks: ['knn', 'linear', 'semseg', 'unsup-seg'],
          imageSize: o.imageSize,
          maxSamplesPerSplit: o.maxSamples,
          seed,
          linear: { epochs: o.linearEpochs },
          semseg: { mode: 'frozen', epochs: o.semsegEpochs },
        },
      },
      `bench/global-vs-dense (${method}, seed ${seed})`,
    );

  const first = base('mocov2', o.seeds[0]!);
  const dataset = await shard(store, first.data);
  say(`dataset synthetic-${o.size}: ${Object.entries(dataset.ref.result.splits).map(([k, v]) => `${k} ${v.samples}`).join(', ')} (${dataset.cached ? 'cached' : `${dataset.seconds.toFixed(1)} s`})`);

  const values: Record<Arm, Record<string, number[]>> = Object.fromEntries(ARMS.map((a) => [a, Object.fromEntries(METRICS.map((m) => [m, [] as number[]]))])) as Record<Arm, Record<string, number[]>>;
  const runs: Array<Record<string, unknown>> = [];
  for (const seed of o.seeds) {
    for (const arm of ARMS) {
      const cfg = base(arm === 'densecl' ? 'densecl' : 'mocov2', seed);
      let trained: Awaited<ReturnType<typeof pretrain>> | null = null;
      if (arm !== 'random-init') {
        trained = await pretrain(store, dataset.ref, cfg.pretrain);
        say(`${arm} s${seed}: pretrained ${o.steps} steps, final loss ${trained.ref.result.finalLoss.toFixed(4)}, ${trained.cached ? 'cached' : `${trained.seconds.toFixed(0)} s`}`);
      }
      const evaluated = await evaluate(store, dataset.ref, trained?.ref ?? null, cfg.evaluation);
      const m = evaluated.ref.result.metrics;
      for (const k of METRICS) values[arm][k]!.push(m[k] ?? Number.NaN);
      say(`${arm} s${seed}: ${METRICS.map((k) => `${k} ${m[k]?.toFixed(4)}`).join(' ')} (eval ${evaluated.cached ? 'cached' : `${evaluated.seconds.toFixed(0)} s`})`);
      const result = trained?.ref.result as PretrainResult | undefined;
      runs.push({
        arm,
        seed,
        metrics: m,
        pretrainSeconds: trained && !trained.cached ? trained.seconds : null,
        evaluationSeconds: evaluated.cached ? null : evaluated.seconds,
        pretrain: result ? { finalLoss: result.finalLoss, imagesPerSecond: result.imagesPerSecond, effectiveLr: result.effectiveLr, curve: summariseCurve(await lossCurve(store, result)) } : null,
      });
    }
  }

  const rows: BenchRow[] = [];
  const comparisons: Array<Record<string, unknown>> = [];
  for (const k of METRICS) {
    for (const arm of ARMS) {
      const s = meanStd(values[arm][k]!);
      rows.push({ case: `${k} ${arm}`, ours: { mean: s.mean, std: s.std, seeds: s.n }, reference: null });
    }
    const d = values.densecl[k]!;
    const g = values.mocov2[k]!;
    const r = values['random-init'][k]!;
    const delta = meanStd(d).mean - meanStd(g).mean;
    const noise = pooledStd(d, g);
    comparisons.push({
      metric: k,
      densecl: meanStd(d),
      mocov2: meanStd(g),
      randomInit: meanStd(r),
      denseclMinusMocov2: delta,
      pooledSeedStd: noise,
      // The regression verdict's rule (stages/regression/verdict.ts, k = 2): a difference counts when it leaves ±2 pooled seed stds.
      exceedsTwoPooledStd: Number.isFinite(noise) && Math.abs(delta) > 2 * noise,
      welchT: welchT(d, g),
      paired: paired(d, g),
      denseclMinusRandomInit: meanStd(d).mean - meanStd(r).mean,
      mocov2MinusRandomInit: meanStd(g).mean - meanStd(r).mean,
    });
  }

  const notes = [
    `backend ${info.backend} ${info.tensorflowVersion ?? ''}; synthetic-${o.size}, ${o.arch}, ${o.imageSize} px, batch ${o.batch}, ${o.steps} steps (${((o.steps * o.batch) / (dataset.ref.result.splits.train?.samples ?? 1)).toFixed(2)} epochs), queue ${o.queue}, baseLr ${o.baseLr}, seeds ${o.seeds.join(',')}`,
    `evaluation: frozen backbone, ${o.maxSamples || 'all'} samples per split, semseg head ${o.semsegEpochs} epochs, linear ${o.linearEpochs} epochs, kNN k=20`,
    ...comparisons.map((c) => {
      const p = c.paired as ReturnType<typeof paired>;
      return `${c.metric}: DenseCL − MoCo v2 = ${(c.denseclMinusMocov2 as number).toFixed(4)}, pooled seed std ${(c.pooledSeedStd as number).toFixed(4)} → ${c.exceedsTwoPooledStd ? 'exceeds' : 'within'} 2× seed noise (Welch t ${(c.welchT as number).toFixed(2)}); paired by seed: DenseCL ahead in ${p.positive}/${p.diffs.length}, t ${p.t.toFixed(2)}`;
    }),
    `total wall time ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  ];
  return { name: 'global-vs-dense', rows, notes, options: o, comparisons, runs };
}
