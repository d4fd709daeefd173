/**
 * The method contract: what a pretraining method is, what it consumes per step, and how the one
 * training loop (stages/pretrain/loop.ts) drives it. A method is one module exporting one
 * `MethodModule`; the registry (./index.ts) maps names to modules, and the config schema, CLI help,
 * suites and docs index are derived from it.
 *
 * A module declares:
 *   - `name`, `title`, `paper`, `code` (official repository and the commit read);
 *   - `args`: its own zod schema, every default the paper's (or official config's) value;
 *   - `consumes`: the views it needs (each view's augmentation recipe), whether it reads their crop
 *     geometry, proposals (boxes or region masks, mapped into each view), labels;
 *   - `optimizer`: kind (SGD / LARS / AdamW) and schedule defaults at batch 256;
 *   - `create`: builds the trainable state and returns a `MethodInstance` whose `step` runs one
 *     optimisation step in the official order.
 *
 * Nothing here depends on a particular backbone: a method gets a `BackboneFactory` and builds as many
 * encoders (online, momentum) as it needs.
 */
import type * as tf from '@tensorflow/tfjs';
import type { z } from 'zod';
import type { Rng } from '../../../core/rng.js';
import type { ViewSpec } from '../../data/augment.js';
import type { Box, ViewGeometry } from '../../data/geometry.js';
import type { CheckpointComponent } from '../../engine/checkpoint.js';
import type { ForwardOptions } from '../../engine/layers.js';
import type { ParamStore } from '../../engine/params.js';
import type { VisionTransformer, VitConfig } from '../../engine/vit.js';

// ------------------------------------------------------------------------------------------------
// Backbones
// ------------------------------------------------------------------------------------------------

/** A backbone truncated after its last stage (ResNet C5): images → feature map. */
export interface FeatureBackbone {
  /** Channels of the last feature map (2048 for ResNet-50, 512 for ResNet-18). */
  readonly outChannels: number;
  /** Total stride of the last feature map (32 for a torchvision ResNet, 8 for the small-image stem). */
  readonly stride?: number;
  /** Channels of every stage's output, C2..C5 for a ResNet (FPN methods: CCOP; C4 methods: R2O). */
  readonly stageChannels?: readonly number[];
  /** [B, H, W, 3] → [B, h, w, C]. `opts.training` = batch-statistics BN, as in `model.train()`. */
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D;
  /** Every stage's output, C2..C5 (the last one is what `apply` returns), from one forward pass. */
  applyStages?(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D[];
}

/**
 * Builds one backbone into `store` under `prefix` (names like `backbone.layer1.0.conv1.weight`). A
 * momentum-encoder method calls it twice: once for the online encoder, once for the momentum encoder.
 */
export type BackboneFactory = (store: ParamStore, prefix: string, seed: number | string) => FeatureBackbone;

// ------------------------------------------------------------------------------------------------
// What a method consumes per step
// ------------------------------------------------------------------------------------------------

/** Proposals as a method's official code reads them. */
export type ProposalKind = 'boxes' | 'regions';

export interface ProposalNeeds {
  kind: ProposalKind;
  /**
   * How boxes are kept after being mapped into a view (clipped to it): at least `minVisible` of the
   * box's area inside the view, and at least `minSize` view pixels on each side. At most `maxPerView`
   * are kept, in stored order (the proposal stage's order).
   */
  boxes?: { minVisible: number; minSize: number; maxPerView: number };
  /**
   * Redraw each view's crop until at least min(`minBoxes`, number of boxes) of the image's boxes are more than
   * `minVisible` inside it, up to `maxTries` crops; when none qualifies, the crop that kept the most (the last
   * such on ties). CCOP's `AdvancedInstanceContrastAug.apply_aug` (max_try 10, min_box_num 1, part_thr 0.6).
   */
  cropRetry?: { maxTries: number; minBoxes: number; minVisible: number };
}

export interface Consumes<Args = any> {
  /** One recipe per view, for views of `imageSize` pixels (the config's `pretrain.imageSize`) and the method's arguments. */
  views(imageSize: number, args: Args): ViewSpec[];
  /** One flip decision shared by every view of an image (ReSim). */
  sharedFlip?: boolean;
  /** The step reads `batch.geometry` (crop boxes, flips): PixPro, ReSim, SCRL, … */
  geometry: boolean;
  /** The step reads `batch.proposals`; the run must have proposals of this kind. */
  proposals?: ProposalNeeds;
  /** The step reads `batch.labels` (a supervised baseline). */
  labels?: boolean;
  /**
   * The method builds on a backbone pretrained by an earlier densepipe run (UP-DETR's frozen CNN, DetReg's frozen
   * self-supervised encoder): `arg` names the `args` field that holds that run's `backbone.safetensors` key in the run's
   * store (null = random init, for tests and ablations). The stage reads the file before `create` and hands it over
   * as `MethodBuild.pretrained`; the key is part of `args`, so of the pretrain stage's cache key.
   */
  pretrainedBackbone?: { arg: string };
}

/** One image's proposals as seen in one view (view pixels, pixel-edge frame). */
export interface ViewProposals {
  /** Kept boxes, [x0, y0, x1, y1) in view pixels. */
  boxes: Box[];
  /** The image's stored boxes in decoded-image pixels, in stored order, unfiltered (the same array for every view): for rules across views (CCOP's pairing). */
  original: Box[];
  /** Region label map resampled into the view (nearest), row-major `height × width`, -1 = none; `regions` only. */
  regions?: Int32Array;
}

/** What the loop hands to `step`: exactly what the method declared. */
export interface MethodBatch {
  /** One [B, size, size, 3] ImageNet-normalised tensor per declared view. */
  views: tf.Tensor4D[];
  /** `geometry[v][b]`: where view v of image b came from. Always present (cheap); read it only if declared. */
  geometry: ViewGeometry[][];
  /** `proposals[v][b]`, present when declared. */
  proposals?: ViewProposals[][];
  /** Multi-hot class targets [B, classes], present when declared. */
  labels?: tf.Tensor2D;
}

// ------------------------------------------------------------------------------------------------
// Optimisation
// ------------------------------------------------------------------------------------------------

export type OptimizerKind = 'sgd' | 'lars' | 'adamw';

/** Defaults from the official recipe; the learning rate is given at batch 256 and scaled linearly. */
export interface OptimizerDefaults {
  kind: OptimizerKind;
  baseLr: number;
  /** SGD / LARS momentum; AdamW β1. */
  momentum: number;
  weightDecay: number;
  /**
   * AdamW only: 'all' decays every parameter (biases, norms and embeddings too), as DETR's param groups hand every
   * parameter to torch.optim.AdamW with one weight_decay (UP-DETR, DetReg). 'rank' is timm's `param_groups_weight_decay`
   * (SiameseIM, MAE): only tensors of rank ≤ 1 and `.bias` excluded, so cls/mask tokens ARE decayed. Default: biases,
   * norms and tokens excluded.
   */
  adamwDecay?: 'all' | 'rank';
  /** AdamW only: β2; default torch's 0.999 (SiameseIM and MAE: `betas=(0.9, 0.95)`). */
  beta2?: number;
  /**
   * AdamW only: parameters whose name contains one of `match` train at `scale` × the learning rate (their own torch
   * param group): Deformable DETR's `lr_linear_proj_names` (reference_points, sampling_offsets) × `lr_linear_proj_mult`
   * 0.1 (DetReg). Default: one learning rate for every parameter.
   */
  lrMultiplier?: { match: readonly string[]; scale: number };
  /** Linear warm-up, as a fraction of all steps (PixPro: 5 of 100 epochs). */
  warmupFraction: number;
  /** The learning-rate schedule after warm-up; default cosine (DenseSiam's release keeps it constant). */
  schedule?: 'cosine' | 'constant';
  /**
   * SGD only (LARS and AdamW exclude biases and norms already): 'biasAndNorm' keeps biases and norm parameters out of
   * weight decay, as DINO's `get_params_groups` (SCFS). Default: every parameter decayed (MoCo's single param group).
   */
  sgdNoDecay?: 'biasAndNorm';
}

/** Gradients keyed by ParamStore name (`backbone.conv1.weight`, `neck.mlp.0.weight`). */
export type NamedGradients = Map<string, tf.Tensor>;

export interface StepContext {
  /** 0-based index of this step. */
  step: number;
  totalSteps: number;
  /** Randomness of this step (shuffle-BN permutations, RegionCL boxes): a function of (seed, step). */
  rng: Rng;
  /** The optimizer, at this step's learning rate. Gradients are read, not disposed. */
  applyGradients(grads: NamedGradients): void;
}

export interface StepResult {
  /** The loss before the update. */
  loss: number;
  /** Loss terms for logging (already weighted), e.g. DenseCL's `single` and `dense`. */
  parts: Record<string, number>;
}

/** A built method: its trainable state and its step. */
export interface MethodInstance<Args = unknown> {
  readonly args: Args;
  /** Online encoder: `backbone.*` (the exported weights) plus the method's heads. What the optimizer trains. */
  readonly online: ParamStore;
  /** Everything else the training state holds (momentum encoder, queues, prototypes, centres), by component name. */
  readonly state: Record<string, CheckpointComponent>;
  /** The store whose `backbone.*` is exported after training; default `online`. DINO-style methods evaluate their EMA teacher (SCFS: `--checkpoint_key teacher`). */
  readonly exported?: ParamStore;
  step(batch: MethodBatch, ctx: StepContext): StepResult;
  /** Multiplies the loop's scheduled learning rate at this step (R2O: k/16 with its curriculum's k); default 1. */
  lrScale?(step: number, totalSteps: number): number;
  /**
   * Weights exported beside the backbone (a pretrained detector's transformer and heads: UP-DETR, DetReg), by name:
   * each is written as `<name>.safetensors` (official state_dict names, PyTorch layouts) and its key is listed in the
   * stage's result under `exports.<name>`.
   */
  readonly exports?: Record<string, MethodExport>;
  dispose(): void;
}

/** One extra export: the tensors of `store` not `exclude`d, with `stripPrefix` removed from their names. */
export interface MethodExport {
  store: ParamStore;
  stripPrefix?: string;
  exclude?: (name: string) => boolean;
  /** Strings for the file's `__metadata__` (what the weights are, how to load them). */
  metadata?: Record<string, string>;
}

/** A backbone file read for `consumes.pretrainedBackbone`. */
export interface PretrainedBackbone {
  /** Its key in the run's store. */
  key: string;
  /**
   * Copies the file into `store`'s variables named `<prefix>.<torchvision name>` (PyTorch layouts converted); every
   * variable under the prefix must be in the file with its shape, else IncompatibleArtifactError naming the tensor.
   */
  load(store: ParamStore, prefix: string): void;
}

/**
 * How a method's official code initialises its ResNet where that differs from torchvision's `resnet50()` defaults
 * (convs kaiming fan_out, every BN γ 1 and β 0), which the engine's ResNet follows (`MethodModule.backboneInit`).
 */
export interface BackboneInit {
  /**
   * Zero the γ of the last BatchNorm of every residual branch (BasicBlock `bn2`, Bottleneck `bn3`; not the stem's `bn1`,
   * not `downsample.1`), so each block starts as its shortcut: torchvision's `zero_init_residual=True`, mmcv/OpenSelfSup's
   * `zero_init_residual`, a hand-written `nn.init.constant_(m.bn3.weight, 0)`.
   */
  zeroInitResidual: boolean;
  /** Where the official code does it: file and line at the module's `code.commit`. */
  why: string;
}

/** The backbone families a method can declare (`MethodModule.architecture`). */
export type BackboneFamily = 'resnet' | 'vit';

/** The configured Vision Transformer, for methods of the ViT family (SiameseIM, MoCo v3). */
export interface VitBuild {
  /** The preset's name (`pretrain.backbone.arch`). */
  preset: string;
  /** The preset with `imageSize` set to the run's `pretrain.imageSize`. */
  config: VitConfig;
  /** Builds one ViT into `store` under `prefix` (timm names: `backbone.blocks.0.attn.qkv.weight`). */
  build(store: ParamStore, prefix: string, seed: number | string): VisionTransformer;
}

export interface MethodBuild<Args> {
  args: Args;
  /** ResNet family: the C5 feature extractor; ViT family: the patch tokens as a [B, g, g, D] map (no masking). */
  backbone: BackboneFactory;
  /** The configured ViT (ViT-family methods only). */
  vit?: VitBuild;
  /** Channels of the backbone's last feature map (the default width of the heads, as in the papers). */
  backboneChannels: number;
  seed: number;
  batchSize: number;
  imageSize: number;
  totalSteps: number;
  /** The backbone named by `consumes.pretrainedBackbone` (absent: none named, random init). */
  pretrained?: PretrainedBackbone;
}

/**
 * A headline claim of the paper over a baseline, in terms the zoo benchmark (bench/zoo.ts) can check on the
 * built-in data: this method's `metric` is higher than `over`'s. `paper` quotes the number it rests on.
 */
export interface Claim {
  /** A backbone-task metric, or a detector method's `detr.AP` (the evaluation's `detr` task: its detector fine-tuned). */
  metric: 'semseg.mIoU' | 'unsup-seg.mIoU' | 'knn.top1' | 'linear.top1' | 'detr.AP';
  over: string;
  paper: string;
}

/** Settings for short runs on small data (the zoo benchmark, small configs), each change with its reason. */
export interface SmallScale {
  args?: Record<string, unknown>;
  optimizer?: Partial<Pick<OptimizerDefaults, 'baseLr' | 'momentum' | 'weightDecay'>>;
  why: string;
}

export interface MethodModule<Schema extends z.ZodObject = z.ZodObject> {
  /** Registry key and config value (`pretrain.method`). */
  readonly name: string;
  /**
   * Bumped when a change alters what this method's runs write (its step, its data needs), so that only its own
   * cached pretraining outputs are redone; it enters the pretrain stage's key when set. Absent = '1'.
   */
  readonly version?: string;
  /** The backbone family it trains (`pretrain.backbone.arch` must be one of its presets); absent = ResNet. */
  readonly architecture?: BackboneFamily;
  /**
   * ResNet family only: the official code's init of the backbone where it departs from torchvision's defaults, applied
   * by the pretrain stage where it builds the method's backbone (`createMethod` → `resnetBackbone`), so every encoder
   * the method builds from `MethodBuild.backbone` (online and momentum) starts from it. Absent = the defaults, as the
   * supervised baseline and the random-init evaluation keep. It changes what a method learns: set it together with a
   * bump of `version`. test/methods/backbone-init.test.ts holds the survey of every method's official code it must match.
   */
  readonly backboneInit?: BackboneInit;
  /** One line for CLI help and the docs index. */
  readonly title: string;
  readonly paper: { citation: string; url: string };
  readonly code: { repo: string; commit: string };
  /** The method's own arguments (`pretrain.args`), each default the paper's. */
  readonly args: Schema;
  readonly consumes: Consumes<z.infer<Schema>>;
  readonly optimizer: OptimizerDefaults;
  readonly smallScale?: SmallScale;
  /**
   * What the paper claims over a baseline method (checked by the zoo benchmark's claim-check table): MoCo v2, or for a
   * ViT method its parent on the same backbone (SiameseIM over MoCo v3).
   */
  readonly claims?: Claim[];
  /** Checks that need the run's sizes (queue a multiple of the batch, …); throw BadInputError naming the `args.*` field. */
  validate?(args: z.infer<Schema>, sizes: { batchSize: number; imageSize: number }): void;
  create(build: MethodBuild<z.infer<Schema>>): MethodInstance<z.infer<Schema>>;
}

/** Identity function that keeps a module's argument type precise (use it to define every module). */
export function defineMethod<Schema extends z.ZodObject>(module: MethodModule<Schema>): MethodModule<Schema> {
  return module;
}
