/**
 * The supervised baseline: the same backbone, budget (steps, batch, image size) and data as the
 * self-supervised run, trained with the labels instead. Scenes hold several objects, so the target
 * is multi-label (one sigmoid per class present, binary cross-entropy), as for COCO/VOC
 * classification; an ImageFolder sample's single label is its one positive.
 *
 * It answers the question every dense-SSL paper's table asks: does the method beat supervised
 * pretraining on the downstream tasks?
 */
import { BadInputError, TrainingDivergedError, throwIfAborted } from '../../core/errors.js';
import type { Stage, StageRef } from '../../core/stage.js';
import { joinKey, putJson } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { encodeTrainingState, optimizerComponent, paramsComponent, restoreTrainingState, type TrainingStateSpec } from '../engine/checkpoint.js';
import { exportStateDict } from '../engine/export.js';
import { namedGradients } from '../engine/grads.js';
import { SGD } from '../engine/optim.js';
import { RESNET_PRESETS, ResNet } from '../engine/resnet.js';
import { warmupCosineLr } from '../engine/schedule.js';
import { augmentView, createTrainLoader, type DecodedSample, type LoaderCursor, type ViewSpec } from '../data/index.js';
import type { PretrainConfig, LossPoint } from './index.js';

export interface SupervisedInputs {
  dataset: StageRef<{ datasetManifestKey: string; classes: string[]; splits: Record<string, { shardKeys: string[]; samples: number }> }>;
}

/** The parts of the self-supervised config that define the budget, plus supervised-only settings. */
export interface SupervisedConfig {
  arch: PretrainConfig['backbone']['arch'];
  batchSize: number;
  steps: number;
  imageSize: number;
  split: string;
  seed: number;
  /** Learning rate at batch 256 (0.1: the ImageNet recipe), linearly scaled. */
  baseLr: number;
  momentum: number;
  weightDecay: number;
  checkpointEvery: { steps: number; seconds: number };
  backend: PretrainConfig['backend'];
}

export function supervisedConfigFor(pretrain: PretrainConfig): SupervisedConfig {
  return {
    arch: pretrain.backbone.arch,
    batchSize: pretrain.batchSize,
    steps: pretrain.steps,
    imageSize: pretrain.imageSize,
    split: pretrain.split,
    seed: pretrain.seed,
    baseLr: 0.1,
    momentum: 0.9,
    weightDecay: 1e-4,
    checkpointEvery: pretrain.checkpointEvery,
    backend: pretrain.backend,
  };
}

export interface SupervisedResult {
  backboneKey: string;
  backboneArch: string;
  finalLoss: number;
  steps: number;
  lossCurveKey: string;
  resumedFromStep: number;
}

const STATE_FILE = 'state.safetensors';

/** Classes present in a sample, as a multi-hot row. */
function targetOf(sample: DecodedSample, numClasses: number, where: string): Float32Array {
  const row = new Float32Array(numClasses);
  const labels = sample.labels.length > 0 ? Array.from(sample.labels) : sample.imageLabel !== undefined ? [sample.imageLabel] : [];
  for (const label of labels) {
    if (!(label >= 0 && label < numClasses)) throw new BadInputError(`label ${label} outside the dataset's ${numClasses} classes`, where);
    row[label] = 1;
  }
  return row;
}

/** The standard supervised augmentation: RandomResizedCrop(0.08, 1) and a horizontal flip. */
function viewSpec(size: number): ViewSpec {
  return { size, scale: [0.08, 1], flipP: 0.5 };
}

export const supervisedStage: Stage<SupervisedInputs, SupervisedConfig, SupervisedResult> = {
  name: 'pretrain-supervised',
  version: '1',
  keyConfig: ({ checkpointEvery: _c, backend: _b, ...rest }) => rest,
  validate(inputs, config) {
    const split = inputs.dataset?.result?.splits?.[config.split];
    if (!split) throw new BadInputError(`the dataset has no split '${config.split}'`, 'pretrain.split');
    if (!(inputs.dataset.result.classes?.length > 0)) throw new BadInputError('the dataset has no classes: a supervised baseline needs labels', 'baselines.supervised');
    if (split.samples < config.batchSize) throw new BadInputError(`split '${config.split}' has ${split.samples} samples, fewer than one batch of ${config.batchSize}`, 'pretrain.batchSize');
  },
  async run(ctx, inputs, config) {
    await initBackend(config.backend as Parameters<typeof initBackend>[0]);
    const numClasses = inputs.dataset.result.classes.length;
    const preset = RESNET_PRESETS[config.arch];
    const net = new ResNet({ ...preset, layers: [...preset.layers], numClasses }, config.seed);
    const optimizer = new SGD(net.params.trainable(), { momentum: config.momentum, weightDecay: config.weightDecay }, net.params.info);
    const spec: TrainingStateSpec = {
      signature: { method: 'supervised-multilabel', arch: config.arch, numClasses, batchSize: config.batchSize, imageSize: config.imageSize },
      components: { model: paramsComponent(net.params), optimizer: optimizerComponent(optimizer) },
    };
    try {
      let step = 0;
      let cursor: LoaderCursor = { epoch: 0, position: 0 };
      let curve: LossPoint[] = [];
      const latest = await ctx.checkpoints.latest();
      if (latest) {
        const state = restoreTrainingState(await latest.read(STATE_FILE), spec, `${ctx.checkpoints.prefix} step ${latest.step}`);
        step = state.step;
        cursor = state.extra.cursor as LoaderCursor;
        curve = state.extra.curve as LossPoint[];
      }
      const resumedFromStep = step;
      const loader = await createTrainLoader({
        store: ctx.store,
        dataset: inputs.dataset.result.datasetManifestKey,
        split: config.split,
        seed: config.seed,
        signal: ctx.signal,
        transform: (sample, rng) => ({ image: augmentView(rng, sample.image, viewSpec(config.imageSize)).image, target: targetOf(sample, numClasses, sample.key) }),
      });
      const items = loader.iterate(cursor);
      const peakLr = (config.baseLr * config.batchSize) / 256;
      const pixels = config.imageSize * config.imageSize * 3;
      let lastSave = { step, time: performance.now() };
      while (step < config.steps) {
        throwIfAborted(ctx.signal);
        const images = new Float32Array(config.batchSize * pixels);
        const targets = new Float32Array(config.batchSize * numClasses);
        for (let i = 0; i < config.batchSize; i++) {
          const next = await items.next();
          if (next.done) throw new Error('the training loader ended unexpectedly');
          images.set(next.value.value.image.data, i * pixels);
          targets.set(next.value.value.target, i * numClasses);
          cursor = next.value.cursor;
        }
        const lr = warmupCosineLr(step, { baseLr: peakLr, totalSteps: config.steps, warmupSteps: 0 });
        const x = tf.tensor4d(images, [config.batchSize, config.imageSize, config.imageSize, 3]);
        const y = tf.tensor2d(targets, [config.batchSize, numClasses]);
        const { loss, grads } = namedGradients(
          () => tf.losses.sigmoidCrossEntropy(y, net.apply(x, { training: true }).logits!, undefined, undefined, tf.Reduction.MEAN) as tf.Scalar,
          net.params.trainable(),
        );
        optimizer.step(grads, lr);
        const lossValue = (await loss.data())[0]!;
        tf.dispose([x, y, loss, ...grads.values()]);
        if (!Number.isFinite(lossValue)) throw new TrainingDivergedError(`supervised baseline: loss became ${lossValue} at step ${step}`);
        step += 1;
        curve.push({ step, loss: lossValue, lr });
        ctx.progress({ fraction: step / config.steps, step, total: config.steps, metrics: { loss: lossValue, lr } });
        const due = step - lastSave.step >= config.checkpointEvery.steps || (performance.now() - lastSave.time) / 1000 >= config.checkpointEvery.seconds;
        if (due || step === config.steps) {
          const bytes = await encodeTrainingState(spec, { step, rng: {}, extra: { cursor, curve } });
          await ctx.checkpoints.save(step, { [STATE_FILE]: bytes }, { cursor });
          lastSave = { step, time: performance.now() };
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      const backboneKey = joinKey(ctx.outputPrefix, 'backbone.safetensors');
      await ctx.store.put(backboneKey, await exportStateDict(net.params, { exclude: (name) => name.startsWith('fc.'), metadata: { method: 'supervised', arch: config.arch, steps: String(step) } }));
      const lossCurveKey = joinKey(ctx.outputPrefix, 'loss-curve.json');
      await putJson(ctx.store, lossCurveKey, { method: 'supervised', points: curve });
      return { backboneKey, backboneArch: config.arch, finalLoss: curve.at(-1)?.loss ?? Number.NaN, steps: step, lossCurveKey, resumedFromStep };
    } finally {
      optimizer.dispose();
      net.params.dispose();
    }
  },
};
