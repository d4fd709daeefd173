/**
 * Training throughput of every registered method's step (stages/methods/index.ts) beside its PyTorch reference:
 * ResNet-18 (torchvision topology), batch 32, at 64×64 (and 224×224 for MoCo v2 and DenseCL), and for the ViT methods
 * (MoCo v3, SiameseIM) ViT-Tiny at 224×224, batch 16 (BATCH: memory), on the native TensorFlow backend, against
 * PyTorch eager on the same CPU with the same thread count, measured in the same run (per method and size: ours in a
 * child process, then the reference, both spawned from here, one after the other).
 *
 * The batch: ONE batch per method and size, made by the pretraining stage's own feeder (MethodBatchFeeder) from the
 * shard stage's built-in `tiny` dataset (96 synthetic 64-px images; views are resampled to the view size), with the
 * method's declared views, their crop geometry and, when it reads them, proposals from the proposal stage with the
 * preset of configs/methods/NAME.yaml. Both sides then time N steps on that fixed batch: data loading and augmentation
 * are excluded on both sides. The reference gets the same pixels, geometry and proposals (written to a temp folder).
 *
 * Ours = the pretraining stage's code path: pretrainConfigSchema → createMethod + createOptimizer → method.step at
 * the scheduled learning rate (× lrScale). Arguments: each method's paper defaults, except `shuffleBnGroups: 1` where
 * the method has it (the reference is one process: plain BN over the batch), and UP-DETR and DETReg at their modules'
 * `smallScale` arguments (SMALL_SCALE_ARGS: their paper sizes are for 800-px images) with the frozen CNN at random init
 * (`backboneKey` null on both sides: frozen weights cost the same whatever their values). Steps are timed late in a
 * nominal run (step 900 of 1000, after one warm-up step at 899), where every term of every loss is on (SwAV's
 * prototypes free after 313 steps, DenseSiam's region term from 80 %), identically on both sides. What a step derives
 * itself and a reference must be handed (UP-DETR's query patches and SiameseIM's masks, drawn again from the step's
 * rng; SiameseIM's relative geometry; DETReg's targets and crop boxes) is written into the spec (STEP_DRAWS).
 *
 * Each case's side of ours runs in its own process (caseChild): TensorFlow does not give back to the system what a
 * step allocated, so one process for every case grew to the sum of the cases' peaks (the full run was OOM-killed at
 * 20.5 GB). The progress line on stderr gives each case's peak RSS, ours and the reference's; the result's
 * `peakRssMiB` is the largest case's and each row has its own.
 *
 * Reference = test/fixtures/methods/bench_step.py SPEC_DIR: the official repository's model, loss, optimizer and state
 * updates imported at its pinned commit (test/fixtures/methods/official.py), torchvision's resnet18 as the backbone;
 * it prints what it ran, stand-ins included, and that goes into the notes. The ViT references need the timm their
 * repository pins: bench_step.py re-runs itself under ~/.cache/METHOD-venv/bin/python (the venv the method's parity
 * generator documents) when the given python has another timm. A method without a builder there gets no reference
 * (row without a ratio, and a note saying so). speedup = reference time / our time (> 1: we are faster).
 *
 * Usage: npm run bench -- train-throughput [methods=a,b] [steps=N] [sizes=64,224] [python=/usr/bin/python3] [keep=DIR]
 *   (the older --steps N / --sizes 64,224 / --python PATH spellings work too). Default: every method, 3 timed steps,
 *   64 px for every ResNet method plus 224 px for MoCo v2 and DenseCL, 224 px for the ViT methods; `sizes=` runs every
 *   selected method at those sizes. Every method: bench/results/train-throughput.json; a `methods=` subset:
 *   train-throughput-A-B.json beside it. keep=DIR keeps each case's reference input in DIR/METHOD@SIZE (rerun it:
 *   python3 bench_step.py DIR/METHOD@SIZE).
 */
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
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
import { boxOriginalToView } from '../stages/data/geometry.js';
import { VIT_PRESETS, type VitPreset } from '../stages/engine/vit.js';
import { detectionTargets, type DetRegArgs } from '../stages/methods/detreg.js';
import { METHOD_NAMES, methodModule, type MethodName } from '../stages/methods/index.js';
import type { BackboneFamily } from '../stages/methods/shared/contract.js';
import { blockwiseMask, maskRandomOf, relativeGeometry, type SiameseIMConfig } from '../stages/methods/siameseim.js';
import { drawPatches, type UpDetrArgs } from '../stages/methods/updetr.js';
import { proposalStage } from '../stages/proposals/index.js';
import { createMethod, createOptimizer, disposeBatch, learningRate, pretrainConfigSchema, toMethodBatch, type PretrainConfig } from '../stages/pretrain/index.js';
import { loadProposals, MethodBatchFeeder, type HostBatch } from '../stages/pretrain/feeder.js';

/**
 * The backbone per family (MethodModule.architecture): ResNet-18 for the ResNet methods; ViT-Tiny (224 px, patch 16,
 * width 192, 12 blocks) for the ViT methods (MoCo v3, SiameseIM), which run at 224 px only by default (issue 16 §4).
 */
const ARCH = { resnet: 'resnet18', vit: 'vit-tiny' } as const satisfies Record<BackboneFamily, string>;
/**
 * The batch per family. ViT: 16, not 32, for memory: our ViT-Tiny steps at 224 px keep far more of the forward for the
 * backward than PyTorch does (measured peak RSS, MoCo v3 with its paper heads: 5.5 GB at batch 8, 9.7 GB at 16, so
 * ~19 GB at 32, which a 24-GB machine shared with the reference and other work cannot give; SiameseIM 6.0 GB at 16).
 */
const BATCH = { resnet: 32, vit: 16 } as const satisfies Record<BackboneFamily, number>;
const familyOf = (method: MethodName): BackboneFamily => methodModule(method).architecture ?? 'resnet';
const archOf = (method: MethodName): string => ARCH[familyOf(method)];
/** Sizes by default: 64 px for every ResNet method; 224 px too for these (the cases measured there since issue #3); ViT methods at 224 px. */
const DEFAULT_SIZES = [64];
const ALSO_224: readonly string[] = ['mocov2', 'densecl'];
const VIT_SIZES = [224];
/** Timed steps sit late in a nominal run of TOTAL steps: FIRST_TIMED_STEP and on, after one warm-up step. */
const TOTAL = 1000;
const FIRST_TIMED_STEP = 900;
const REFERENCE_SCRIPT = fileURLToPath(new URL('../test/fixtures/methods/bench_step.py', import.meta.url));
/**
 * Methods benchmarked at their module's `smallScale` arguments instead of the paper's: UP-DETR's paper sizes (10 query
 * patches of 128 px, 100 queries, a 6+6-layer transformer of width 256) and DETReg's (300 queries, a 6+6-layer
 * deformable transformer of width 256, every box's crop resized to 128 px for the embedding model) are those of
 * 800-px ImageNet images, not of a 64-px view whose C5 is 2×2.
 */
const SMALL_SCALE_ARGS: readonly MethodName[] = ['updetr', 'detreg'];

interface Timing {
  imagesPerSecond: number;
  secondsPerStep: number;
}

export interface BenchResult {
  name: string;
  machine: { cpus: number; model: string; memGiB: number };
  rows: Array<{ case: string; ours: Timing; reference: Timing | null; speedup: number | null; peakRssMiB: { ours: number; reference: number | null } }>;
  /** The largest peak RSS of the run's processes (each case runs ours in its own child: this is the largest case's). */
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

const timing = (secondsPerStep: number, batch: number): Timing => ({ secondsPerStep, imagesPerSecond: batch / secondsPerStep });

/** The benchmark's config of a method: its paper defaults (SMALL_SCALE_ARGS: its smallScale ones) on its family's ARCH, one BN group where it shuffles BN. */
function benchConfig(method: MethodName, size: number): PretrainConfig {
  const module = methodModule(method);
  const hasShuffle = Object.hasOwn(module.args.shape, 'shuffleBnGroups');
  return pretrainConfigSchema.parse({
    method,
    backbone: { arch: archOf(method) },
    batchSize: BATCH[familyOf(method)],
    imageSize: size,
    args: { ...(SMALL_SCALE_ARGS.includes(method) ? module.smallScale?.args : {}), ...(hasShuffle ? { shuffleBnGroups: 1 } : {}) },
    steps: TOTAL,
  });
}

/** The rng a step is given (the same for ours and for what the reference is handed of that step's draws). */
const stepRng = (config: PretrainConfig, step: number) => Rng.fromSeed('pretrain-shuffle-bn', config.seed, step);

/**
 * What a reference needs of what our step derives itself from the batch, per method, where the official code makes it
 * in its data loader: the randomness the step draws (again from the step's rng: the same draws), one entry per step
 * (warm-up first), and the targets it computes from the geometry and the proposals.
 *  - UP-DETR: the query patches (drawPatches is the first draw of UpDetr.step), [B][N][x, y, w, h] per step;
 *  - SiameseIM: the blockwise masks (SiameseIM.drawMasks: one blockwiseMask per image from the step's rng), [B][g²]
 *    per step (1 = masked), and view 2's geometry relative to view 1 (relativeGeometry), per image;
 *  - DETReg: per image, the boxes the detection view keeps as normalised (cx, cy, w, h) (detectionTargets) and their
 *    original boxes in the whole-image view, [x0, y0, x1, y1] px (boxOriginalToView), where the crops are cut.
 */
const STEP_DRAWS: Partial<Record<MethodName, (config: PretrainConfig, host: HostBatch, steps: number, args: unknown) => Record<string, unknown>>> = {
  updetr: (config, host, steps) => {
    const args = config.args as UpDetrArgs;
    const [width, height] = host.viewSizes[0]!;
    const queryPatches = Array.from({ length: steps + 1 }, (_, i) => drawPatches(stepRng(config, FIRST_TIMED_STEP - 1 + i), config.batchSize, width, height, args.numPatches, args.minPixel));
    return { queryPatches };
  },
  siameseim: (config, host, steps, resolved) => {
    const args = resolved as SiameseIMConfig;
    const g = config.imageSize / VIT_PRESETS[config.backbone.arch as VitPreset].patchSize;
    const siameseimMasks = Array.from({ length: steps + 1 }, (_, i) => {
      const random = maskRandomOf(stepRng(config, FIRST_TIMED_STEP - 1 + i));
      return Array.from({ length: config.batchSize }, () => Array.from(blockwiseMask(g, args.numMaskingPatches, args.minMaskPatchesPerBlock, random)));
    });
    const siameseimRelative = host.geometry[0]!.map((view1, b) => relativeGeometry(view1, host.geometry[1]![b]!));
    return { siameseimMasks, siameseimRelative };
  },
  detreg: (config, host) => {
    const args = config.args as DetRegArgs;
    const detregTargets = host.proposals![0]!.map((p, b) => {
      const { target, kept } = detectionTargets(p.original, host.geometry[0]![b]!, args.maxProp);
      return { boxes: target.boxes, crops: kept.map((box) => boxOriginalToView(host.geometry[1]![b]!, box)) };
    });
    return { detregTargets };
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
    batchSize: config.batchSize,
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
  const batch = toMethodBatch(host, config.batchSize);
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
    arch: config.backbone.arch,
    batch: config.batchSize,
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
    ...STEP_DRAWS[config.method]?.(config, host, steps, args),
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
  /** The reference process's peak RSS (its getrusage maxrss). */
  peakRssMiB: number | null;
}

function measureReference(python: string, specDir: string, env: NodeJS.ProcessEnv): ReferenceOut | { error: string } {
  const res = spawnSync(python, [REFERENCE_SCRIPT, specDir], { encoding: 'utf8', timeout: 30 * 60_000, env, maxBuffer: 64 << 20 });
  if (res.status !== 0) return { error: `${python} exited ${res.status ?? res.signal}: ${(res.stderr || res.error?.message || '').trim().split('\n').slice(-3).join(' ')}` };
  const out = JSON.parse(res.stdout.trim().split('\n').pop()!) as { secondsPerStep?: number[]; torch: string; blasGflops: number; reference: string; peakRssMiB?: number; unavailable?: string };
  if (out.unavailable) return { error: out.unavailable };
  return { seconds: out.secondsPerStep!, torch: out.torch, blasGflops: out.blasGflops, reference: out.reference, peakRssMiB: out.peakRssMiB ?? null };
}

/** What one case's child process sends back (one `RESULT {json}` line on stdout). */
interface CaseOut {
  seconds: number[];
  losses: number[];
  /** The row's name: `METHOD ARCH SIZExSIZE bBATCH`. */
  case: string;
  batchSize: number;
  /** The batch's note: view sizes, proposals. */
  batch: string;
  backend: string;
  tensorflowVersion: string;
  /** Tensors the case left allocated after the method, optimizer and batch were disposed (0 = no leak). */
  tensorsLeft: number;
  /** The child's peak RSS: the memory this case needed. */
  peakRssMiB: number;
}

interface CaseArgs {
  method: MethodName;
  size: number;
  steps: number;
  threads: number;
  /** Where the child writes the reference's input. */
  specDir: string;
  /** The artifact store the data and proposals are computed into once and reused by every case. */
  storeDir: string;
}

/**
 * Child mode, one case: the batch, our timed steps, the reference's spec. One process per case because TensorFlow keeps
 * what it allocated: with oneDNN its CPU allocator is a BFC pool that never returns memory to the system, and glibc's
 * heap under Eigen returns only part of it, so in one process the resident size ratchets up to the largest case's peak
 * plus what the next shapes fragment (measured: 8.5 GB resident with 0 live tensors after DenseCL at 224 px, oneDNN on;
 * the full run was OOM-killed at 20.5 GB). A child's memory goes back to the system when it exits.
 */
async function caseChild(a: CaseArgs): Promise<void> {
  const info = await initBackend('tensorflow');
  const inputs = new Inputs(new FileArtifactStore(a.storeDir));
  const config = benchConfig(a.method, a.size);
  const host = await feederBatch(inputs, config);
  const ours = measureOurs(config, host, a.steps);
  writeSpec(a.specDir, config, host, ours.args, ours.lr, a.threads, a.steps);
  const viewShapes = host.viewSizes.map(([w, h]) => (w === h ? `${w}` : `${w}x${h}`)).join('+');
  const regions = Boolean(host.proposals?.[0]![0]?.regions);
  const boxes = host.proposals ? `, proposals: ${regions ? 'region maps' : `${host.proposals[0]!.reduce((n, p) => n + p.boxes.length, 0)} boxes kept in view 0`}` : '';
  const out: CaseOut = {
    seconds: ours.seconds,
    losses: ours.losses,
    case: `${a.method} ${config.backbone.arch} ${a.size}x${a.size} b${config.batchSize}`,
    batchSize: config.batchSize,
    batch: `views ${viewShapes} px${boxes}`,
    backend: info.backend,
    tensorflowVersion: info.tensorflowVersion ?? '?',
    tensorsLeft: tf.memory().numTensors,
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`);
}

/** Runs one case in a child process (caseChild); its stderr (TensorFlow's start-up log) is kept for a failure's note. */
function measureOursInChild(a: CaseArgs): CaseOut | { error: string } {
  const tsx = join(projectRoot(), 'node_modules', '.bin', 'tsx');
  const res = spawnSync(tsx, [fileURLToPath(import.meta.url), 'case', JSON.stringify(a)], { cwd: projectRoot(), encoding: 'utf8', timeout: 60 * 60_000, maxBuffer: 64 << 20 });
  const lines = res.stdout?.split('\n') ?? [];
  const line = lines.find((l) => l.startsWith('RESULT '));
  if (res.status === 0 && line) return JSON.parse(line.slice('RESULT '.length)) as CaseOut;
  const thrown = lines.find((l) => l.startsWith('ERROR '));
  if (thrown) return { error: JSON.parse(thrown.slice('ERROR '.length)) as string };
  // tsx's wrapper turns its child's SIGKILL (the kernel's OOM killer) into exit status 137
  const killed = res.signal === 'SIGKILL' || res.status === 137;
  const why = killed ? 'killed (SIGKILL: out of memory?)' : res.signal ? `killed by ${res.signal}` : `exit ${res.status}`;
  const last = (res.stderr || res.error?.message || '').trim().split('\n').filter((l) => !/^(WARNING: All log|I0000|To enable the following)/.test(l)).slice(-3).join(' ');
  return { error: `${why}${last ? `: ${last}` : ''}` };
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
  const byDefault = (m: MethodName, size: number) => (archOf(m) === ARCH.vit ? VIT_SIZES.includes(size) : DEFAULT_SIZES.includes(size) || ALSO_224.includes(m));
  return sizes.flatMap((size) => o.methods.filter((m) => o.sizes || byDefault(m, size)).map((method) => ({ method, size })));
}

export async function main(args: string[] = []): Promise<BenchResult> {
  const options = parseArgs(args);
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
  let backend = '';
  let peakRssMiB = 0;
  const work = mkdtempSync(join(tmpdir(), 'densepipe-train-throughput-'));
  try {
    for (const { method, size } of cases(options)) {
      const label = `${method}@${size}`;
      const specDir = join(options.keep ?? work, label);
      const ours = measureOursInChild({ method, size, steps: options.steps, threads, specDir, storeDir: join(work, 'store') });
      if ('error' in ours) {
        notes.push(`ours ${label} failed: ${ours.error}`);
        process.stderr.write(`train-throughput ${label}: ours failed: ${ours.error}\n`);
        continue;
      }
      backend = `tfjs-node backend '${ours.backend}' (TensorFlow ${ours.tensorflowVersion})`;
      const ref = measureReference(options.python, specDir, reference.env);
      if (!options.keep) rmSync(specDir, { recursive: true, force: true });
      const oursT = median(ours.seconds);
      let refT: number | null = null;
      let refRss: number | null = null;
      if ('error' in ref) notes.push(`reference ${label}: ${ref.error}`);
      else {
        refT = median(ref.seconds);
        refRss = ref.peakRssMiB;
        torchVersion = ref.torch;
        if (!described.has(method)) notes.push(`reference ${method}: ${ref.reference}`);
        described.add(method);
        // A netlib (reference) BLAS runs a 512² matmul at ~2 GFLOP/s; OpenBLAS on one core is > 20.
        if (ref.blasGflops < 10 && !notes.some((n) => n.startsWith('SLOW BLAS'))) {
          notes.push(`SLOW BLAS: PyTorch's matmul ran at ${ref.blasGflops.toFixed(1)} GFLOP/s (reference BLAS?); install libopenblas0-pthread for a fair reference`);
        }
      }
      if (ours.tensorsLeft > 0) notes.push(`LEAK ${label}: ${ours.tensorsLeft} tensors still allocated after the case disposed its method, optimizer and batch`);
      peakRssMiB = Math.max(peakRssMiB, ours.peakRssMiB);
      stepTime[label] = { ours: oursT, ref: refT };
      // progress on stderr (the table comes at the end): which case a long or killed run had reached, and the memory
      // each side needed (the case's own process; this process stays small: it only orchestrates)
      process.stderr.write(
        `train-throughput ${label}: ours ${oursT.toFixed(3)} s/step, reference ${refT === null ? 'n/a' : `${refT.toFixed(3)} s/step`}; ` +
          `peak RSS ours ${ours.peakRssMiB} MiB, reference ${refRss ?? 'n/a'} MiB, bench ${Math.round(process.memoryUsage.rss() / 2 ** 20)} MiB; load ${loadavg()[0]!.toFixed(2)}\n`,
      );
      notes.push(`batch ${label}: ${ours.batch}`);
      rows.push({
        case: ours.case,
        ours: timing(oursT, ours.batchSize),
        reference: refT === null ? null : timing(refT, ours.batchSize),
        speedup: refT === null ? null : refT / oursT,
        peakRssMiB: { ours: ours.peakRssMiB, reference: refRss },
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
      `${small.length ? `; ${small.join(', ')} at its module's smallScale arguments (paper sizes are for 800-px images), frozen CNN at random init (backboneKey null, both sides)` : ''}; backbone ${ARCH.resnet} batch ${BATCH.resnet}, ViT methods ${ARCH.vit} batch ${BATCH.vit} (memory: ours needs ~19 GB for MoCo v3 at batch 32)`,
  );
  notes.push(
    `ours: ${backend || 'n/a'}, one child process per case; reference: PyTorch ${torchVersion || 'n/a'} eager CPU, ${threads} threads both; ` +
      `one fixed feeder batch per case, median of ${options.steps} steps (steps ${FIRST_TIMED_STEP}.. of a nominal ${TOTAL}) after 1 warm-up; ` +
      `load average (1 min) at start ${load0.toFixed(2)}, at end ${loadavg()[0]!.toFixed(2)} on ${threads} cores (a shared machine inflates both sides)`,
  );
  // A run of some methods does not replace the full run's file: it is written beside it, named by its methods.
  const all = options.methods.length === METHOD_NAMES.length;
  return {
    name: all ? 'train-throughput' : `train-throughput-${options.methods.join('-')}`,
    machine: { cpus: threads, model: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30) },
    rows,
    peakRssMiB: Math.max(peakRssMiB, Math.round(process.resourceUsage().maxRSS / 1024)),
    loadAverage: { start: loadStart.map((l) => Math.round(l * 100) / 100), end: loadavg().map((l) => Math.round(l * 100) / 100) },
    notes,
  };
}

const invokedDirectly = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (invokedDirectly && process.argv[2] === 'case') {
  try {
    await caseChild(JSON.parse(process.argv[3]!) as CaseArgs);
  } catch (err) {
    process.stdout.write(`ERROR ${JSON.stringify((err as Error).message.split('\n')[0])}\n`);
    process.exitCode = 1;
  }
}
