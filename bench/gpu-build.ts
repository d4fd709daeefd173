/**
 * The GPU build of TensorFlow, proven on a machine without a GPU (issue 18, section 4).
 *
 * `scripts/setup.sh --gpu` builds the @tensorflow/tfjs-node-gpu binding from source against libtensorflow 2.21.0 from
 * the PyPI `tensorflow` wheel (CUDA 12) and lays out the nvidia-*-cu12 runtime wheels beside it (docker/gpu-wheels.txt,
 * docker/stage-libtensorflow-gpu.py). This bench loads that binding, says what TensorFlow sees, and trains: it does
 * not need a GPU, since a CUDA build of TensorFlow falls back to the CPU when cuInit finds no driver.
 *
 * What it checks, and fails on: the binding loads through core/tf.ts's DENSEPIPE_TFJS_NODE hook and reports
 * TensorFlow 2.21.0; the mapped libtensorflow_framework.so.2 is a CUDA build (it references libcuda.so.1, which the
 * CPU build never does) and is the staged one; every CUDA runtime library of the staged tree loads (`check`);
 * a few training steps of MoCo v2 (configs/methods/mocov2.yaml: resnet-tiny, 32 px, batch 8) give finite losses.
 * Reference, in the same run: the same steps on the CPU binding (node_modules/@tensorflow/tfjs-node, the
 * tensorflow-cpu wheel). speedup = CPU build's time / GPU build's time: on this machine both run the same CPU kernels,
 * so about 1; the losses are compared too. Each build runs in its own child process (one libtensorflow per process).
 *
 * Usage: npm run bench -- gpu-build [steps=N] [binding=DIR] [arch=A] [size=PX] [batch=B] [require-gpu=1] [name=NAME]
 *   binding: a built tfjs-node-gpu package (default .gpu/node_modules/@tensorflow/tfjs-node-gpu); arch/size/batch
 *   override the config's backbone, image size and batch; require-gpu=1 fails unless the GPU build runs on a GPU;
 *   name: the result's name (bench/results/NAME.json; default gpu-build). On a GPU machine, bench/gpu-check.sh runs it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../cli/env.js';
import { loadRunConfig } from '../core/config.js';
import { Rng } from '../core/rng.js';
import { localContext, runStage } from '../core/stage.js';
import { FileArtifactStore } from '../core/store/index.js';
import { describeDevices, initBackend, tensorflowDevices, TFJS_NODE_ENV, tf, type TensorflowDevices } from '../core/tf.js';
import { shardStage } from '../stages/data/index.js';
import { methodModule } from '../stages/methods/index.js';
import { createMethod, createOptimizer, disposeBatch, learningRate, toMethodBatch } from '../stages/pretrain/index.js';
import { MethodBatchFeeder } from '../stages/pretrain/feeder.js';
import type { BenchResult } from './_run.js';

const DEFAULT_STEPS = 5;
const EXPECTED_TF = '2.21.0';
const CONFIG = 'configs/methods/mocov2.yaml';
const DEFAULT_BINDING = '.gpu/node_modules/@tensorflow/tfjs-node-gpu';

/** What one child process measured with one binding. */
/** Overrides of configs/methods/mocov2.yaml's pretrain section, passed to the children. */
interface CaseOverrides {
  arch?: string;
  size?: number;
  batch?: number;
  /** Stop before training when the binding sees no GPU (require-gpu=1, GPU build only). */
  requireGpu?: boolean;
}

interface BuildRun {
  binding: string;
  tensorflowVersion: string;
  devices: TensorflowDevices;
  describe: string;
  case: string;
  losses: number[];
  secondsPerStep: number[];
  /** The first step (not in secondsPerStep): graph-free eager kernels' first use, cuDNN autotuning, PTX JIT on a GPU. */
  warmupSeconds: number;
  tensorLeak: number;
  /** TensorFlow's own stderr lines about CUDA / GPUs (the CUDA build's evidence that it looked). */
  tfLog: string[];
}

/** Child mode: load the binding named by DENSEPIPE_TFJS_NODE (or the default one), train `steps` steps, print JSON. */
async function child(steps: number, overrides: CaseOverrides): Promise<void> {
  const info = await initBackend('tensorflow');
  const devices = tensorflowDevices();
  if (overrides.requireGpu && !devices.gpu) {
    process.stdout.write(`RESULT ${JSON.stringify({ binding: info.binding, tensorflowVersion: info.tensorflowVersion, devices, describe: describeDevices(devices), case: 'no GPU: not trained', losses: [], secondsPerStep: [], warmupSeconds: 0, tensorLeak: 0 })}\n`);
    return;
  }
  const { config } = await loadRunConfig(join(projectRoot(), CONFIG), {
    pretrain: {
      ...(overrides.arch ? { backbone: { arch: overrides.arch } } : {}),
      ...(overrides.size ? { imageSize: overrides.size } : {}),
      ...(overrides.batch ? { batchSize: overrides.batch } : {}),
    },
  });
  const pretrain = config.pretrain;
  const work = mkdtempSync(join(tmpdir(), 'densepipe-gpu-build-'));
  try {
    const store = new FileArtifactStore(join(work, 'store'));
    const dataset = (await runStage(shardStage, localContext(store), {}, config.data)).ref;
    const module = methodModule(pretrain.method);
    const feeder = await MethodBatchFeeder.open({
      store,
      datasetManifestKey: dataset.result.datasetManifestKey,
      split: 'train',
      seed: pretrain.seed,
      batchSize: pretrain.batchSize,
      views: module.consumes.views(pretrain.imageSize, pretrain.args as never),
      sharedFlip: module.consumes.sharedFlip,
    });
    const host = await feeder.nextBatch().finally(() => feeder.close());
    const total = Math.max(pretrain.steps, steps + 1);
    const model = createMethod(pretrain, total);
    const optimizer = createOptimizer(pretrain, model.online);
    const batch = toMethodBatch(host, pretrain.batchSize);
    const before = tf.memory().numTensors;
    const losses: number[] = [];
    const seconds: number[] = [];
    let warmupSeconds = 0;
    for (let step = 0; step <= steps; step++) {
      const lr = learningRate(pretrain, step, total) * (model.lrScale?.(step, total) ?? 1);
      const t0 = performance.now();
      const r = model.step(batch, { step, totalSteps: total, rng: Rng.fromSeed('pretrain-shuffle-bn', pretrain.seed, step), applyGradients: (g) => optimizer.step(g, lr) });
      const dt = (performance.now() - t0) / 1000; // step reads the loss back, so the step has finished
      if (step > 0) seconds.push(dt);
      else warmupSeconds = dt;
      losses.push(r.loss);
    }
    const tensorLeak = tf.memory().numTensors - before;
    disposeBatch(batch);
    optimizer.dispose();
    model.dispose();
    const run: Omit<BuildRun, 'tfLog'> = {
      binding: info.binding ?? 'unknown',
      tensorflowVersion: info.tensorflowVersion ?? 'unknown',
      devices,
      describe: describeDevices(devices),
      case: `${pretrain.method} ${pretrain.backbone.arch} ${pretrain.imageSize}px batch ${pretrain.batchSize}, ${steps} steps`,
      losses,
      secondsPerStep: seconds,
      warmupSeconds,
      tensorLeak,
    };
    process.stdout.write(`RESULT ${JSON.stringify(run)}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function runChild(binding: string | null, steps: number, overrides: CaseOverrides): BuildRun {
  const env = { ...process.env };
  if (binding) env[TFJS_NODE_ENV] = binding;
  else delete env[TFJS_NODE_ENV];
  const tsx = join(projectRoot(), 'node_modules', '.bin', 'tsx');
  const res = spawnSync(tsx, [fileURLToPath(import.meta.url), 'child', String(steps), JSON.stringify(overrides)], { cwd: projectRoot(), env, encoding: 'utf8', maxBuffer: 64 << 20 });
  const line = res.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (res.status !== 0 || !line) throw new Error(`the ${binding ?? 'CPU'} binding's child failed (exit ${res.status}):\n${res.stderr.slice(-4000)}`);
  const tfLog = res.stderr.split('\n').filter((l) => /cuda|cuInit|gpu|nvidia/i.test(l)).map((l) => l.replace(/^[IWE]\d{4} [\d:. ]+\s+\d+\s+/, ''));
  return { ...(JSON.parse(line.slice('RESULT '.length)) as Omit<BuildRun, 'tfLog'>), tfLog };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

export async function main(args: string[]): Promise<BenchResult> {
  const opts = Object.fromEntries(args.map((a) => a.split('=') as [string, string]));
  const steps = Number(opts.steps ?? DEFAULT_STEPS);
  const overrides: CaseOverrides = { arch: opts.arch, size: opts.size ? Number(opts.size) : undefined, batch: opts.batch ? Number(opts.batch) : undefined };
  const requireGpu = opts['require-gpu'] === '1';
  const binding = join(projectRoot(), opts.binding ?? DEFAULT_BINDING);
  if (!existsSync(join(binding, 'lib', 'napi-v8', 'tfjs_binding.node')))
    throw new Error(`no built tfjs-node-gpu binding at ${binding}: run \`bash scripts/setup.sh --gpu\` first (docs/NATIVE-BACKEND.md, "GPU")`);
  const deps = realpathSync(join(binding, 'deps'));
  const manifest = JSON.parse(readFileSync(join(deps, 'MANIFEST.json'), 'utf8')) as {
    tensorflowVersion: string;
    /** The wheel's tensorflow/python/platform/build_info.py: CUDA and cuDNN versions, GPU architectures. */
    build: Record<string, unknown>;
    wheels: Array<{ file: string; sha256: string; bytes: number }>;
    files: number;
    bytes: number;
  };

  // Every CUDA runtime library of the staged tree loads here, and every directory TensorFlow searches exists.
  const check = spawnSync('python3', [join(projectRoot(), 'docker', 'stage-libtensorflow-gpu.py'), 'check', deps], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`the staged CUDA runtime failed its check:\n${check.stderr}`);

  const gpu = runChild(binding, steps, { ...overrides, requireGpu });
  if (requireGpu && !gpu.devices.gpu) throw new Error(`gpu-build: require-gpu=1, but the GPU build sees no GPU (${gpu.describe}); TensorFlow said: ${gpu.tfLog.join(' | ')}`);
  const cpu = runChild(null, steps, overrides);
  const problems: string[] = [];
  if (gpu.tensorflowVersion !== EXPECTED_TF) problems.push(`the GPU binding reports TensorFlow ${gpu.tensorflowVersion}, not ${EXPECTED_TF}`);
  if (gpu.devices.cudaBuild !== true) problems.push(`the libtensorflow the GPU binding loaded (${gpu.devices.library}) is not a CUDA build`);
  if (!gpu.devices.library || realpathSync(dirname(gpu.devices.library)) !== join(deps, 'lib')) problems.push(`the GPU binding loaded ${gpu.devices.library}, not the staged ${deps}/lib`);
  if (cpu.devices.cudaBuild !== false) problems.push(`the CPU binding's libtensorflow (${cpu.devices.library}) should be a CPU-only build`);
  for (const run of [gpu, cpu]) {
    if (!run.losses.every(Number.isFinite)) problems.push(`${run.binding}: non-finite loss ${run.losses.join(', ')}`);
    if (run.tensorLeak > 0) problems.push(`${run.binding}: ${run.tensorLeak} tensors leaked over the steps`);
  }
  if (problems.length) throw new Error(`gpu-build: ${problems.join('; ')}`);

  const maxRelDiff = Math.max(...gpu.losses.map((l, i) => Math.abs(l - cpu.losses[i]!) / Math.max(Math.abs(cpu.losses[i]!), 1e-12)));
  const timing = (r: BuildRun) => ({ secondsPerStep: median(r.secondsPerStep), warmupSeconds: r.warmupSeconds, firstLoss: r.losses[0]!, lastLoss: r.losses.at(-1)! });
  const gpuTime = median(gpu.secondsPerStep);
  const cpuTime = median(cpu.secondsPerStep);
  const sees = (r: BuildRun) => `${r.devices.gpu ? 'a GPU' : 'no GPU'} (${r.describe})`;
  return {
    name: opts.name ?? 'gpu-build',
    rows: [{ case: gpu.case, ours: timing(gpu), reference: timing(cpu), speedup: cpuTime / gpuTime }],
    tensorflowVersion: gpu.tensorflowVersion,
    tensorflowBuild: manifest.build,
    gpuBuild: { binding: gpu.binding, library: gpu.devices.library, devices: gpu.devices, describe: gpu.describe, losses: gpu.losses, secondsPerStep: gpu.secondsPerStep, tensorflowLog: gpu.tfLog },
    cpuBuild: { binding: cpu.binding, library: cpu.devices.library, devices: cpu.devices, describe: cpu.describe, losses: cpu.losses, secondsPerStep: cpu.secondsPerStep },
    lossMaxRelDiff: maxRelDiff,
    // Timings on a shared machine mean little: the load average says how shared it was.
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
    wheels: manifest.wheels,
    staged: { dir: deps, files: manifest.files, bytes: manifest.bytes },
    cudaRuntimeCheck: check.stdout.trim(),
    notes: [
      `ours = the @tensorflow/tfjs-node-gpu binding on libtensorflow ${gpu.tensorflowVersion} from the PyPI tensorflow wheel (CUDA build: ${gpu.devices.cudaBuild}); it sees ${sees(gpu)}`,
      `reference = the CPU binding (tensorflow-cpu wheel) in the same run; it sees ${sees(cpu)}`,
      `losses of the two builds over ${steps + 1} steps (warm-up included): max relative difference ${maxRelDiff.toExponential(2)}`,
      `TensorFlow's own log, GPU build: ${gpu.tfLog.join(' | ') || '(nothing about CUDA)'}`,
      check.stdout.trim(),
      `staged: ${manifest.wheels.length} wheels (${(manifest.wheels.reduce((s, w) => s + w.bytes, 0) / 2 ** 30).toFixed(2)} GiB downloaded) -> ${manifest.files} files, ${(manifest.bytes / 2 ** 30).toFixed(2)} GiB in ${deps}`,
    ],
  };
}

const invokedDirectly = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (invokedDirectly && process.argv[2] === 'child') await child(Number(process.argv[3] ?? DEFAULT_STEPS), JSON.parse(process.argv[4] ?? '{}') as CaseOverrides);
