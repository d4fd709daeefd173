/**
 * The pretraining stage: MoCo v2 or DenseCL on a torchvision-named ResNet, fed two MoCo v2 views per image
 * from the dataset's WebDataset shards, with durable checkpoints and exact resume.
 *
 * Checkpoint = one training-state file (online + momentum encoders incl. BN buffers, SGD momentum buffers,
 * queues + pointers, step, data cursor, loss curve so far). Every random draw is a function of (seed, step)
 * or (seed, data cursor), so restoring it reproduces the uninterrupted run's numbers.
 */
import { z } from 'zod';
import { BadInputError, TrainingDivergedError, throwIfAborted } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import type { Stage, StageRef } from '../../core/stage.js';
import { joinKey, putJson } from '../../core/store/index.js';
import { BACKEND_CHOICES, initBackend, tf } from '../../core/tf.js';
import { encodeTrainingState, optimizerComponent, paramsComponent, queuesComponent, restoreTrainingState, type TrainingStateSpec } from '../engine/checkpoint.js';
import { exportStateDict } from '../engine/export.js';
import { SGD } from '../engine/optim.js';
import { RESNET_PRESETS, ResNet, type ResNetPreset } from '../engine/resnet.js';
import { warmupCosineLr } from '../engine/schedule.js';
import { DenseCL, DENSECL_DEFAULTS } from '../methods/densecl.js';
import { MOCOV2_DEFAULTS, MoCoV2, validateMomentumContrastArgs, type BackboneFactory, type MomentumContrastMethod } from '../methods/mocov2.js';
import { START_CURSOR, ViewBatchFeeder, type DataCursor } from './feeder.js';

const PRESETS = Object.keys(RESNET_PRESETS) as [ResNetPreset, ...ResNetPreset[]];

export const pretrainConfigSchema = z.strictObject({
  method: z.enum(['mocov2', 'densecl']).default('densecl'),
  backbone: z
    .strictObject({
      /** A stages/engine ResNet preset (torchvision names); downstream evaluation rebuilds the same one. */
      arch: z.enum(PRESETS).default('resnet18-w16-cifar'),
    })
    .prefault({}),
  batchSize: z.number().int().min(2).default(32),
  /** Optimizer steps; ignored when `epochs` is set. */
  steps: z.number().int().min(1).default(200),
  /** Passes over the split; total steps = floor(epochs · samples / batchSize). */
  epochs: z.number().positive().optional(),
  optimizer: z
    .strictObject({
      kind: z.literal('sgd').default('sgd'),
      /** Learning rate at batch 256 (MoCo v2 / DenseCL: 0.03); the run uses baseLr · batchSize / 256 (linear scaling). */
      baseLr: z.number().positive().default(0.03),
      momentum: z.number().min(0).max(1).default(0.9),
      weightDecay: z.number().min(0).default(1e-4),
    })
    .prefault({}),
  schedule: z
    .strictObject({
      kind: z.enum(['cosine', 'constant']).default('cosine'),
      warmupSteps: z.number().int().min(0).default(0),
    })
    .prefault({}),
  /** K; 65536 in the papers, scaled to the toy datasets. Must be a multiple of batchSize. */
  queueSize: z.number().int().min(1).default(4096),
  temperature: z.number().positive().default(0.2),
  /** m of the momentum encoder. */
  emaMomentum: z.number().min(0).max(1).default(0.999),
  embedDim: z.number().int().min(1).default(128),
  /** MLP hidden width; default = the backbone's output channels, as in both papers (2048 for ResNet-50). */
  hiddenDim: z.number().int().min(1).optional(),
  /** DenseCL λ. */
  lossLambda: z.number().min(0).max(1).default(0.5),
  /** Emulated GPUs for shuffle-BN (1 = plain BN over the whole batch). */
  shuffleBnGroups: z.number().int().min(1).default(2),
  imageSize: z.number().int().min(16).default(64),
  split: z.string().default('train'),
  seed: z.number().int().min(0).default(0),
  /** Save a checkpoint after this many steps or this many seconds, whichever comes first. */
  checkpointEvery: z
    .strictObject({
      steps: z.number().int().min(1).default(100),
      seconds: z.number().positive().default(600),
    })
    .prefault({}),
  backend: z.enum(BACKEND_CHOICES as [string, ...string[]]).default('auto'),
});

export type PretrainConfig = z.infer<typeof pretrainConfigSchema>;
export type PretrainConfigInput = z.input<typeof pretrainConfigSchema>;

export interface PretrainInputs {
  /** The shard stage's output; the training loader reads its dataset manifest (shard sha256s, sample counts). */
  dataset: StageRef<{ datasetManifestKey: string; splits: Record<string, { shardKeys: string[]; samples: number }> }>;
  proposals?: StageRef[];
}

export interface PretrainResult {
  /** safetensors, torchvision state_dict names and layouts (backbone only). */
  backboneKey: string;
  /** The ResNet preset the weights belong to. */
  backboneArch: string;
  finalLoss: number;
  steps: number;
  /** JSON `{ points: [{ step, loss, lr, ...parts }] }`. */
  lossCurveKey: string;
  /** Mean throughput of the training steps (augmentation excluded; the first step of each attempt left out). */
  imagesPerSecond: number;
  resumedFromStep: number;
  /** The learning rate actually used at the peak of the schedule (baseLr · batchSize / 256). */
  effectiveLr: number;
}

export interface LossPoint {
  step: number;
  loss: number;
  lr: number;
  [part: string]: number;
}

const STATE_FILE = 'state.safetensors';

function totalSteps(config: PretrainConfig, samples: number): number {
  if (config.epochs === undefined) return config.steps;
  return Math.max(1, Math.floor((config.epochs * samples) / config.batchSize));
}

export function learningRate(config: PretrainConfig, step: number, total: number): number {
  const peak = (config.optimizer.baseLr * config.batchSize) / 256;
  if (config.schedule.kind === 'constant') return peak;
  return warmupCosineLr(step, { baseLr: peak, totalSteps: total, warmupSteps: Math.min(config.schedule.warmupSteps, total) });
}

/** The engine's ResNet, truncated at its last stage (C5), built into the encoder's ParamStore. */
export function resnetBackbone(arch: ResNetPreset): BackboneFactory {
  return (store, prefix, seed) => {
    const net = new ResNet({ ...RESNET_PRESETS[arch], layers: [...RESNET_PRESETS[arch].layers], numClasses: 0 }, seed, store, prefix);
    return { outChannels: net.outChannels, apply: (x, opts) => net.apply(x, opts).dense };
  };
}

/** Channels of the last stage: baseWidth · 2^(stages−1), ×4 for bottleneck blocks. */
export function presetOutChannels(arch: ResNetPreset): number {
  const p = RESNET_PRESETS[arch];
  return p.baseWidth * 2 ** (p.layers.length - 1) * (p.block === 'bottleneck' ? 4 : 1);
}

export function createMethod(config: PretrainConfig): MomentumContrastMethod {
  const backbone = resnetBackbone(config.backbone.arch);
  const common = {
    temperature: config.temperature,
    queueSize: config.queueSize,
    momentum: config.emaMomentum,
    embedDim: config.embedDim,
    hiddenDim: config.hiddenDim ?? presetOutChannels(config.backbone.arch),
    shuffleBnGroups: config.shuffleBnGroups,
  };
  validateMomentumContrastArgs(common, config.batchSize);
  if (config.method === 'mocov2') return new MoCoV2({ ...MOCOV2_DEFAULTS, ...common }, backbone, config.seed);
  return new DenseCL({ ...DENSECL_DEFAULTS, ...common, lossLambda: config.lossLambda }, backbone, config.seed);
}

/** Everything a checkpoint holds; the signature refuses a state from another model or method. */
function trainingStateSpec(config: PretrainConfig, method: MomentumContrastMethod, optimizer: SGD): TrainingStateSpec {
  return {
    signature: { method: config.method, arch: config.backbone.arch, args: method.args, batchSize: config.batchSize, imageSize: config.imageSize },
    components: {
      online: paramsComponent(method.online),
      momentum: paramsComponent(method.momentumEncoder),
      optimizer: optimizerComponent(optimizer),
      queues: queuesComponent(Object.values(method.queues)),
    },
  };
}

export const pretrainStage: Stage<PretrainInputs, PretrainConfig, PretrainResult> = {
  name: 'pretrain',
  // 2: views come from the data stage's training loader (was: a reader of its own).
  version: '2',
  // Where and how often checkpoints are taken, and on which backend, do not change what is learned.
  keyConfig: ({ checkpointEvery: _c, backend: _b, ...rest }) => rest,
  validate(inputs, config) {
    const split = inputs.dataset?.result?.splits?.[config.split];
    if (!split) throw new BadInputError(`the dataset has no split '${config.split}' (has: ${Object.keys(inputs.dataset?.result?.splits ?? {}).join(', ') || 'none'})`, 'pretrain.split');
    if (split.samples < config.batchSize) throw new BadInputError(`split '${config.split}' has ${split.samples} samples, fewer than one batch of ${config.batchSize}`, 'pretrain.batchSize');
    if (config.queueSize % config.batchSize !== 0) throw new BadInputError(`${config.queueSize} must be a multiple of batchSize ${config.batchSize}`, 'pretrain.queueSize');
    if (config.batchSize % config.shuffleBnGroups !== 0) throw new BadInputError(`${config.shuffleBnGroups} must divide batchSize ${config.batchSize}`, 'pretrain.shuffleBnGroups');
    if (!inputs.dataset.result.datasetManifestKey) throw new BadInputError('the dataset reference has no datasetManifestKey (is it a shard stage output?)', 'inputs.dataset');
  },
  async run(ctx, inputs, config) {
    await initBackend(config.backend as Parameters<typeof initBackend>[0]);
    const split = inputs.dataset.result.splits[config.split]!;
    const total = totalSteps(config, split.samples);
    const method = createMethod(config);
    const optimizer = new SGD(method.online.trainable(), { momentum: config.optimizer.momentum, weightDecay: config.optimizer.weightDecay }, method.online.info);
    const spec = trainingStateSpec(config, method, optimizer);
    let feeder: ViewBatchFeeder | null = null;
    try {
      // ---- resume
      let step = 0;
      let cursor: DataCursor = START_CURSOR;
      let curve: LossPoint[] = [];
      // Throughput over every attempt's timed steps, carried through checkpoints.
      let trainSeconds = 0;
      let timedSteps = 0;
      const latest = await ctx.checkpoints.latest();
      if (latest) {
        const state = restoreTrainingState(await latest.read(STATE_FILE), spec, `${ctx.checkpoints.prefix} step ${latest.step}`);
        step = state.step;
        cursor = state.extra.cursor as DataCursor;
        curve = state.extra.curve as LossPoint[];
        ({ seconds: trainSeconds, steps: timedSteps } = state.extra.throughput as { seconds: number; steps: number });
        ctx.log(`pretrain: resumed at step ${step} of ${total}`);
      }
      const resumedFromStep = step;
      feeder = await ViewBatchFeeder.open(
        { store: ctx.store, datasetManifestKey: inputs.dataset.result.datasetManifestKey, split: config.split, seed: config.seed, batchSize: config.batchSize, imageSize: config.imageSize, signal: ctx.signal },
        cursor,
      );

      const save = async (atStep: number, at: DataCursor) => {
        const bytes = await encodeTrainingState(spec, { step: atStep, rng: {}, extra: { cursor: at, curve, throughput: { seconds: trainSeconds, steps: timedSteps } } });
        await ctx.checkpoints.save(atStep, { [STATE_FILE]: bytes }, { cursor: at });
      };

      // ---- train
      let lastSave = { step, time: performance.now() };
      const shape: [number, number, number, number] = [config.batchSize, config.imageSize, config.imageSize, 3];
      while (step < total) {
        throwIfAborted(ctx.signal);
        const batch = await feeder.nextBatch();
        const lr = learningRate(config, step, total);
        const t0 = performance.now();
        const view0 = tf.tensor4d(batch.view0, shape);
        const view1 = tf.tensor4d(batch.view1, shape);
        const result = method.trainStep(view0, view1, (grads) => optimizer.step(grads, lr), Rng.fromSeed('pretrain-shuffle-bn', config.seed, step));
        tf.dispose([view0, view1]);
        const seconds = (performance.now() - t0) / 1000;
        if (!Number.isFinite(result.loss)) throw new TrainingDivergedError(`pretrain: loss became ${result.loss} at step ${step} (lr ${lr})`);
        // The first step of an attempt pays for kernel set-up; leave it out of the throughput.
        if (step > resumedFromStep) {
          trainSeconds += seconds;
          timedSteps += 1;
        }
        step += 1;
        curve.push({ step, loss: result.loss, lr, ...result.parts });
        const imagesPerSecond = timedSteps > 0 ? (timedSteps * config.batchSize) / trainSeconds : config.batchSize / seconds;
        ctx.progress({ fraction: step / total, step, total, metrics: { loss: result.loss, lr, imagesPerSecond, ...result.parts } });
        const due = step - lastSave.step >= config.checkpointEvery.steps || (performance.now() - lastSave.time) / 1000 >= config.checkpointEvery.seconds;
        // The last step is always saved: a retry after a failed upload then goes straight to the outputs.
        if (due || step === total) {
          await save(step, batch.next);
          lastSave = { step, time: performance.now() };
        }
        // Let timers, heartbeats and cancellation in between two synchronous TensorFlow steps.
        await new Promise((resolve) => setImmediate(resolve));
      }

      // ---- outputs
      const backboneKey = joinKey(ctx.outputPrefix, 'backbone.safetensors');
      const weights = await exportStateDict(method.online, {
        stripPrefix: 'backbone.',
        metadata: { method: config.method, arch: config.backbone.arch, steps: String(step) },
      });
      await ctx.store.put(backboneKey, weights);
      const lossCurveKey = joinKey(ctx.outputPrefix, 'loss-curve.json');
      await putJson(ctx.store, lossCurveKey, { method: config.method, points: curve });
      return {
        backboneKey,
        backboneArch: config.backbone.arch,
        finalLoss: curve.length ? curve[curve.length - 1]!.loss : Number.NaN,
        steps: step,
        lossCurveKey,
        imagesPerSecond: timedSteps > 0 ? (timedSteps * config.batchSize) / trainSeconds : 0,
        resumedFromStep,
        effectiveLr: (config.optimizer.baseLr * config.batchSize) / 256,
      };
    } finally {
      await feeder?.close();
      optimizer.dispose();
      method.dispose();
    }
  },
};
