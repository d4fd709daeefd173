/**
 * Where one MoCo v2 training step spends its time, phase by phase, on the configuration of
 * `npm run bench -- train-throughput` (ResNet-18, batch 32, queue 65536, native TensorFlow backend).
 * The phases are the ones `momentumStep` (stages/methods/shared/momentum-encoder.ts) runs, timed separately; the native backend executes
 * eagerly and synchronously, so a wall-clock timer around each phase measures that phase.
 *   npx tsx stages/engine/tools/profile-mocov2-step.ts [size=64] [steps=5]
 */
import { Rng } from '../../../core/rng.js';
import { initBackend, tf } from '../../../core/tf.js';
import { emaUpdate } from '../ema.js';
import { namedGradients } from '../grads.js';
import { SGD } from '../optim.js';
import { mocov2Embed, mocov2Loss, type MoCoV2 } from '../../methods/mocov2.js';
import { enqueueKeys } from '../../methods/shared/contrast.js';
import { encodeShuffled } from '../../methods/shared/momentum-encoder.js';
import { createMethod, learningRate, pretrainConfigSchema } from '../../pretrain/index.js';

const size = Number(process.argv[2] ?? 64);
const steps = Number(process.argv[3] ?? 5);
const BATCH = 32;
await initBackend('tensorflow');

const config = pretrainConfigSchema.parse({ method: 'mocov2', backbone: { arch: 'resnet18' }, batchSize: BATCH, args: { queueSize: 65536, shuffleBnGroups: 1 }, imageSize: size, steps: steps + 1 });
const model = createMethod(config) as MoCoV2;
const optimizer = new SGD(model.online.trainable(), { momentum: config.optimizer.momentum, weightDecay: config.optimizer.weightDecay }, model.online.info);
const random = (seed: number) => tf.tidy(() => tf.randomNormal([BATCH, size, size, 3], 0, 1, 'float32', seed) as tf.Tensor4D);
const [view0, view1] = [random(1), random(2)];

const phases = ['ema', 'key forward', 'query fwd+bwd', 'sgd', 'enqueue', 'readback', 'whole step'] as const;
const totals = new Map<string, number[]>(phases.map((p) => [p, []]));
function timed<T>(phase: string, record: boolean, fn: () => T): T {
  const t0 = performance.now();
  const out = fn();
  if (record) totals.get(phase)!.push((performance.now() - t0) / 1000);
  return out;
}

for (let step = 0; step <= steps; step++) {
  const record = step > 0; // the first step pays for kernel set-up
  const lr = learningRate(config, step, steps + 1);
  const rng = new Rng(step);
  timed('ema', record, () => emaUpdate(model.momentumEncoder.vars, model.online.vars, model.args.momentum, 'skip'));
  const keys = timed('key forward', record, () => tf.tidy(() => encodeShuffled(view1, 1, rng, (x, opts) => ({ k: mocov2Embed(model.k.head, model.k.backbone.apply(x, opts)) }))));
  const { loss, grads } = timed('query fwd+bwd', record, () =>
    namedGradients(() => mocov2Loss(model.q.head, model.q.backbone.apply(view0, { training: true, bnGroups: 1 }), keys.k, model.queues.queue.buffer as tf.Tensor2D, model.args.temperature), model.online.trainable()),
  );
  timed('sgd', record, () => optimizer.step(grads, lr));
  timed('enqueue', record, () => enqueueKeys(model.queues.queue, keys.k));
  timed('readback', record, () => loss.dataSync());
  tf.dispose([loss, ...grads.values(), keys.k]);
  // The same step through the method's own code path, interleaved so that load changes hit both alike.
  timed('whole step', record, () => model.step({ views: [view0, view1], geometry: [] }, { step, totalSteps: steps + 1, rng: new Rng(step), applyGradients: (g) => optimizer.step(g, lr) }));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
let sum = 0;
for (const p of phases) {
  const m = median(totals.get(p)!);
  if (p !== 'whole step') sum += m;
  process.stdout.write(`${p.padEnd(18)} ${(m * 1000).toFixed(1).padStart(8)} ms\n`);
}
process.stdout.write(`${'sum of phases'.padEnd(18)} ${(sum * 1000).toFixed(1).padStart(8)} ms   (ResNet-18 ${size}px, B=${BATCH}, K=65536, median of ${steps}; tensors=${tf.memory().numTensors})\n`);
tf.dispose([view0, view1]);
optimizer.dispose();
model.dispose();
