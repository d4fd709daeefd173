/**
 * The pretraining stage: any registered method (stages/methods/index.ts) on a torchvision-named ResNet,
 * fed exactly what the method declares (views with its augmentation recipe, crop geometry, proposals,
 * labels) from the dataset's WebDataset shards, through the one training loop (./loop.ts) with durable
 * checkpoints and exact resume.
 */
import { BadInputError, IncompatibleArtifactError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import type { Stage, StageRef } from '../../core/stage.js';
import { joinKey, putJson, type ArtifactStore } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { optimizerComponent, paramsComponent, type TrainingStateSpec } from '../engine/checkpoint.js';
import { exportStateDict, importStateDict, type TorchTensor } from '../engine/export.js';
import { AdamW, excludeBiasAndNorm, lrMultiplierOf, excludeNothing, excludeRankOneAndBias, LARS, SGD, type Optimizer } from '../engine/optim.js';
import type { ParamStore } from '../engine/params.js';
import { RESNET_PRESETS, ResNet, type ResNetPreset } from '../engine/resnet.js';
import { decodeSafetensors, typedArrayOf } from '../engine/safetensors.js';
import { warmupCosineLr } from '../engine/schedule.js';
import { methodModule } from '../methods/index.js';
import type { BackboneFactory, BackboneInit, MethodBatch, MethodInstance, MethodModule, PretrainedBackbone, VitBuild } from '../methods/shared/contract.js';
import { VisionTransformer, VIT_PRESETS, type VitConfig, type VitPreset } from '../engine/vit.js';
import { backboneFamily, type BackboneArch, type PretrainConfig } from './config.js';
import { loadProposals, MethodBatchFeeder, type HostBatch } from './feeder.js';
import { runTrainingLoop } from './loop.js';
import { backboneMetadata } from './backbone-card.js';

export { BACKBONE_FAMILIES, pretrainConfigSchema, type PretrainConfig, type PretrainConfigInput } from './config.js';
export type { LossPoint } from './loop.js';

export interface PretrainInputs {
  /** The shard stage's output; the training loader reads its dataset manifest (shard sha256s, sample counts). */
  dataset: StageRef<{ datasetManifestKey: string; classes?: string[]; splits: Record<string, { shardKeys: string[]; samples: number }> }>;
  /** The proposal stage's outputs, one per training shard; read (and part of the cache key) only when the method consumes proposals. */
  proposals?: StageRef<{ proposalsKey: string; segmentsKey?: string }>[];
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
  /** Weights exported beside the backbone (`MethodInstance.exports`), name → safetensors key: UP-DETR's `detector`. */
  exports?: Record<string, string>;
}

export function totalSteps(config: Pick<PretrainConfig, 'epochs' | 'steps' | 'batchSize'>, samples: number): number {
  if (config.epochs === undefined) return config.steps;
  return Math.max(1, Math.floor((config.epochs * samples) / config.batchSize));
}

/** Linear scaling to the batch, warm-up (default: the method's fraction of the run), then cosine or constant. */
export function learningRate(config: PretrainConfig, step: number, total: number): number {
  const peak = (config.optimizer.baseLr * config.batchSize) / 256;
  const warmupSteps = Math.min(total, config.schedule.warmupSteps ?? Math.round(methodModule(config.method).optimizer.warmupFraction * total));
  if (config.schedule.kind === 'constant') return step < warmupSteps ? (peak * step) / warmupSteps : peak;
  return warmupCosineLr(step, { baseLr: peak, totalSteps: total, warmupSteps });
}

/**
 * The engine's ResNet, truncated at its last stage (C5), built into the encoder's ParamStore. `init`: the method's
 * declared departure from the default init (`MethodModule.backboneInit`); absent = the preset's defaults.
 */
export function resnetBackbone(arch: ResNetPreset, init?: BackboneInit): BackboneFactory {
  const zeroInitResidual = init?.zeroInitResidual ?? RESNET_PRESETS[arch].zeroInitResidual;
  return (store, prefix, seed) => {
    const net = new ResNet({ ...RESNET_PRESETS[arch], layers: [...RESNET_PRESETS[arch].layers], zeroInitResidual, numClasses: 0 }, seed, store, prefix);
    return {
      outChannels: net.outChannels,
      stride: net.outputStride,
      stageChannels: net.stageChannels,
      apply: (x, opts) => net.apply(x, opts).dense,
      applyStages: (x, opts) => net.apply(x, opts).stages,
    };
  };
}

/** Channels of the last stage: baseWidth · 2^(stages−1), ×4 for bottleneck blocks. */
export function presetOutChannels(arch: ResNetPreset): number {
  const p = RESNET_PRESETS[arch];
  return p.baseWidth * 2 ** (p.layers.length - 1) * (p.block === 'bottleneck' ? 4 : 1);
}

/** The engine's ViT at the run's image size; as a `FeatureBackbone` its patch tokens form the dense map. */
export function vitBuild(arch: VitPreset, imageSize: number): VitBuild {
  const config: VitConfig = { ...VIT_PRESETS[arch], imageSize };
  return { preset: arch, config, build: (store, prefix, seed) => new VisionTransformer(config, seed, store, prefix) };
}

function vitFeatureBackbone(vit: VitBuild): BackboneFactory {
  return (store, prefix, seed) => {
    const net = vit.build(store, prefix, seed);
    const g = net.gridSize;
    return {
      outChannels: vit.config.embedDim,
      stride: vit.config.patchSize,
      apply: (x) => tf.reshape(net.apply(x).patches, [x.shape[0], g, g, vit.config.embedDim]),
    };
  };
}

/** Build the configured method on the configured backbone (`pretrained`: the file `consumes.pretrainedBackbone` names, read by `readPretrainedBackbone`). */
export function createMethod(config: PretrainConfig, totalSteps = config.steps, pretrained?: PretrainedBackbone): MethodInstance {
  const module = methodModule(config.method) as MethodModule;
  module.validate?.(config.args, { batchSize: config.batchSize, imageSize: config.imageSize });
  const arch = config.backbone.arch as BackboneArch;
  const vit = backboneFamily(arch) === 'vit' ? vitBuild(arch as VitPreset, config.imageSize) : undefined;
  if (vit && module.backboneInit) throw new Error(`method '${config.method}' declares backboneInit, which only a ResNet backbone has (pretrain.backbone.arch ${arch} is a ViT)`);
  return module.create({
    args: config.args,
    backbone: vit ? vitFeatureBackbone(vit) : resnetBackbone(arch as ResNetPreset, module.backboneInit),
    backboneChannels: vit ? vit.config.embedDim : presetOutChannels(arch as ResNetPreset),
    ...(vit ? { vit } : {}),
    seed: config.seed,
    batchSize: config.batchSize,
    imageSize: config.imageSize,
    totalSteps,
    ...(pretrained ? { pretrained } : {}),
  });
}

/**
 * The backbone file a method builds on (`consumes.pretrainedBackbone`: the `args` field holding an earlier run's
 * `backbone.safetensors` key), or undefined when the method names none or the field is null (random init). A key the
 * store does not hold is bad input naming `pretrain.args.<field>`; a file of another architecture is refused when it
 * says so in its metadata, and by `load` tensor by tensor otherwise.
 */
export async function readPretrainedBackbone(store: ArtifactStore, config: PretrainConfig): Promise<PretrainedBackbone | undefined> {
  const field = methodModule(config.method).consumes.pretrainedBackbone?.arg;
  if (!field) return undefined;
  const key = (config.args as Record<string, unknown>)[field];
  if (key === null || key === undefined) return undefined;
  if (typeof key !== 'string' || !(await store.exists(key))) throw new BadInputError(`no backbone file at ${JSON.stringify(key)} in ${store.url('')}`, `pretrain.args.${field}`);
  const source = store.url(key);
  const { tensors, metadata } = decodeSafetensors(new Uint8Array(await store.get(key)), source);
  if (metadata?.arch && metadata.arch !== config.backbone.arch) throw new IncompatibleArtifactError(`the file holds a ${metadata.arch} backbone, this run trains on ${config.backbone.arch} (pretrain.backbone.arch)`, source);
  return {
    key,
    load(target, prefix) {
      const wanted = new Map<string, TorchTensor>();
      for (const name of target.vars.keys()) {
        if (!name.startsWith(`${prefix}.`)) continue;
        const t = tensors.get(name.slice(prefix.length + 1));
        if (t) wanted.set(name, { shape: t.shape, values: typedArrayOf(t) as ArrayLike<number> });
      }
      importStateDict(target, wanted, { skip: (name) => !name.startsWith(`${prefix}.`), source });
    },
  };
}

/** AdamW's excluded-from-decay parameters per `OptimizerDefaults.adamwDecay` (absent: biases, norms and tokens). */
const ADAMW_NO_DECAY = { all: excludeNothing, rank: excludeRankOneAndBias } as const satisfies Record<NonNullable<MethodModule['optimizer']['adamwDecay']>, unknown>;

/** The configured optimizer over the online encoder's trainable parameters. */
export function createOptimizer(config: Pick<PretrainConfig, 'optimizer' | 'method'>, online: ParamStore): Optimizer {
  const { kind, momentum, weightDecay } = config.optimizer;
  const params = online.trainable();
  const recipe = methodModule(config.method).optimizer;
  const sgdNoDecay = recipe.sgdNoDecay === 'biasAndNorm' ? { noDecay: excludeBiasAndNorm } : {};
  const build = {
    sgd: () => new SGD(params, { momentum, weightDecay, ...sgdNoDecay }, online.info),
    lars: () => new LARS(params, { momentum, weightDecay }, online.info),
    adamw: () =>
      new AdamW(
        params,
        {
          beta1: momentum,
          weightDecay,
          ...(recipe.adamwDecay ? { noDecay: ADAMW_NO_DECAY[recipe.adamwDecay] } : {}),
          ...(recipe.beta2 !== undefined ? { beta2: recipe.beta2 } : {}),
          ...(recipe.lrMultiplier ? { lrScale: lrMultiplierOf(recipe.lrMultiplier) } : {}),
        },
        online.info,
      ),
  } satisfies Record<PretrainConfig['optimizer']['kind'], () => Optimizer>;
  return build[kind]();
}

/** Host arrays → the tensors a method's step reads (the caller disposes them with `disposeBatch`). */
export function toMethodBatch(host: HostBatch, batchSize: number): MethodBatch {
  return {
    views: host.views.map((data, v) => tf.tensor4d(data, [batchSize, host.viewSizes[v]![1], host.viewSizes[v]![0], 3])),
    geometry: host.geometry,
    ...(host.proposals ? { proposals: host.proposals } : {}),
    ...(host.labels ? { labels: tf.tensor2d(host.labels, [batchSize, host.labels.length / batchSize]) } : {}),
  };
}

export function disposeBatch(batch: MethodBatch): void {
  tf.dispose([...batch.views, ...(batch.labels ? [batch.labels] : [])]);
}

/** Everything a checkpoint holds; the signature refuses a state from another model or method. */
function trainingStateSpec(config: PretrainConfig, method: MethodInstance, optimizer: Optimizer): TrainingStateSpec {
  return {
    signature: { method: config.method, arch: config.backbone.arch, args: method.args, optimizer: config.optimizer.kind, batchSize: config.batchSize, imageSize: config.imageSize },
    components: { online: paramsComponent(method.online), optimizer: optimizerComponent(optimizer), ...method.state },
  };
}

export const pretrainStage: Stage<PretrainInputs, PretrainConfig, PretrainResult> = {
  name: 'pretrain',
  // 3: methods as modules: per-method `args` and optimizer recipe; proposals only in the key of methods that read them.
  // Not bumped for the backbone card (safetensors metadata) and the TensorBoard events: what is learned and measured is
  // unchanged, older outputs simply lack them (`densepipe export` fills the card in from the run's config), and a bump
  // would throw away every cached run (the zoo's hours of training).
  // 4: views are cropped, then resized (torchvision's resized_crop): the filter taps no longer read pixels outside the
  // crop box (up to ~100 levels at a view's edges before; test/data/reference.test.ts).
  version: '4',
  // Where and how often checkpoints are taken, and on which backend, do not change what is learned.
  // A method's own `version` joins the key once it is bumped past 1, so a change to one method redoes only its runs.
  keyConfig: ({ checkpointEvery: _c, backend: _b, ...rest }) => {
    const methodVersion = methodModule(rest.method).version;
    return methodVersion && methodVersion !== '1' ? { ...rest, methodVersion } : rest;
  },
  keyInputs: (inputs, config) => (methodModule(config.method).consumes.proposals ? inputs : { dataset: inputs.dataset }),
  validate(inputs, config) {
    const split = inputs.dataset?.result?.splits?.[config.split];
    if (!split) throw new BadInputError(`the dataset has no split '${config.split}' (has: ${Object.keys(inputs.dataset?.result?.splits ?? {}).join(', ') || 'none'})`, 'pretrain.split');
    if (split.samples < config.batchSize) throw new BadInputError(`split '${config.split}' has ${split.samples} samples, fewer than one batch of ${config.batchSize}`, 'pretrain.batchSize');
    if (!inputs.dataset.result.datasetManifestKey) throw new BadInputError('the dataset reference has no datasetManifestKey (is it a shard stage output?)', 'inputs.dataset');
    const module = methodModule(config.method);
    try {
      module.validate?.(config.args, { batchSize: config.batchSize, imageSize: config.imageSize });
    } catch (err) {
      if (err instanceof BadInputError && err.where) throw new BadInputError(err.message.slice(err.where.length + 2), `pretrain.${err.where}`);
      throw err;
    }
    const needs = module.consumes.proposals;
    if (needs) {
      const refs = inputs.proposals ?? [];
      if (refs.length === 0) throw new BadInputError(`method '${config.method}' reads proposals and the run has none`, 'pretrain.method / proposals.enabled');
      if (needs.kind === 'regions' && refs.some((r) => !r.result?.segmentsKey)) {
        throw new BadInputError(`method '${config.method}' reads region masks and these proposals kept none`, 'pretrain.method / proposals.preset');
      }
    }
    if (module.consumes.labels && !(inputs.dataset.result.classes?.length)) throw new BadInputError('the dataset has no classes and this method reads labels', 'pretrain.method');
  },
  async run(ctx, inputs, config) {
    await initBackend(config.backend as Parameters<typeof initBackend>[0]);
    const split = inputs.dataset.result.splits[config.split]!;
    const total = totalSteps(config, split.samples);
    const module = methodModule(config.method);
    const method = createMethod(config, total, await readPretrainedBackbone(ctx.store, config));
    const optimizer = createOptimizer(config, method.online);
    const needs = module.consumes.proposals;
    const proposals = needs ? { byKey: await loadProposals(ctx.store, inputs.proposals!.map((r) => r.result), needs.kind === 'regions'), needs } : undefined;
    const numClasses = module.consumes.labels ? inputs.dataset.result.classes!.length : undefined;
    try {
      const trained = await runTrainingLoop<HostBatch>({
        ctx,
        spec: trainingStateSpec(config, method, optimizer),
        label: `pretrain (${config.method})`,
        totalSteps: total,
        batchSize: config.batchSize,
        checkpointEvery: config.checkpointEvery,
        open: async (cursor) => {
          const feeder = await MethodBatchFeeder.open(
            { store: ctx.store, datasetManifestKey: inputs.dataset.result.datasetManifestKey, split: config.split, seed: config.seed, batchSize: config.batchSize, views: module.consumes.views(config.imageSize, config.args), sharedFlip: module.consumes.sharedFlip, proposals, numClasses, signal: ctx.signal },
            cursor,
          );
          return { next: async () => feeder.nextBatch().then((batch) => ({ batch, cursor: batch.next })), close: () => feeder.close() };
        },
        learningRate: (step) => learningRate(config, step, total) * (method.lrScale?.(step, total) ?? 1),
        step: (host, step, lr) => {
          const batch = toMethodBatch(host, config.batchSize);
          try {
            return method.step(batch, { step, totalSteps: total, rng: Rng.fromSeed('pretrain-shuffle-bn', config.seed, step), applyGradients: (grads) => optimizer.step(grads, lr) });
          } finally {
            disposeBatch(batch);
          }
        },
      });

      const backboneKey = joinKey(ctx.outputPrefix, 'backbone.safetensors');
      const weights = await exportStateDict(method.exported ?? method.online, {
        stripPrefix: 'backbone.',
        metadata: backboneMetadata({ method: config.method, arch: config.backbone.arch as BackboneArch, steps: trained.steps, imageSize: config.imageSize }),
      });
      await ctx.store.put(backboneKey, weights);
      const exports: Record<string, string> = {};
      for (const [name, e] of Object.entries(method.exports ?? {})) {
        exports[name] = joinKey(ctx.outputPrefix, `${name}.safetensors`);
        const meta = { method: config.method, steps: String(trained.steps), ...(e.metadata ?? {}) };
        await ctx.store.put(exports[name], await exportStateDict(e.store, { ...(e.stripPrefix ? { stripPrefix: e.stripPrefix } : {}), ...(e.exclude ? { exclude: e.exclude } : {}), metadata: meta }));
      }
      const lossCurveKey = joinKey(ctx.outputPrefix, 'loss-curve.json');
      await putJson(ctx.store, lossCurveKey, { method: config.method, points: trained.curve });
      return {
        backboneKey,
        backboneArch: config.backbone.arch,
        finalLoss: trained.curve.at(-1)?.loss ?? Number.NaN,
        steps: trained.steps,
        lossCurveKey,
        imagesPerSecond: trained.imagesPerSecond,
        resumedFromStep: trained.resumedFromStep,
        effectiveLr: (config.optimizer.baseLr * config.batchSize) / 256,
        ...(Object.keys(exports).length ? { exports } : {}),
      };
    } finally {
      optimizer.dispose();
      method.dispose();
    }
  },
};
