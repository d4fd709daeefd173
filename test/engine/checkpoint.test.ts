import { beforeAll, describe, expect, it } from 'vitest';
import { IncompatibleArtifactError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import { checkpointIO } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  encodeTrainingState,
  optimizerComponent,
  paramsComponent,
  peekTrainingState,
  queuesComponent,
  restoreTrainingState,
  type TrainingStateSpec,
} from '../../stages/engine/checkpoint.js';
import { emaUpdate, copyWeights } from '../../stages/engine/ema.js';
import { disposeGradients, namedGradients } from '../../stages/engine/grads.js';
import { mocoV2Head } from '../../stages/engine/heads.js';
import { SGD } from '../../stages/engine/optim.js';
import { MemoryQueue } from '../../stages/engine/queue.js';
import { ResNet } from '../../stages/engine/resnet.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** A miniature MoCo-like training setup: online + EMA encoder with heads, queue, SGD, RNG. */
function makeRun(seed: number, width = 8) {
  const online = ResNet.preset('resnet-tiny', { baseWidth: width }, seed);
  const head = mocoV2Head(online.params, 'fc', online.outChannels, 16, seed);
  const ema = ResNet.preset('resnet-tiny', { baseWidth: width }, seed + 1000);
  const emaHead = mocoV2Head(ema.params, 'fc', ema.outChannels, 16, seed + 1000);
  copyWeights(ema.params.vars, online.params.vars);
  const queue = new MemoryQueue(10, 16, seed); // 10 is not a multiple of the batch (4): pointer wraps
  const opt = new SGD(online.params.vars, { momentum: 0.9, weightDecay: 1e-4 }, online.params.info);
  const rng = Rng.fromSeed('augment', seed);
  const spec: TrainingStateSpec = {
    signature: { model: 'resnet-tiny', width, method: 'moco-like' },
    components: { model: paramsComponent(online.params), ema: paramsComponent(ema.params), optimizer: optimizerComponent(opt), queues: queuesComponent([queue]) },
  };
  const step = (x: tf.Tensor4D) => {
    const { loss, grads } = namedGradients(() => {
      const q = tf.tidy(() => tf.div(head.apply(online.apply(x, { training: true }).pooled, { training: true }), 1)) as tf.Tensor2D;
      const k = emaHead.apply(ema.apply(x, { training: true }).pooled, { training: true });
      // A contrastive-shaped loss: positives q.k against the queue.
      const qn = tf.div(q, tf.norm(q, 'euclidean', 1, true));
      const kn = tf.div(k, tf.norm(k, 'euclidean', 1, true));
      const pos = tf.sum(tf.mul(qn, kn), 1, true);
      const neg = tf.matMul(qn, queue.buffer as tf.Tensor2D, false, true);
      const logits = tf.div(tf.concat([pos, neg], 1), 0.2);
      const labels = tf.oneHot(tf.zeros([x.shape[0]], 'int32'), logits.shape[1]!);
      return tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;
    }, online.params.vars);
    opt.step(grads, 0.05);
    disposeGradients(grads);
    emaUpdate(ema.params.vars, online.params.vars, 0.99);
    const keys = tf.tidy(() => {
      const k = emaHead.apply(ema.apply(x, { training: true }).pooled, { training: true });
      return tf.div(k, tf.norm(k, 'euclidean', 1, true)) as tf.Tensor2D;
    });
    queue.dequeueAndEnqueue(keys);
    keys.dispose();
    rng.next();
    const value = loss.dataSync()[0]!;
    loss.dispose();
    return value;
  };
  const dispose = () => {
    online.dispose();
    ema.dispose();
    opt.dispose();
    queue.dispose();
  };
  return { online, ema, queue, opt, rng, spec, step, dispose };
}

const batch = (i: number) => tf.randomNormal([4, 16, 16, 3], 0, 1, 'float32', 100 + i) as tf.Tensor4D;

describe('training state checkpoints', () => {
  it('resume after a checkpoint reproduces the uninterrupted run exactly; tensor count stays flat', async () => {
    const reference = makeRun(1);
    const xs = [0, 1, 2, 3, 4, 5].map(batch);
    const counts: number[] = [];
    let saved: Uint8Array | null = null;
    const refLosses: number[] = [];
    for (let i = 0; i < 6; i++) {
      refLosses.push(reference.step(xs[i]!));
      counts.push(tf.memory().numTensors);
      if (i === 2) saved = await encodeTrainingState(reference.spec, { step: 3, rng: { augment: reference.rng.state }, extra: { epoch: 0 } });
    }
    expect(new Set(counts).size).toBe(1); // no leak across steps (EMA, queue, optimizer included)

    const resumed = makeRun(2); // different seed: everything must come from the checkpoint
    const values = restoreTrainingState(saved!, resumed.spec, 'ckpt');
    expect(values.step).toBe(3);
    expect(values.extra).toEqual({ epoch: 0 });
    resumed.rng.state = values.rng.augment!;
    expect(resumed.queue.pointer).toBe((3 * 4) % 10); // a fresh queue would be at 0
    expect(resumed.opt.stepCount).toBe(3);
    const resumedLosses = [3, 4, 5].map((i) => resumed.step(xs[i]!));
    resumedLosses.forEach((l, i) => expect(l).toBeCloseTo(refLosses[3 + i]!, 5));
    expect(resumed.rng.state).toBe(reference.rng.state);
    for (const [name, v] of reference.online.params.vars) {
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(tf.cast(v, 'float32'), tf.cast(resumed.online.params.get(name), 'float32')))).dataSync()[0]!);
      expect(diff, name).toBeLessThan(1e-5);
    }
    tf.dispose(xs);
    reference.dispose();
    resumed.dispose();
  });

  it('refuses another model, missing/extra tensors, mismatched shapes and truncated files without touching the model', async () => {
    const a = makeRun(1);
    const bytes = await encodeTrainingState(a.spec, { step: 1, rng: {}, extra: {} });

    const wider = makeRun(3, 16);
    const before = wider.online.params.get('conv1.weight').dataSync().slice();
    // Same signature, different shapes: shape mismatch listed by name.
    const sameSig = { ...wider.spec, signature: a.spec.signature };
    expect(() => restoreTrainingState(bytes, sameSig, 'ckpt-a')).toThrow(/ckpt-a: shape\/dtype mismatches \(\d+\): model\/conv1.weight: saved F32\[3,3,3,8\] vs model F32\[3,3,3,16\]/);
    expect(() => restoreTrainingState(bytes, wider.spec, 'ckpt-a')).toThrow(/another model\/method: width: checkpoint 8 vs now 16/);
    expect(Array.from(wider.online.params.get('conv1.weight').dataSync())).toEqual(Array.from(before));

    // A component the checkpoint does not have (e.g. resuming into a method with an EMA head).
    const extraVar = tf.variable(tf.zeros([2]));
    const withExtra: TrainingStateSpec = { ...a.spec, components: { ...a.spec.components, predictor: { tensors: new Map([['w', extraVar]]) } } };
    expect(() => restoreTrainingState(bytes, withExtra)).toThrow(/missing tensors \(1\): predictor\/w/);
    const fewer: TrainingStateSpec = { ...a.spec, components: { model: a.spec.components.model! } };
    expect(() => restoreTrainingState(bytes, fewer)).toThrow(/unexpected tensors/);

    expect(() => restoreTrainingState(bytes.subarray(0, bytes.length - 10), a.spec, 'ckpt-a')).toThrow(IncompatibleArtifactError);
    expect(() => restoreTrainingState(bytes.subarray(0, bytes.length - 10), a.spec, 'ckpt-a')).toThrow(/truncated/);
    expect(() => restoreTrainingState(bytes.subarray(0, 5), a.spec)).toThrow(/truncated/);
    expect(() => restoreTrainingState(new TextEncoder().encode('not a checkpoint at all'), a.spec)).toThrow(IncompatibleArtifactError);
    extraVar.dispose();
    a.dispose();
    wider.dispose();
  });

  it('is a valid safetensors file and goes through ctx.checkpoints (save / latest / read)', async () => {
    const a = makeRun(1);
    const bytes = await encodeTrainingState(a.spec, { step: 7, rng: { augment: 42 }, extra: {} });
    expect(peekTrainingState(bytes)).toEqual({ step: 7, signature: { method: 'moco-like', model: 'resnet-tiny', width: 8 }, tensorCount: decodeSafetensors(bytes).tensors.size });
    const decoded = decodeSafetensors(bytes);
    expect(decoded.metadata.format).toBe('densepipe.training-state/v1');
    expect(decoded.tensors.has('model/layer1.0.conv1.weight')).toBe(true);
    expect(decoded.tensors.has('optimizer/momentum_buffer/layer1.0.conv1.weight')).toBe(true);
    expect(decoded.tensors.has('queues/queue')).toBe(true);
    expect(decoded.tensors.get('model/bn1.num_batches_tracked')!.dtype).toBe('I32');
    const dir = mkdtempSync(join(tmpdir(), 'engine-ckpt-'));
    try {
      const io = checkpointIO(new FileArtifactStore(dir), 'checkpoints/test');
      await io.save(7, { 'state.safetensors': bytes }, { step: 7 });
      const latest = await io.latest();
      const back = await latest!.read('state.safetensors');
      const other = makeRun(5);
      expect(restoreTrainingState(back, other.spec).rng.augment).toBe(42);
      other.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    a.dispose();
  });
});
