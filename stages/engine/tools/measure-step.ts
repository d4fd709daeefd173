/**
 * Seconds per training step of the engine's models on this machine (forward + backward +
 * optimizer), for docs/ENGINE.md. Not a test: it takes a minute.
 *   npx tsx stages/engine/tools/measure-step.ts [steps=5]
 */
import { initBackend, tf } from '../../../core/tf.js';
import { disposeGradients, namedGradients } from '../grads.js';
import { mocoV2Head } from '../heads.js';
import { AdamW, SGD } from '../optim.js';
import { ResNet, type ResNetPreset } from '../resnet.js';
import { VisionTransformer } from '../vit.js';

const steps = Number(process.argv[2] ?? 5);
const info = await initBackend('tensorflow');

function time(label: string, step: () => void, batch: number, size: number): void {
  step(); // warm-up: kernel selection and first allocations
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step();
  const s = (performance.now() - t0) / 1000 / steps;
  process.stdout.write(`${label.padEnd(44)} B=${batch} ${size}px  ${s.toFixed(3)} s/step  ${(batch / s).toFixed(1)} img/s  tensors=${tf.memory().numTensors}\n`);
}

for (const [preset, batch, size] of [
  ['resnet-tiny', 32, 64],
  ['resnet18-w16-cifar', 32, 64],
  ['resnet18', 32, 64],
  ['resnet50', 8, 64],
] as Array<[ResNetPreset, number, number]>) {
  const net = ResNet.preset(preset);
  const head = mocoV2Head(net.params, 'fc', net.outChannels, 128);
  const opt = new SGD(net.params.vars, { momentum: 0.9, weightDecay: 1e-4 }, net.params.info);
  const x = tf.randomNormal([batch, size, size, 3]) as tf.Tensor4D;
  time(`${preset} + MoCo v2 head, SGD (${(net.params.countTrainable() / 1e6).toFixed(2)} M)`, () => {
    const { loss, grads } = namedGradients(() => tf.mean(tf.square(head.apply(net.apply(x, { training: true }).pooled, { training: true }))) as tf.Scalar, net.params.vars);
    opt.step(grads, 0.03);
    disposeGradients(grads);
    loss.dispose();
  }, batch, size);
  x.dispose();
  opt.dispose();
  net.dispose();
}

const vit = VisionTransformer.preset('vit-micro-64');
const vopt = new AdamW(vit.params.vars, { weightDecay: 0.05 }, vit.params.info);
const vx = tf.randomNormal([32, 64, 64, 3]) as tf.Tensor4D;
time(`vit-micro-64, AdamW (${(vit.params.countTrainable() / 1e6).toFixed(2)} M)`, () => {
  const { loss, grads } = namedGradients(() => tf.mean(tf.square(vit.apply(vx).cls)) as tf.Scalar, vit.params.vars);
  vopt.step(grads, 1e-4);
  disposeGradients(grads);
  loss.dispose();
}, 32, 64);
process.stdout.write(`backend ${info.backend} (TensorFlow ${info.tensorflowVersion ?? '-'})\n`);
