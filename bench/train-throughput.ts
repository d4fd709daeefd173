/**
 * Training throughput of every registered method's step (stages/methods/index.ts) beside its PyTorch reference:
 * ResNet-18 (torchvision topology), batch 32, at 64×64 (and 224×224 for MoCo v2 and DenseCL), on the native
 * TensorFlow backend, against PyTorch eager on the same CPU with the same thread count, measured in the same run
 * (per method and size: ours, then the reference, spawned from here).
 *
 * The batch: ONE batch per method and size, made by the pretraining stage's own feeder (MethodBatchFeeder) from the
 * shard stage's built-in `tiny` dataset (96 synthetic 64-px images; views are resampled to the view size), with the
 * method's declared views, their crop geometry and, when it reads them, proposals from the proposal stage with the
 * preset of configs/methods/NAME.yaml. Both sides then time N steps on that fixed batch: data loading and augmentation
 * are excluded on both sides. The reference gets the same pixels, geometry and proposals (written to a temp folder).
 *
 * Ours = the pretraining stage's code path: pretrainConfigSchema → createMethod + createOptimizer → method.step at
 * the scheduled learning rate (× lrScale). Arguments: each method's paper defaults, except `shuffleBnGroups: 1` where
 * the method has it (the reference is one process: plain BN over the batch), and UP-DETR at its module's `smallScale`
 * arguments (SMALL_SCALE_ARGS: its paper sizes are for 800-px images) with its frozen CNN at random init (`backboneKey`
 * null on both sides: frozen weights cost the same whatever their values). Steps are timed late in a nominal run (step
 * 900 of 1000, after one warm-up step at 899), where every term of every loss is on (SwAV's prototypes free after 313
 * steps, DenseSiam's region term from 80 %), identically on both sides. Randomness a step draws itself and a reference
 * must replay (UP-DETR's query patches) is drawn again from the step's rng and written into the spec (STEP_DRAWS).
 *
 * Reference = test/fixtures/methods/bench_step.py SPEC_DIR: the official repository's model, loss, optimizer and state
 * updates imported at its pinned commit (test/fixtures/methods/official.py), torchvision's resnet18 as the backbone;
 * it prints what it ran, stand-ins included, and that goes into the notes. A method without a builder there gets no
 * reference (row without a ratio, and a note saying so). speedup = reference time / our time (> 1: we are faster).
 *
 * Usage: npm run bench -- train-throughput [methods=a,b] [steps=N] [sizes=64,224] [python=/usr/bin/python3] [keep=DIR]
 *   (the older --steps N / --sizes 64,224 / --python PATH spellings work too). Default: every method, 3 timed steps,
 *   64 px for every method plus 224 px for MoCo v2 and DenseCL; `sizes=` runs every selected method at those sizes.
 *   Every method: bench/results/train-throughput.json; a `methods=` subset: train-throughput-A-B.json beside it.
 *   keep=DIR keeps each case's reference input in DIR/METHOD@SIZE (rerun it: python3 bench_step.py DIR/METHOD@SIZE).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../cli/env.js';
import { loadRunConfig } from '../core/config.js';
import { Rng } from '../core/rng.js';
import { localContext, runStage, type StageRef } from '../core/stage.js';
import { FileArtifactStore } from '../core/store/index.js';
import { initBackend } from '../core/tf.js';
import { shardConfigSchema, shardStage } from '../stages/data/index.js';
import { METHOD_NAMES, methodModule, type MethodName } from '../stages/methods/index.js';
import { drawPatches, type UpDetrArgs } from '../stages/methods/updetr.js';
import { proposalStage } from '../stages/proposals/index.js';
import { createMethod, createOptimizer, disposeBatch, learningRate, pretrainConfigSchema, toMethodBatch, type PretrainConfig } from '../stages/pretrain/index.js';
import { loadProposals, MethodBatchFeeder, type HostBatch } from '../stages/pretrain/feeder.js';

const BATCH = 32;
const ARCH = 'resnet18';
/** Sizes by default: 64 px for every method; 224 px too for these (the cases measured there since issue #3). */
const DEFAULT_SIZES = [64];
const ALSO_224: readonly string[] = ['mocov2', 'densecl'];
/** Timed steps sit late in a nominal run of TOTAL steps: FIRST_TIMED_STEP and on, after one warm-up step. */
const TOTAL = 1000;
const FIRST_TIMED_STEP = 900;
const REFERENCE_SCRIPT = fileURLToPath(new URL('../test/fixtures/methods/bench_step.py', import.meta.url));
/**
 * Methods benchmarked at their module's `smallScale` arguments instead of the paper's: UP-DETR's paper sizes (10 query
 * patches of 128 px, 100 queries, a 6+6-layer transformer of width 256) are those of 800-px ImageNet images, not of a
 * 64-px view whose C5 is 2×2.
 */
const SMALL_SCALE_ARGS: readonly MethodName[] = ['updetr'];

interface Timing {
  imagesPerSecond: number;
  secondsPerStep: number;
}

export interface BenchResult {
  name: string;
  machine: { cpus: number; model: string; memGiB: number };
  rows: Array<{ case: string; ours: Timing; reference: Timing | null; speedup: number | null }>;
  peakRssMiB: number;
  /** os.loadavg() (1, 5, 15 min) when the run started and when it ended: the machine may be shared. */
  loadAverage: { start: number[]; end: number[] };
  notes: string[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const timing = (secondsPerStep: number): Timing => ({ secondsPerStep, imagesPerSecond: BATCH / secondsPerStep });

/** The benchmark's config of a method: its paper defaults (SMALL_SCALE_ARGS: its smallScale ones) on ResNet-18, one BN group where it shuffles BN. */
function benchConfig(method: MethodName, size: number): PretrainConfig {
  const module = methodModule(method);
  const hasShuffle = Object.hasOwn(module.args.shape, 'shuffleBnGroups');
  return pretrainConfigSchema.parse({
    method,
    backbone: { arch: ARCH },
    batchSize: BATCH,
    imageSize: size,
    args: { ...(SMALL_SCALE_ARGS.includes(method) ? module.smallScale?.args : {}), ...(hasShuffle ? { shuffleBnGroups: 1 } : {}) },
    steps: TOTAL,
  });
}

/** The rng a step is given (the same for ours and for what the reference is handed of that step's draws). */
const stepRng = (config: PretrainConfig, step: number) => Rng.fromSeed('pretrain-shuffle-bn', config.seed, step);

/**
 * What a reference needs of the randomness our step draws itself, per method: UP-DETR's query patches (drawPatches
 * is the first draw of UpDetr.step from the step's rng), one [B][N][x, y, w, h] per step (warm-up first).
 */
const STEP_DRAWS: Partial<Record<MethodName, (config: PretrainConfig, host: HostBatch, steps: number) => Record<string, unknown>>> = {
  updetr: (config, host, steps) => {
    const args = config.args as UpDetrArgs;
    const [width, height] = host.viewSizes[0]!;
    const queryPatches = Array.from({ length: steps + 1 }, (_, i) => drawPatches(stepRng(config, FIRST_TIMED_STEP - 1 + i), BATCH, width, height, args.numPatches, args.minPixel));
    return { queryPatches };
  },
};

/** The shard stage's built-in dataset and, per proposal preset, the proposal stage's outputs on it (computed once). */
class Inputs {
  private dataset?: StageRef<{ datasetManifestKey: string; classes?: string[]; splits: Record<string, { shardKeys: string[]; samples: number }> }>;
  private readonly proposals = new Map<string, Array<StageRef<{ proposalsKey: string; segmentsKey?: string }>>>();
  constructor(readonly store: FileArtifactStore) {}

  async data() {
    this.dataset ??= (await runStage(shardStage, localContext(this.store), {}, shardConfigSchema.parse({}))).ref;
    return this.dataset;
  }

  /** Proposals with the `proposals` section of configs/methods/METHOD.yaml (its preset). */
  async proposalsFor(method: MethodName) {
    const { config } = await loadRunConfig(join(projectRoot(), 'configs', 'methods', `${method}.yaml`));
    const { enabled: _e, ...proposalConfig } = config.proposals;
    const key = JSON.stringify(proposalConfig);
    if (!this.proposals.has(key)) {
      const dataset = await this.data();
      const refs = [];
      for (const shardKey of dataset.result.splits.train!.shardKeys) refs.push((await runStage(proposalStage, localContext(this.store), { dataset, shardKey }, proposalConfig)).ref);
      this.proposals.set(key, refs);
    }
    return this.proposals.get(key)!;
  }
}

/** One batch exactly as the pretraining stage would feed this method (its views, geometry, proposals, labels). */
async function feederBatch(inputs: Inputs, config: PretrainConfig): Promise<HostBatch> {
  const module = methodModule(config.method);
  const dataset = await inputs.data();
  const needs = module.consumes.proposals;
  const proposals = needs ? { byKey: await loadProposals(inputs.store, (await inputs.proposalsFor(config.method)).map((r) => r.result), needs.kind === 'regions'), needs } : undefined;
  const feeder = await MethodBatchFeeder.open({
    store: inputs.store,
    datasetManifestKey: dataset.result.datasetManifestKey,
    split: 'train',
    seed: config.seed,
    batchSize: BATCH,
    views: module.consumes.views(config.imageSize, config.args as never),
    sharedFlip: module.consumes.sharedFlip,
    proposals,
    numClasses: module.consumes.labels ? dataset.result.classes!.length : undefined,
  });
  try {
    return await feeder.nextBatch();
  } finally {
    await feeder.close();
  }
}

/** Our step, timed on the fixed batch: createMethod + createOptimizer + method.step, as the pretraining stage does. */
function measureOurs(config: PretrainConfig, host: HostBatch, steps: number): { seconds: number[]; losses: number[]; args: unknown; lr: number } {
  const model = createMethod(config, TOTAL);
  const optimizer = createOptimizer(config, model.online);
  const batch = toMethodBatch(host, BATCH);
  const seconds: number[] = [];
  const losses: number[] = [];
  let lr = 0;
  try {
    for (let i = 0; i <= steps; i++) {
      const step = FIRST_TIMED_STEP - 1 + i;
      lr = learningRate(config, step, TOTAL) * (model.lrScale?.(step, TOTAL) ?? 1);
      const at = lr;
      const t0 = performance.now();
      const r = model.step(batch, { step, totalSteps: TOTAL, rng: stepRng(config, step), applyGradients: (g) => optimizer.step(g, at) });
      const dt = (performance.now() - t0) / 1000; // step reads the loss back, so the step has finished
      if (i > 0) seconds.push(dt);
      losses.push(r.loss);
    }
    return { seconds, losses, args: model.args, lr: learningRate(config, FIRST_TIMED_STEP, TOTAL) };
  } finally {
    disposeBatch(batch);
    optimizer.dispose();
    model.dispose();
  }
}

/**
 * The batch and the settings for the reference, in a temp folder: spec.json (method, sizes, the method's resolved
 * arguments, optimizer, steps, geometry, proposals with region maps as base64 int32, and STEP_DRAWS' entries) and one
 * raw float32 NHWC file per view (the feeder's normalised pixels).
 */
function writeSpec(dir: string, config: PretrainConfig, host: HostBatch, args: unknown, lr: number, threads: number, steps: number): void {
  mkdirSync(dir, { recursive: true });
  const views = host.views.map((data, v) => {
    const file = `view${v}.f32`;
    writeFileSync(join(dir, file), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    return { file, width: host.viewSizes[v]![0], height: host.viewSizes[v]![1] };
  });
  const proposals = host.proposals?.map((perImage) =>
    perImage.map((p) => ({ boxes: p.boxes, original: p.original, ...(p.regions ? { regions: Buffer.from(p.regions.buffer, p.regions.byteOffset, p.regions.byteLength).toString('base64') } : {}) })),
  );
  const { kind, baseLr, momentum, weightDecay } = config.optimizer;
  const spec = {
    method: config.method,
    arch: ARCH,
    batch: BATCH,
    imageSize: config.imageSize,
    threads,
    steps,
    firstTimedStep: FIRST_TIMED_STEP,
    totalSteps: TOTAL,
    seed: config.seed,
    args,
    optimizer: { kind, baseLr, lr, momentum, weightDecay },
    views,
    geometry: host.geometry,
    proposals: proposals ?? null,
    ...STEP_DRAWS[config.method]?.(config, host, steps),
  };
  writeFileSync(join(dir, 'spec.json'), JSON.stringify(spec));
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

interface ReferenceOut {
  seconds: number[];
  torch: string;
  blasGflops: number;
  reference: string;
}

function measureReference(python: string, specDir: string, env: NodeJS.ProcessEnv): ReferenceOut | { error: string } {
  const res = spawnSync(python, [REFERENCE_SCRIPT, specDir], { encoding: 'utf8', timeout: 30 * 60_000, env, maxBuffer: 64 << 20 });
  if (res.status !== 0) return { error: `${python} exited ${res.status ?? res.signal}: ${(res.stderr || res.error?.message || '').trim().split('\n').slice(-3).join(' ')}` };
  const out = JSON.parse(res.stdout.trim().split('\n').pop()!) as { secondsPerStep?: number[]; torch: string; blasGflops: number; reference: string; unavailable?: string };
  if (out.unavailable) return { error: out.unavailable };
  return { seconds: out.secondsPerStep!, torch: out.torch, blasGflops: out.blasGflops, reference: out.reference };
}

interface Options {
  methods: MethodName[];
  steps: number;
  sizes: number[] | null;
  python: string;
  keep: string | null;
}

function parseArgs(args: string[]): Options {
  const o: Options = { methods: [...METHOD_NAMES], steps: 3, sizes: null, python: process.env.DENSEPIPE_PYTHON ?? '/usr/bin/python3', keep: null };
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith('--')) pairs.push([a.slice(2), args[++i] ?? '']);
    else if (a.includes('=')) pairs.push([a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]);
    else throw new Error(`train-throughput: argument ${JSON.stringify(a)} is not key=value (keys: methods, steps, sizes, python, keep)`);
  }
  for (const [key, value] of pairs) {
    switch (key) {
      case 'methods': {
        const names = value === 'all' ? [...METHOD_NAMES] : value.split(',');
        const unknown = names.filter((n) => !(METHOD_NAMES as readonly string[]).includes(n));
        if (unknown.length) throw new Error(`train-throughput: unknown method(s) ${unknown.join(', ')} (registered: ${METHOD_NAMES.join(', ')})`);
        o.methods = names as MethodName[];
        break;
      }
      case 'steps':
        o.steps = Number(value);
        if (!Number.isInteger(o.steps) || o.steps < 1) throw new Error(`train-throughput: steps: expected a positive integer, got ${value}`);
        break;
      case 'sizes':
        o.sizes = value.split(',').map(Number);
        if (o.sizes.some((s) => !Number.isInteger(s) || s < 32)) throw new Error(`train-throughput: sizes: expected integers >= 32, got ${value}`);
        break;
      case 'python':
        o.python = value;
        break;
      case 'keep':
        o.keep = value;
        break;
      default:
        throw new Error(`train-throughput: unknown key '${key}' (keys: methods, steps, sizes, python, keep)`);
    }
  }
  return o;
}

/** The cases, size-major: every method at 64 px, then those also measured at 224 px (or every method at each given size). */
function cases(o: Options): Array<{ method: MethodName; size: number }> {
  const sizes = o.sizes ?? [...DEFAULT_SIZES, 224];
  return sizes.flatMap((size) => o.methods.filter((m) => o.sizes || DEFAULT_SIZES.includes(size) || ALSO_224.includes(m)).map((method) => ({ method, size })));
}

export async function main(args: string[] = []): Promise<BenchResult> {
  const options = parseArgs(args);
  const info = await initBackend('tensorflow');
  const threads = cpus().length; // TensorFlow's default intra-op pool = all cores; torch is set to match
  const rows: BenchResult['rows'] = [];
  const notes: string[] = [];
  const loadStart = loadavg();
  const load0 = loadStart[0]!;
  const reference = referenceEnv(threads);
  if (reference.note) notes.push(reference.note);
  const stepTime: Record<string, { ours: number; ref: number | null }> = {};
  const described = new Set<string>();
  let torchVersion = '';
  const work = mkdtempSync(join(tmpdir(), 'densepipe-train-throughput-'));
  const inputs = new Inputs(new FileArtifactStore(join(work, 'store')));
  try {
    for (const { method, size } of cases(options)) {
      const label = `${method}@${size}`;
      let config: PretrainConfig, host: HostBatch, ours: ReturnType<typeof measureOurs>;
      try {
        config = benchConfig(method, size);
        host = await feederBatch(inputs, config);
        ours = measureOurs(config, host, options.steps);
      } catch (err) {
        notes.push(`ours ${label} failed: ${(err as Error).message.split('\n')[0]}`);
        continue;
      }
      const specDir = join(options.keep ?? work, label);
      writeSpec(specDir, config, host, ours.args, ours.lr, threads, options.steps);
      const ref = measureReference(options.python, specDir, reference.env);
      if (!options.keep) rmSync(specDir, { recursive: true, force: true });
      const oursT = median(ours.seconds);
      let refT: number | null = null;
      if ('error' in ref) notes.push(`reference ${label}: ${ref.error}`);
      else {
        refT = median(ref.seconds);
        torchVersion = ref.torch;
        if (!described.has(method)) notes.push(`reference ${method}: ${ref.reference}`);
        described.add(method);
        // A netlib (reference) BLAS runs a 512² matmul at ~2 GFLOP/s; OpenBLAS on one core is > 20.
        if (ref.blasGflops < 10 && !notes.some((n) => n.startsWith('SLOW BLAS'))) {
          notes.push(`SLOW BLAS: PyTorch's matmul ran at ${ref.blasGflops.toFixed(1)} GFLOP/s (reference BLAS?); install libopenblas0-pthread for a fair reference`);
        }
      }
      stepTime[label] = { ours: oursT, ref: refT };
      // progress on stderr (the table comes at the end): which case a long or killed run had reached, and its RSS
      process.stderr.write(`train-throughput ${label}: ours ${oursT.toFixed(3)} s/step, reference ${refT === null ? 'n/a' : `${refT.toFixed(3)} s/step`}; rss ${Math.round(process.memoryUsage.rss() / 2 ** 20)} MiB, load ${loadavg()[0]!.toFixed(2)}\n`);
      const viewShapes = host.viewSizes.map(([w, h]) => (w === h ? `${w}` : `${w}x${h}`)).join('+');
      const regions = Boolean(host.proposals?.[0]![0]?.regions);
      const boxes = host.proposals ? `, proposals: ${regions ? 'region maps' : `${host.proposals[0]!.reduce((n, p) => n + p.boxes.length, 0)} boxes kept in view 0`}` : '';
      notes.push(`batch ${label}: views ${viewShapes} px${boxes}`);
      rows.push({
        case: `${method} ${ARCH} ${size}x${size} b${BATCH}`,
        ours: timing(oursT),
        reference: refT === null ? null : timing(refT),
        speedup: refT === null ? null : refT / oursT,
      });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  for (const size of new Set(cases(options).map((c) => c.size))) {
    const m = stepTime[`mocov2@${size}`];
    const d = stepTime[`densecl@${size}`];
    if (!m || !d) continue;
    notes.push(`DenseCL / MoCo v2 step time at ${size}px: ours ${(d.ours / m.ours).toFixed(2)}x` + (m.ref && d.ref ? `, reference ${(d.ref / m.ref).toFixed(2)}x` : ''));
  }
  const shuffled = options.methods.filter((m) => Object.hasOwn(methodModule(m).args.shape, 'shuffleBnGroups'));
  const small = options.methods.filter((m) => SMALL_SCALE_ARGS.includes(m));
  notes.push(
    `arguments: each method's paper defaults (its module's)${shuffled.length ? `, except shuffleBnGroups 1 for ${shuffled.join(', ')} (one BN group: the reference runs one process)` : ''}` +
      `${small.length ? `; ${small.join(', ')} at its module's smallScale arguments (paper sizes are for 800-px images), frozen CNN at random init (backboneKey null, both sides)` : ''}; backbone ${ARCH}, batch ${BATCH}`,
  );
  notes.push(
    `ours: tfjs-node backend '${info.backend}' (TensorFlow ${info.tensorflowVersion ?? '?'}), reference: PyTorch ${torchVersion || 'n/a'} eager CPU, ${threads} threads both; ` +
      `one fixed feeder batch per case, median of ${options.steps} steps (steps ${FIRST_TIMED_STEP}.. of a nominal ${TOTAL}) after 1 warm-up; ` +
      `load average (1 min) at start ${load0.toFixed(2)}, at end ${loadavg()[0]!.toFixed(2)} on ${threads} cores (a shared machine inflates both sides)`,
  );
  // A run of some methods does not replace the full run's file: it is written beside it, named by its methods.
  const all = options.methods.length === METHOD_NAMES.length;
  return {
    name: all ? 'train-throughput' : `train-throughput-${options.methods.join('-')}`,
    machine: { cpus: threads, model: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30) },
    rows,
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    loadAverage: { start: loadStart.map((l) => Math.round(l * 100) / 100), end: loadavg().map((l) => Math.round(l * 100) / 100) },
    notes,
  };
}
