/**
 * The small supervised loop every trained evaluation head shares: seeded shuffling per epoch,
 * SGD with momentum and a cosine learning rate, and a checkpoint after each epoch (weights,
 * optimizer slots, the shuffling RNG's state) so a killed run resumes at the next epoch and ends
 * with the same weights as an uninterrupted one.
 */
import { throwIfAborted } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import { tf } from '../../core/tf.js';
import { namedGradients, disposeGradients } from '../engine/grads.js';
import { SGD } from '../engine/optim.js';
import { warmupCosineLr } from '../engine/schedule.js';

export interface EpochCheckpointer {
  load(): Promise<{ epoch: number; rngState: number; stepCount: number; restore(vars: Map<string, tf.Variable>): void } | null>;
  save(epoch: number, vars: Map<string, tf.Variable>, rngState: number, stepCount: number): Promise<void>;
}

/** What every downstream head trained with `trainLoop` (SGD, cosine schedule, epoch checkpoints) takes. */
export interface SgdTrainingOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  checkpointer?: EpochCheckpointer;
  signal?: AbortSignal;
  /** After each epoch; `extra` carries the learning rate of its last step and its throughput. */
  onEpoch?(epoch: number, meanLoss: number, seconds: number, extra?: { lr: number; imagesPerSecond: number }): void;
}

/** Just the SGD-loop fields of a task's options (which also carry task fields such as `mode`). */
export function sgdTrainingOptions(o: SgdTrainingOptions): SgdTrainingOptions {
  return { epochs: o.epochs, batchSize: o.batchSize, lr: o.lr, momentum: o.momentum, weightDecay: o.weightDecay, checkpointer: o.checkpointer, signal: o.signal, onEpoch: o.onEpoch };
}

export interface TrainLoopOptions extends SgdTrainingOptions {
  /** Trainable parameters (and buffers, which are checkpointed but not optimised). */
  params: Map<string, tf.Variable>;
  numSamples: number;
  seed: number | string;
  /** Loss of the samples at these indices; called inside the gradient tape. */
  loss(indices: number[]): tf.Scalar;
}

export async function trainLoop(o: TrainLoopOptions): Promise<{ epochsRun: number; finalLoss: number; secondsPerEpoch: number[] }> {
  const optimizer = new SGD(o.params, { momentum: o.momentum, weightDecay: o.weightDecay });
  const stepsPerEpoch = Math.ceil(o.numSamples / o.batchSize);
  const totalSteps = stepsPerEpoch * o.epochs;
  const rng = Rng.fromSeed('downstream-train', o.seed);
  let startEpoch = 0;
  const allState = () => new Map([...o.params, ...optimizer.slots()]);
  const resume = await o.checkpointer?.load();
  if (resume) {
    resume.restore(allState());
    rng.state = resume.rngState;
    optimizer.loadCounters({ stepCount: resume.stepCount });
    startEpoch = resume.epoch;
  }
  let finalLoss = NaN;
  const secondsPerEpoch: number[] = [];
  let epochsRun = 0;
  try {
    for (let epoch = startEpoch; epoch < o.epochs; epoch++) {
      const t0 = performance.now();
      const order = rng.shuffle(Array.from({ length: o.numSamples }, (_, i) => i));
      let sum = 0;
      let lastLr = NaN;
      for (let s = 0; s < stepsPerEpoch; s++) {
        throwIfAborted(o.signal);
        const batch = order.slice(s * o.batchSize, (s + 1) * o.batchSize);
        const lr = warmupCosineLr(optimizer.stepCount, { baseLr: o.lr, warmupSteps: 0, totalSteps });
        const { loss, grads } = namedGradients(() => o.loss(batch), o.params);
        optimizer.step(grads, lr);
        lastLr = lr;
        sum += (await loss.data())[0]!;
        loss.dispose();
        disposeGradients(grads);
      }
      finalLoss = sum / stepsPerEpoch;
      const seconds = (performance.now() - t0) / 1000;
      secondsPerEpoch.push(seconds);
      epochsRun++;
      await o.checkpointer?.save(epoch + 1, allState(), rng.state, optimizer.stepCount);
      o.onEpoch?.(epoch + 1, finalLoss, seconds, { lr: lastLr, imagesPerSecond: o.numSamples / Math.max(seconds, 1e-9) });
    }
  } finally {
    optimizer.dispose();
  }
  return { epochsRun, finalLoss, secondsPerEpoch };
}
