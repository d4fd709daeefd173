/**
 * Where one training step's time goes, per TensorFlow kernel (issue 18 §3: "profile on this machine first").
 *
 *   npx tsx scripts/profile-step.ts [method=mocov2] [size=64] [batch=32] [arch=resnet18] [steps=3] [top=25]
 *
 * Builds the method as the pretraining stage does (pretrainConfigSchema → createMethod + createOptimizer →
 * method.step at the scheduled learning rate, steps 900.. of a nominal 1000 as `npm run bench -- train-throughput`),
 * on random ImageNet-normalised views with whole-image geometry (methods that read proposals or labels are refused:
 * use the bench for those), and runs `steps` steps under tf.profile after one warm-up. Prints, per kernel name, the
 * total time over the profiled steps, its share and its calls, then the wall time per step and what no kernel
 * accounts for (JavaScript, tensor bookkeeping, host reads). Kernel times are wall times of each synchronous
 * TensorFlow call on the native backend, so they include the op's dispatch.
 */
import { cpus, loadavg } from 'node:os';
import { Rng } from '../core/rng.js';
import { initBackend, tf } from '../core/tf.js';
import { methodModule, type MethodName } from '../stages/methods/index.js';
import type { MethodBatch } from '../stages/methods/shared/contract.js';
import { createMethod, createOptimizer, learningRate, pretrainConfigSchema } from '../stages/pretrain/index.js';

const opts: Record<string, string> = { method: 'mocov2', size: '64', batch: '32', arch: 'resnet18', steps: '3', top: '25' };
for (const arg of process.argv.slice(2)) {
  const [k, v] = arg.split('=');
  if (!k || v === undefined || !(k in opts)) throw new Error(`profile-step: unknown argument '${arg}' (keys: ${Object.keys(opts).join(', ')})`);
  opts[k] = v;
}
const method = opts.method as MethodName;
const size = Number(opts.size), batchSize = Number(opts.batch), steps = Number(opts.steps);
const TOTAL = 1000, FIRST = 900;

const info = await initBackend('tensorflow');
const module = methodModule(method);
if (module.consumes.proposals || module.consumes.labels) throw new Error(`profile-step: ${method} reads proposals or labels; profile it through the bench's feeder instead`);
const hasShuffle = Object.hasOwn(module.args.shape, 'shuffleBnGroups');
const config = pretrainConfigSchema.parse({ method, backbone: { arch: opts.arch }, batchSize, imageSize: size, args: hasShuffle ? { shuffleBnGroups: 1 } : {}, steps: TOTAL });
const model = createMethod(config, TOTAL);
const optimizer = createOptimizer(config, model.online);
const specs = module.consumes.views(size, config.args as never);
const data = new Rng(1);
const views = specs.map((s) => {
  const side = s.size;
  return tf.tensor4d(Float32Array.from({ length: batchSize * side * side * 3 }, () => data.normal()), [batchSize, side, side, 3]);
});
const geometry = specs.map((s) =>
  Array.from({ length: batchSize }, () => ({ imageWidth: s.size, imageHeight: s.size, crop: [0, 0, s.size, s.size] as [number, number, number, number], width: s.size, height: s.size, flipped: false })),
);
const batch: MethodBatch = { views, geometry };
const run = (step: number) => {
  const lr = learningRate(config, step, TOTAL) * (model.lrScale?.(step, TOTAL) ?? 1);
  return model.step(batch, { step, totalSteps: TOTAL, rng: Rng.fromSeed('pretrain-shuffle-bn', config.seed, step), applyGradients: (g) => optimizer.step(g, lr) });
};

run(FIRST - 1); // warm-up: kernels built, memory pools grown
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const profile = await tf.profile(() => {
  for (let i = 0; i < steps; i++) run(FIRST + i);
});
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);

const byName = new Map<string, { ms: number; calls: number }>();
for (const k of profile.kernels) {
  const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
  e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
  e.calls += 1;
  byName.set(k.name, e);
}
const kernelMs = [...byName.values()].reduce((a, e) => a + e.ms, 0);
const rows = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(opts.top));
console.log(`${method} ${opts.arch} ${size}px b${batchSize}: ${steps} profiled steps; TensorFlow ${info.tensorflowVersion}; ${cpus()[0]?.model} ×${cpus().length}; load ${loadavg()[0]!.toFixed(2)}; TF_ENABLE_ONEDNN_OPTS=${process.env.TF_ENABLE_ONEDNN_OPTS}`);
console.log(`${'kernel'.padEnd(28)} ${'ms/step'.padStart(9)} ${'share'.padStart(6)} ${'calls/step'.padStart(10)}`);
for (const [name, e] of rows) console.log(`${name.padEnd(28)} ${(e.ms / steps).toFixed(1).padStart(9)} ${((100 * e.ms) / kernelMs).toFixed(1).padStart(5)}% ${(e.calls / steps).toFixed(0).padStart(10)}`);
const perStep = (wall * 1000) / steps;
console.log(`wall ${perStep.toFixed(0)} ms/step (under the profiler); kernels ${(kernelMs / steps).toFixed(0)} ms/step; outside kernels ${(perStep - kernelMs / steps).toFixed(0)} ms/step; ${(profile.kernels.length / steps).toFixed(0)} kernel calls/step`);
console.log(`process CPU per step: user ${(cpu.user / 1000 / steps).toFixed(0)} ms, system ${(cpu.system / 1000 / steps).toFixed(0)} ms`);
views.forEach((v) => v.dispose());
optimizer.dispose();
model.dispose();
