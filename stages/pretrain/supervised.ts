/**
 * The supervised baseline: the same backbone, budget (steps, batch, image size) and data as the
 * self-supervised run, trained with the labels instead. Scenes hold several objects, so the target
 * is multi-label (one sigmoid per class present, binary cross-entropy), as for COCO/VOC
 * classification; an ImageFolder sample's single label is its one positive.
 *
 * It answers the question every dense-SSL paper's table asks: does the method beat supervised
 * pretraining on the downstream tasks?
 */
import { BadInputError } from '../../core/errors.js';
import type { Stage, StageRef } from '../../core/stage.js';
import { joinKey, putJson } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { optimizerComponent, paramsComponent, type TrainingStateSpec } from '../engine/checkpoint.js';
import { exportStateDict } from '../engine/export.js';
import { namedGradients } from '../engine/grads.js';
import { SGD } from '../engine/optim.js';
import { RESNET_PRESETS, ResNet, type ResNetPreset } from '../engine/resnet.js';
import { warmupCosineLr } from '../engine/schedule.js';
import type { ViewSpec } from '../data/index.js';
import type { PretrainConfig } from './config.js';
import { MethodBatchFeeder, type HostBatch } from './feeder.js';
import { runTrainingLoop } from './loop.js';
import { backboneMetadata } from './backbone-card.js';

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

/** The standard supervised augmentation: RandomResizedCrop(0.08, 1) and a horizontal flip. */
function viewSpec(size: number): ViewSpec {
  return { size, scale: [0.08, 1], flipP: 0.5 };
}

export const supervisedStage: Stage<SupervisedInputs, SupervisedConfig, SupervisedResult> = {
  name: 'pretrain-supervised',
  // 2: fed by the pretraining feeder (ImageNet-normalised pixels) through the shared training loop.
  // Not bumped for the backbone card (safetensors metadata) and the TensorBoard events: what is learned and measured is
  // unchanged, older outputs simply lack them (`densepipe export` fills the card in from the run's config), and a bump
  // would throw away every cached run (the zoo's hours of training).
  version: '2',
  keyConfig: ({ checkpointEvery: _c, backend: _b, ...rest }) => rest,
  validate(inputs, config) {
    const split = inputs.dataset?.result?.splits?.[config.split];
    if (!split) throw new BadInputError(`the dataset has no split '${config.split}'`, 'pretrain.split');
    if (!(inputs.dataset.result.classes?.length > 0)) throw new BadInputError('the dataset has no classes: a supervised baseline needs labels', 'baselines.supervised');
    if (!(config.arch in RESNET_PRESETS)) throw new BadInputError(`the supervised baseline trains a ResNet; '${config.arch}' is not a ResNet preset (valid: ${Object.keys(RESNET_PRESETS).join(', ')})`, 'pretrain.backbone.arch');
    if (split.samples < config.batchSize) throw new BadInputError(`split '${config.split}' has ${split.samples} samples, fewer than one batch of ${config.batchSize}`, 'pretrain.batchSize');
  },
  async run(ctx, inputs, config) {
    await initBackend(config.backend as Parameters<typeof initBackend>[0]);
    const numClasses = inputs.dataset.result.classes.length;
    const preset = RESNET_PRESETS[config.arch as ResNetPreset];
    const net = new ResNet({ ...preset, layers: [...preset.layers], numClasses }, config.seed);
    const optimizer = new SGD(net.params.trainable(), { momentum: config.momentum, weightDecay: config.weightDecay }, net.params.info);
    const spec: TrainingStateSpec = {
      signature: { method: 'supervised-multilabel', arch: config.arch, numClasses, batchSize: config.batchSize, imageSize: config.imageSize },
      components: { model: paramsComponent(net.params), optimizer: optimizerComponent(optimizer) },
    };
    const peakLr = (config.baseLr * config.batchSize) / 256;
    try {
      const trained = await runTrainingLoop<HostBatch>({
        ctx,
        spec,
        label: 'supervised baseline',
        totalSteps: config.steps,
        batchSize: config.batchSize,
        checkpointEvery: config.checkpointEvery,
        open: async (cursor) => {
          const feeder = await MethodBatchFeeder.open(
            { store: ctx.store, datasetManifestKey: inputs.dataset.result.datasetManifestKey, split: config.split, seed: config.seed, batchSize: config.batchSize, views: [viewSpec(config.imageSize)], numClasses, signal: ctx.signal },
            cursor,
          );
          return { next: async () => feeder.nextBatch().then((batch) => ({ batch, cursor: batch.next })), close: () => feeder.close() };
        },
        learningRate: (step) => warmupCosineLr(step, { baseLr: peakLr, totalSteps: config.steps, warmupSteps: 0 }),
        step: (host, _step, lr) => {
          const x = tf.tensor4d(host.views[0]!, [config.batchSize, config.imageSize, config.imageSize, 3]);
          const y = tf.tensor2d(host.labels!, [config.batchSize, numClasses]);
          const { loss, grads } = namedGradients(
            () => tf.losses.sigmoidCrossEntropy(y, net.apply(x, { training: true }).logits!, undefined, undefined, tf.Reduction.MEAN) as tf.Scalar,
            net.params.trainable(),
          );
          optimizer.step(grads, lr);
          const value = loss.dataSync()[0]!;
          tf.dispose([x, y, loss, ...grads.values()]);
          return { loss: value, parts: {} };
        },
      });
      const backboneKey = joinKey(ctx.outputPrefix, 'backbone.safetensors');
      await ctx.store.put(backboneKey, await exportStateDict(net.params, { exclude: (name) => name.startsWith('fc.'), metadata: backboneMetadata({ method: 'supervised', arch: config.arch, steps: trained.steps, imageSize: config.imageSize }) }));
      const lossCurveKey = joinKey(ctx.outputPrefix, 'loss-curve.json');
      await putJson(ctx.store, lossCurveKey, { method: 'supervised', points: trained.curve });
      return { backboneKey, backboneArch: config.arch, finalLoss: trained.curve.at(-1)?.loss ?? Number.NaN, steps: trained.steps, lossCurveKey, resumedFromStep: trained.resumedFromStep };
    } finally {
      optimizer.dispose();
      net.params.dispose();
    }
  },
};
