/**
 * The one training loop, shared by every pretraining method and the supervised baseline: resume from
 * the latest checkpoint, feed batches, take steps, stop on a diverging loss, report progress, save a
 * checkpoint every N steps or T seconds (and always after the last step), keep the loss curve.
 *
 * Checkpoint = one training-state file (every component of `spec`: model, momentum encoder, optimizer,
 * queues, …; plus step, data cursor, loss curve, throughput so far). Every random draw is a function of
 * (seed, step) or (seed, data cursor), so restoring it reproduces the uninterrupted run's numbers.
 *
 * TensorBoard: every step's loss (and its parts as `loss/<part>`), learning rate and throughput go to
 * `<output prefix>/tensorboard/events.out.tfevents.*` in the store, uploaded every few seconds and at
 * each checkpoint, so the curves are live while the stage runs. A resumed attempt replays the
 * checkpoint's curve into its own file and deletes the earlier attempt's, so the store always holds
 * each step once.
 */
import { TrainingDivergedError, throwIfAborted } from '../../core/errors.js';
import type { StageRunContext } from '../../core/stage.js';
import { StoreEventWriter, tensorboardPrefix } from '../../core/tfevents.js';
import { encodeTrainingState, restoreTrainingState, type TrainingStateSpec } from '../engine/checkpoint.js';
import type { StepResult } from '../methods/shared/contract.js';
import { START_CURSOR, type DataCursor } from './feeder.js';

export interface LossPoint {
  step: number;
  loss: number;
  lr: number;
  [part: string]: number;
}

/** Where batches come from: opened at a cursor, each batch carrying the cursor after it. */
export interface BatchSource<B> {
  next(): Promise<{ batch: B; cursor: DataCursor }>;
  close(): Promise<void>;
}

export interface TrainingLoopOptions<B> {
  ctx: StageRunContext;
  /** What the checkpoint holds; its signature refuses a state from another model or method. */
  spec: TrainingStateSpec;
  /** For messages: 'pretrain', 'supervised baseline'. */
  label: string;
  totalSteps: number;
  batchSize: number;
  checkpointEvery: { steps: number; seconds: number };
  open(cursor: DataCursor): Promise<BatchSource<B>>;
  learningRate(step: number): number;
  /** One optimisation step on `batch` at `lr`; the caller owns and disposes whatever it makes of the batch. */
  step(batch: B, step: number, lr: number): StepResult;
}

export interface TrainingLoopResult {
  steps: number;
  curve: LossPoint[];
  resumedFromStep: number;
  /** Mean throughput of the timed steps over every attempt (the first step of each attempt left out). */
  imagesPerSecond: number;
}

const STATE_FILE = 'state.safetensors';

/** TensorBoard tags of one curve point: `loss`, `lr`, and each loss part as `loss/<part>`. */
export function curveScalars(point: LossPoint): Record<string, number> {
  const { step: _s, loss, lr, ...parts } = point;
  return { loss, lr, ...Object.fromEntries(Object.entries(parts).map(([k, v]) => [`loss/${k}`, v])) };
}

export async function runTrainingLoop<B>(o: TrainingLoopOptions<B>): Promise<TrainingLoopResult> {
  const { ctx, spec, totalSteps: total, batchSize } = o;
  let step = 0;
  let cursor: DataCursor = START_CURSOR;
  let curve: LossPoint[] = [];
  let trainSeconds = 0;
  let timedSteps = 0;
  const latest = await ctx.checkpoints.latest();
  if (latest) {
    const state = restoreTrainingState(await latest.read(STATE_FILE), spec, `${ctx.checkpoints.prefix} step ${latest.step}`);
    step = state.step;
    cursor = state.extra.cursor as DataCursor;
    curve = state.extra.curve as LossPoint[];
    ({ seconds: trainSeconds, steps: timedSteps } = (state.extra.throughput as { seconds: number; steps: number } | undefined) ?? { seconds: 0, steps: 0 });
    ctx.log(`${o.label}: resumed at step ${step} of ${total}`);
  }
  const resumedFromStep = step;
  // TensorBoard events are a view of the run, never a reason to fail it: upload errors are logged.
  const events = new StoreEventWriter(ctx.store, tensorboardPrefix(ctx.outputPrefix), { attempt: ctx.attempt });
  const notUploaded = (err: unknown) => ctx.log(`${o.label}: TensorBoard events not uploaded: ${(err as Error).message}`);
  for (const point of curve) events.scalars(curveScalars(point), point.step);
  await events
    .flush(true)
    .then(() => events.removeOthers())
    .catch(notUploaded);
  const source = await o.open(cursor);
  const save = async (atStep: number, at: DataCursor) => {
    const bytes = await encodeTrainingState(spec, { step: atStep, rng: {}, extra: { cursor: at, curve, throughput: { seconds: trainSeconds, steps: timedSteps } } });
    await ctx.checkpoints.save(atStep, { [STATE_FILE]: bytes }, { cursor: at });
    await events.flush(true).catch(notUploaded);
  };
  try {
    let lastSave = { step, time: performance.now() };
    while (step < total) {
      throwIfAborted(ctx.signal);
      const { batch, cursor: after } = await source.next();
      const lr = o.learningRate(step);
      const t0 = performance.now();
      const result = o.step(batch, step, lr);
      const seconds = (performance.now() - t0) / 1000;
      if (!Number.isFinite(result.loss)) throw new TrainingDivergedError(`${o.label}: loss became ${result.loss} at step ${step} (lr ${lr})`);
      // The first step of an attempt pays for kernel set-up; leave it out of the throughput.
      if (step > resumedFromStep) {
        trainSeconds += seconds;
        timedSteps += 1;
      }
      step += 1;
      const point: LossPoint = { step, loss: result.loss, lr, ...result.parts };
      curve.push(point);
      const imagesPerSecond = timedSteps > 0 ? (timedSteps * batchSize) / trainSeconds : batchSize / seconds;
      events.scalars({ ...curveScalars(point), 'throughput/images_per_second': imagesPerSecond }, step);
      await events.flush().catch(notUploaded);
      ctx.progress({ fraction: step / total, step, total, metrics: { loss: result.loss, lr, imagesPerSecond, ...result.parts } });
      const due = step - lastSave.step >= o.checkpointEvery.steps || (performance.now() - lastSave.time) / 1000 >= o.checkpointEvery.seconds;
      // The last step is always saved: a retry after a failed upload then goes straight to the outputs.
      if (due || step === total) {
        await save(step, after);
        lastSave = { step, time: performance.now() };
      }
      // Let timers, heartbeats and cancellation in between two synchronous TensorFlow steps.
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    await source.close();
    await events.close().catch(notUploaded);
  }
  return { steps: step, curve, resumedFromStep, imagesPerSecond: timedSteps > 0 ? (timedSteps * batchSize) / trainSeconds : 0 };
}
