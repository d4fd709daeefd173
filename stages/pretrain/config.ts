/**
 * The pretrain section of a run config: the fields every method shares (backbone, budget, data, seed,
 * checkpoint cadence) plus, per method, its own `args` block and optimizer defaults. Derived from the
 * method registry: a union keyed by `method`, each member carrying that module's argument schema.
 *
 *   pretrain:
 *     method: densecl
 *     args: { queueSize: 4096, lossLambda: 0.5 }        # DenseCL's own arguments, paper defaults
 *     optimizer: { baseLr: 0.03 }                        # defaults from the method's official recipe
 */
import { z } from 'zod';
import { limitMessage } from '../../core/bounds.js';
import { BACKEND_CHOICES } from '../../core/tf.js';
import { RESNET_PRESETS, type ResNetPreset } from '../engine/resnet.js';
import { VIT_PRESETS, type VitPreset } from '../engine/vit.js';
import { isMethodName, METHOD_NAMES, METHODS, type MethodName } from '../methods/index.js';
import type { BackboneFamily, MethodModule, OptimizerKind } from '../methods/shared/contract.js';

/**
 * The backbone presets of each family and the one a method of that family trains by default. A method declares its
 * family (`MethodModule.architecture`, default ResNet); `pretrain.backbone.arch` must name a preset of it.
 */
export const BACKBONE_FAMILIES = {
  resnet: { presets: Object.keys(RESNET_PRESETS) as [ResNetPreset, ...ResNetPreset[]], default: 'resnet18-w16-cifar' },
  vit: { presets: Object.keys(VIT_PRESETS) as [VitPreset, ...VitPreset[]], default: 'vit-micro-64' },
} as const satisfies Record<BackboneFamily, { presets: readonly [string, ...string[]]; default: string }>;

export type BackboneArch = ResNetPreset | VitPreset;

/** The family of a preset name, or undefined for an unknown name. */
export function backboneFamily(arch: string): BackboneFamily | undefined {
  return (Object.keys(BACKBONE_FAMILIES) as BackboneFamily[]).find((f) => (BACKBONE_FAMILIES[f].presets as readonly string[]).includes(arch));
}
const OPTIMIZERS = ['sgd', 'lars', 'adamw'] as const satisfies readonly OptimizerKind[];

/** Upper bounds of the shared fields (core/bounds.ts); each message says what it protects. */
export const PRETRAIN_LIMITS = {
  batchSize: 4096,
  imageSize: 1024,
  steps: 10_000_000,
  epochs: 10_000,
  checkpointSteps: 10_000_000,
  checkpointSeconds: 7 * 24 * 3600,
  /** Any method argument named `…queueSize` (MoCo-style memory queues). */
  queueSize: 1 << 20,
} as const;

/** What every method shares. */
function backboneField(family: BackboneFamily) {
  const f = BACKBONE_FAMILIES[family];
  return z
    .strictObject({
      /** A stages/engine preset of the method's family (torchvision / timm names); downstream evaluation rebuilds the same one. */
      arch: z.enum(f.presets as unknown as [BackboneArch, ...BackboneArch[]]).default(f.default),
    })
    .prefault({});
}

const commonFields = {
  backbone: backboneField('resnet'),
  batchSize: z
    .number()
    .int()
    .min(2)
    .max(PRETRAIN_LIMITS.batchSize, limitMessage(PRETRAIN_LIMITS.batchSize, 'every view of a batch and its activations are held in the worker\'s memory at once'))
    .default(32),
  /** Optimizer steps; ignored when `epochs` is set. */
  steps: z
    .number()
    .int()
    .min(1)
    .max(PRETRAIN_LIMITS.steps, limitMessage(PRETRAIN_LIMITS.steps, 'the loss curve kept in every checkpoint and the report grows with the steps'))
    .default(200),
  /** Passes over the split; total steps = floor(epochs · samples / batchSize). */
  epochs: z
    .number()
    .positive()
    .max(PRETRAIN_LIMITS.epochs, limitMessage(PRETRAIN_LIMITS.epochs, 'the run length (and its loss curve) grows with the epochs'))
    .optional(),
  imageSize: z
    .number()
    .int()
    .min(16)
    .max(PRETRAIN_LIMITS.imageSize, limitMessage(PRETRAIN_LIMITS.imageSize, 'activation memory grows with the square of the image side'))
    .default(64),
  split: z.string().default('train'),
  seed: z.number().int().min(0).default(0),
  /** Save a checkpoint after this many steps or this many seconds, whichever comes first. */
  checkpointEvery: z
    .strictObject({
      steps: z.number().int().min(1).max(PRETRAIN_LIMITS.checkpointSteps, limitMessage(PRETRAIN_LIMITS.checkpointSteps, 'work lost to a killed worker grows with the interval')).default(100),
      seconds: z.number().positive().max(PRETRAIN_LIMITS.checkpointSeconds, limitMessage(PRETRAIN_LIMITS.checkpointSeconds, 'work lost to a killed worker grows with the interval (one week)')).default(600),
    })
    .prefault({}),
  backend: z.enum(BACKEND_CHOICES as [string, ...string[]]).default('auto'),
};

/** A method's argument schema that fills every default when `args` is left out. */
function withDefaults<S extends z.ZodObject>(schema: S) {
  return schema.prefault({} as z.input<S>);
}

/** One member of the union: the common fields, the method's name, its arguments and its recipe's defaults. */
function memberSchema<const N extends MethodName>(name: N) {
  const module = METHODS[name] as MethodModule;
  const o = module.optimizer;
  return z.strictObject({
    method: z.literal(name),
    ...commonFields,
    backbone: backboneField(module.architecture ?? 'resnet'),
    /** The method's own arguments; every default is the paper's (docs/methods/NAME.md). */
    args: withDefaults(METHODS[name].args as (typeof METHODS)[N]['args']),
    optimizer: z
      .strictObject({
        kind: z.enum(OPTIMIZERS).default(o.kind),
        /** Learning rate at batch 256; the run uses baseLr · batchSize / 256 (linear scaling). */
        baseLr: z.number().positive().default(o.baseLr),
        /** SGD / LARS momentum, AdamW β1. */
        momentum: z.number().min(0).max(1).default(o.momentum),
        weightDecay: z.number().min(0).default(o.weightDecay),
      })
      .prefault({}),
    schedule: z
      .strictObject({
        kind: z.enum(['cosine', 'constant']).default(o.schedule ?? 'cosine'),
        /** Linear warm-up steps; default the official recipe's fraction of the run. */
        warmupSteps: z.number().int().min(0).optional(),
      })
      .prefault({}),
  });
}

type Members = { [N in MethodName]: ReturnType<typeof memberSchema<N>> };
const members = Object.fromEntries(METHOD_NAMES.map((n) => [n, memberSchema(n)])) as Members;

/** Where an argument lives, for the error that says so. */
function argOwners(key: string): MethodName[] {
  return METHOD_NAMES.filter((n) => Object.hasOwn(METHODS[n].args.shape, key));
}

/** Fields that were flat in configs before methods had their own `args`. */
const MOVED_TO_ARGS: Record<string, string> = {
  temperature: 'temperature',
  queueSize: 'queueSize',
  emaMomentum: 'momentum',
  embedDim: 'embedDim',
  hiddenDim: 'hiddenDim',
  lossLambda: 'lossLambda',
  shuffleBnGroups: 'shuffleBnGroups',
};

/**
 * Clear errors before the union sees the object: an unknown method lists the known ones, an argument
 * of another method says whose it is, a pre-`args` flat field says where it moved. `method` defaults
 * to DenseCL.
 */
function precheck(raw: unknown, ctx: z.RefinementCtx): unknown {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const r = { ...(raw as Record<string, unknown>) };
  r.method ??= 'densecl';
  if (!isMethodName(r.method)) {
    ctx.addIssue({ code: 'custom', path: ['method'], message: `unknown method ${JSON.stringify(r.method)} (valid: ${METHOD_NAMES.join(', ')})` });
    return z.NEVER;
  }
  const method = r.method;
  const family = (METHODS[method] as MethodModule).architecture ?? 'resnet';
  const arch = (r.backbone as { arch?: unknown } | undefined)?.arch;
  if (typeof arch === 'string' && backboneFamily(arch) !== undefined && backboneFamily(arch) !== family) {
    ctx.addIssue({
      code: 'custom',
      path: ['backbone', 'arch'],
      message: `${method} trains a ${family === 'vit' ? 'Vision Transformer' : 'ResNet'}; '${arch}' is a ${backboneFamily(arch)} preset (valid: ${BACKBONE_FAMILIES[family].presets.join(', ')})`,
    });
    return z.NEVER;
  }
  for (const [flat, arg] of Object.entries(MOVED_TO_ARGS)) {
    if (flat in r) {
      ctx.addIssue({ code: 'custom', path: [flat], message: `method arguments live under pretrain.args now: write pretrain.args.${arg}` });
      delete r[flat];
    }
  }
  const args = r.args;
  if (args && typeof args === 'object' && !Array.isArray(args)) {
    const own = METHODS[method].args.shape as Record<string, unknown>;
    const kept: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(args)) {
      if (Object.hasOwn(own, key)) {
        // Every method's memory queues (MoCo's K and its relatives) share one bound, whatever the method file says.
        if (/queuesize$/i.test(key) && typeof value === 'number' && value > PRETRAIN_LIMITS.queueSize) {
          ctx.addIssue({
            code: 'custom',
            path: ['args', key],
            message: limitMessage(PRETRAIN_LIMITS.queueSize, 'a queue of K keys × D floats (and its copy in every checkpoint) is held in memory: 2^20 × 128 floats is 512 MiB'),
          });
          continue;
        }
        kept[key] = value;
        continue;
      }
      const owners = argOwners(key);
      const whose = owners.length ? `an argument of ${owners.join(', ')}, not of ${method}` : `not an argument of ${method}`;
      ctx.addIssue({ code: 'custom', path: ['args', key], message: `${whose} (valid for ${method}: ${Object.keys(own).join(', ')})` });
    }
    r.args = kept;
  }
  return r;
}

export const pretrainConfigSchema = z.preprocess(precheck, z.discriminatedUnion('method', Object.values(members) as unknown as [Members[MethodName], ...Members[MethodName][]]));

export type PretrainConfig = z.infer<typeof pretrainConfigSchema>;
/** A pretrain section as written in a config file (every field optional). */
export type PretrainConfigInput = { method?: MethodName; args?: Record<string, unknown> } & Partial<Omit<z.input<Members['densecl']>, 'method' | 'args'>>;
