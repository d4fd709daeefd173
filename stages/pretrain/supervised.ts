/**
 * The supervised baseline: the same backbone, budget (steps, batch, image size) and data as the
 * self-supervised run, trained with the labels instead. Scenes hold several objects, so the target
 * is multi-label (one sigmoid per class present, binary cross-entropy), as for COCO/VOC
 * classification; an ImageFolder sample's single label is its one positive.
 *
 * It answers the question every dense-SSL paper's table asks: does the method beat supervised
 * pretraining on the downstream tasks?
 *
 * A ResNet trains with SGD (the ImageNet recipe); a ViT (the presets of ViT methods) trains with a
 * linear head on its class token (timm's `head`, dropped from the export) and AdamW as DeiT
 * (Touvron et al. 2021, Table 9: lr 5e-4 per 512 images, weight decay 0.05, betas 0.9/0.999; no
 * decay on biases, norms and tokens), without DeiT's warm-up, augmentations and regularisers.
 */
import { BadInputError } from '../../core/errors.js';
import type { Stage, StageRef } from '../../core/stage.js';
import { joinKey, putJson } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { optimizerComponent, paramsComponent, type TrainingStateSpec } from '../engine/checkpoint.js';
import { exportStateDict } from '../engine/export.js';
import { namedGradients } from '../engine/grads.js';
import { AdamW, SGD } from '../engine/optim.js';
import { Linear } from '../engine/layers.js';
import { Initializer, ParamStore } from '../engine/params.js';
import { isVitPreset, VIT_PRESETS, VisionTransformer, type VitPreset } from '../engine/vit.js';
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
  /** 'adamw' for a ViT (DeiT's optimizer; `momentum` unused); absent = SGD, so ResNet baselines keep their cache keys. */
  optimizer?: 'adamw';
}

export function supervisedConfigFor(pretrain: PretrainConfig): SupervisedConfig {
  const config: SupervisedConfig = {
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
  // DeiT: lr 5e-4 at batch 512, i.e. 2.5e-4 at the 256 that baseLr is quoted at; weight decay 0.05.
  return isVitPreset(config.arch) ? { ...config, baseLr: 2.5e-4, weightDecay: 0.05, optimizer: 'adamw' } : config;
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

/** The trained network: its weights, its class logits in training mode, and the name of the head left out of the export. */
interface Classifier {
  params: ParamStore;
  logits(x: tf.Tensor4D): tf.Tensor2D;
  head: string;
}

function resnetClassifier(arch: ResNetPreset, numClasses: number, seed: number): Classifier {
  const preset = RESNET_PRESETS[arch];
  const net = new ResNet({ ...preset, layers: [...preset.layers], numClasses }, seed);
  return { params: net.params, logits: (x) => net.apply(x, { training: true }).logits!, head: 'fc' };
}

/** The preset at the run's image size plus timm's `head` (Linear on the class token). */
function vitClassifier(arch: VitPreset, imageSize: number, numClasses: number, seed: number): Classifier {
  const vit = new VisionTransformer({ ...VIT_PRESETS[arch], imageSize }, seed);
  const head = new Linear(vit.params.scope('head'), new Initializer(`supervised-head-${seed}`), vit.config.embedDim, numClasses);
  return { params: vit.params, logits: (x) => head.apply(vit.apply(x).cls) as tf.Tensor2D, head: 'head' };
}

export const supervisedStage: Stage<SupervisedInputs, SupervisedConfig, SupervisedResult> = {
  name: 'pretrain-supervised',
  // 2: fed by the pretraining feeder (ImageNet-normalised pixels) through the shared training loop.
  // Not bumped for the backbone card (safetensors metadata) and the TensorBoard events: what is learned and measured is
  // unchanged, older outputs simply lack them (`densepipe export` fills the card in from the run's config), and a bump
  // would throw away every cached run (the zoo's hours of training).
  // 3: crops resized from the crop's pixels only, as torchvision's resized_crop (stages/data/resample.ts).
  version: '3',
  keyConfig: ({ checkpointEvery: _c, backend: _b, ...rest }) => rest,
  validate(inputs, config) {
    const split = inputs.dataset?.result?.splits?.[config.split];
    if (!split) throw new BadInputError(`the dataset has no split '${config.split}'`, 'pretrain.split');
    if (!(inputs.dataset.result.classes?.length > 0)) throw new BadInputError('the dataset has no classes: a supervised baseline needs labels', 'baselines.supervised');
    if (!Object.hasOwn(RESNET_PRESETS, config.arch) && !isVitPreset(config.arch)) {
      throw new BadInputError(`the supervised baseline trains a ResNet or a ViT; '${config.arch}' is neither (valid: ${[...Object.keys(RESNET_PRESETS), ...Object.keys(VIT_PRESETS)].join(', ')})`, 'pretrain.backbone.arch');
    }
    if (isVitPreset(config.arch) && config.imageSize % VIT_PRESETS[config.arch].patchSize !== 0) {
      throw new BadInputError(`${config.arch} has ${VIT_PRESETS[config.arch].patchSize} px patches: imageSize ${config.imageSize} is not a multiple of it`, 'pretrain.imageSize');
    }
    if (split.samples < config.batchSize) throw new BadInputError(`split '${config.split}' has ${split.samples} samples, fewer than one batch of ${config.batchSize}`, 'pretrain.batchSize');
  },
  async run(ctx, inputs, config) {
    await initBackend(config.backend as Parameters<typeof initBackend>[0]);
    const numClasses = inputs.dataset.result.classes.length;
    const net = isVitPreset(config.arch) ? vitClassifier(config.arch, config.imageSize, numClasses, config.seed) : resnetClassifier(config.arch as ResNetPreset, numClasses, config.seed);
    const optimizer =
      config.optimizer === 'adamw'
        ? new AdamW(net.params.trainable(), { weightDecay: config.weightDecay, beta1: 0.9, beta2: 0.999 }, net.params.info)
        : new SGD(net.params.trainable(), { momentum: config.momentum, weightDecay: config.weightDecay }, net.params.info);
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
            () => tf.losses.sigmoidCrossEntropy(y, net.logits(x), undefined, undefined, tf.Reduction.MEAN) as tf.Scalar,
            net.params.trainable(),
          );
          optimizer.step(grads, lr);
          const value = loss.dataSync()[0]!;
          tf.dispose([x, y, loss, ...grads.values()]);
          return { loss: value, parts: {} };
        },
      });
      const backboneKey = joinKey(ctx.outputPrefix, 'backbone.safetensors');
      await ctx.store.put(backboneKey, await exportStateDict(net.params, { exclude: (name) => name.startsWith(`${net.head}.`), metadata: backboneMetadata({ method: 'supervised', arch: config.arch, steps: trained.steps, imageSize: config.imageSize }) }));
      const lossCurveKey = joinKey(ctx.outputPrefix, 'loss-curve.json');
      await putJson(ctx.store, lossCurveKey, { method: 'supervised', points: trained.curve });
      return { backboneKey, backboneArch: config.arch, finalLoss: trained.curve.at(-1)?.loss ?? Number.NaN, steps: trained.steps, lossCurveKey, resumedFromStep: trained.resumedFromStep };
    } finally {
      optimizer.dispose();
      net.params.dispose();
    }
  },
};
