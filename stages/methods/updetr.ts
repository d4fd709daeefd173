/**
 * UP-DETR — "UP-DETR: Unsupervised Pre-training for Object Detection with Transformers", Dai, Cai, Lin, Chen, CVPR 2021
 * (TPAMI 2022), https://arxiv.org/abs/2011.09094.
 * Authors' code: dddzg/up-detr@44c0c6e `models/updetr.py` (UPDETR: query patches, grouping, attention mask, patch drop),
 * `models/detr.py` (SetCriterion with `loss_feature`), `models/__init__.py` (num_classes 2, weight_dict with
 * loss_feature 1), `datasets/selfdet.py` (random query patches and their transforms), `main.py` + `engine.py` (AdamW,
 * --fre_cnn, clip_max_norm 0.1, StepLR at --lr_drop), README (the pre-training command: --pre_norm --num_patches 10
 * --feature_recon --fre_cnn --lr_drop 40 --epochs 60, batch 32 × 8 GPUs).
 *
 * Pretext: detect N random patches of the image from their own features. Per image, N boxes b_n (the patch's place in
 * the image, labelled "object"); the frozen CNN f (the backbone, never trained: `--fre_cnn`) gives
 *   g_n = GAP(f(patch_n))                                                          [Cb]  (the reconstruction target)
 *   queries_q = query_embed_q + m_q · patch2query(g_{⌊q / (Q/N)⌋})                 q < Q: patch n feeds its Q/N queries
 *                                                                                  (repeat_interleave), m_q ~ 1[u > mask_ratio]
 *   hs = Transformer(input_proj(f(image)), queries; decoder self-attention mask M)  [L, B, Q, D]
 *   M[q, q'] = 0 if q and q' belong to the same patch's group, −∞ otherwise
 *   logits = class_embed(hs), boxes = sigmoid(bbox_embed(hs)), ĝ = feature_align(hs)
 * Loss (per decoder layer ℓ, each with its own Hungarian matching σ_ℓ on the class-1 / L1 / GIoU costs):
 *   L = Σ_ℓ [ λ_ce CE_ℓ + λ_L1 L1_ℓ + λ_giou (1 − GIoU)_ℓ + λ_feat Σ_{matched (q, n)} ‖ĝ_q/‖ĝ_q‖ − g_n/‖g_n‖‖² / N_boxes ]
 * (DETR's set loss, 2 classes with the patches as class 1 and eos_coef 0.1 for no-object; the feature term summed over
 * its Cb dimensions and divided by the number of boxes, as `loss_feature`). AdamW over everything but the CNN, gradient
 * norm clipped to 0.1, learning rate ×0.1 after `--lr_drop` of `--epochs`.
 *
 * Shapes: B images, S view side (px), N patches per image, P patch side (px), Cb backbone channels, h×w feature map,
 * D transformer width, Q queries, L decoder layers.
 *
 * The patches are drawn in the step from the step's rng, as the dataset draws them for every sample it serves; the
 * proposal stage's `updetr-random` preset would fix one set of boxes per image for the whole run instead.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import type { ViewSpec } from '../data/augment.js';
import { setCriterion, type SetCriterionConfig } from '../engine/detr/criterion.js';
import { DetrHead, DetrMlp, maskToFeatureSize, type DetrHeadConfig, type DetrHeadOutput } from '../engine/detr/detr.js';
import type { DetrTarget, MatchIndices } from '../engine/detr/matcher.js';
import { Linear } from '../engine/layers.js';
import { roiAlign, type RoiBox } from '../engine/ops/roi_align.js';
import { Initializer, ParamStore } from '../engine/params.js';
import { l2Norm } from '../engine/ops/norm.js';
import { defineMethod, type FeatureBackbone, type MethodBatch, type MethodBuild, type MethodExport, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { assertFiniteDetections, clippedStep, detectorExport, frozenBackbone, selfdetCropSourceView, weightedParts, wholeImageView, type DetectorLoss } from './shared/detector-pretraining.js';

/** UP-DETR's arguments, each default from main.py / the README's pre-training command at 44c0c6e. */
export const updetrArgs = z.strictObject({
  backboneKey: z
    .string()
    .min(1)
    .nullable()
    .default(null)
    .describe(
      'the frozen CNN: an earlier densepipe run\'s backbone.safetensors key in this run\'s store (the paper freezes a SwAV ResNet-50: models/backbone.py loads swav_800ep_pretrain, --fre_cnn); null = random init, for tests only',
    ),
  numPatches: z.number().int().min(1).default(10).describe('N, query patches per image (`--num_patches 10`)'),
  numQueries: z.number().int().min(1).default(100).describe('Q, object queries (`--num_queries 100`); a multiple of numPatches (updetr.py asserts it): each patch feeds Q/N queries'),
  maskRatio: z.number().min(0).lt(1).default(0.1).describe('probability that a query\'s patch feature is dropped (`mask_ratio=0.1`, UPDETR default)'),
  queryShuffle: z.boolean().default(false).describe('shuffle which object query each patch feature is added to (`--query_shuffle`, off in the README command)'),
  featureRecon: z.boolean().default(true).describe('the feature-reconstruction branch and its loss (`--feature_recon`, on in the README command)'),
  patchSize: z.number().int().min(8).default(128).describe('P, side the patches are resized to before the CNN (`transforms.Resize((128, 128))`, selfdet.py)'),
  minPixel: z.number().int().min(1).default(8).describe('smallest patch side in view pixels (`get_random_patch_from_img(min_pixel=8)`); patches are U[minPixel, S − minPixel] wide and high'),
  hiddenDim: z.number().int().min(2).default(256).describe('D, transformer width (`--hidden_dim 256`)'),
  nheads: z.number().int().min(1).default(8).describe('attention heads (`--nheads 8`)'),
  encLayers: z.number().int().min(1).default(6).describe('encoder layers (`--enc_layers 6`)'),
  decLayers: z.number().int().min(1).default(6).describe('decoder layers (`--dec_layers 6`); every one is supervised (aux loss on)'),
  dimFeedforward: z.number().int().min(1).default(2048).describe('FFN width (`--dim_feedforward 2048`)'),
  dropout: z.number().min(0).lt(1).default(0.1).describe('transformer dropout (`--dropout 0.1`)'),
  preNorm: z.boolean().default(true).describe('pre-norm transformer layers (`--pre_norm`, in both README commands; DETR\'s default is post-norm)'),
  auxLoss: z.boolean().default(true).describe('losses on every decoder layer (main.py default; `--no_aux_loss` turns them off)'),
  eosCoef: z.number().min(0).default(0.1).describe('weight of the no-object class in the classification loss (`--eos_coef 0.1`)'),
  setCostClass: z.number().min(0).default(1).describe('class cost of the Hungarian matching (`--set_cost_class 1`)'),
  setCostBbox: z.number().min(0).default(5).describe('L1 box cost of the matching (`--set_cost_bbox 5`)'),
  setCostGiou: z.number().min(0).default(2).describe('GIoU cost of the matching (`--set_cost_giou 2`)'),
  bboxLossCoef: z.number().min(0).default(5).describe('λ_L1 (`--bbox_loss_coef 5`)'),
  giouLossCoef: z.number().min(0).default(2).describe('λ_giou (`--giou_loss_coef 2`)'),
  featureLossCoef: z.number().min(0).default(1).describe('λ_feat (`weight_dict[\'loss_feature\'] = 1`, models/__init__.py)'),
  clipMaxNorm: z.number().min(0).default(0.1).describe('gradient clipping max norm over all trained parameters (`--clip_max_norm 0.1`); 0 = off'),
  lrDropAt: z.number().gt(0).max(1).default(40 / 60).describe('fraction of the run after which the learning rate is ×0.1 (StepLR at `--lr_drop 40` of `--epochs 60`)'),
});
export type UpDetrArgs = z.infer<typeof updetrArgs>;

/** The class every patch is labelled with (selfdet.py `labels.append(1)`), out of `NUM_CLASSES` (models/__init__.py: 2 for ImageNet). */
const PATCH_LABEL = 1;
const NUM_CLASSES = 2;

/**
 * The two views: the image the detector sees (selfdet.py's detection transform: resize, no flip, no colour change) and
 * the same whole image with the query transform's colour augmentation (`selfdetCropSourceView`), which the patches are
 * cut from. Both cover the whole image, so a box drawn in one is the same box in the other.
 */
function updetrViews(size: number, args: UpDetrArgs): ViewSpec[] {
  return [wholeImageView(size), selfdetCropSourceView(size, args.patchSize)];
}

/**
 * `get_random_patch_from_img` in view pixels: side ~ U{min, …, S − min} per axis, then the corner ~ U{0, …, S − side − 1}
 * (0 when the patch is the whole side): [x, y, w, h] per patch, N per image.
 */
export function drawPatches(rng: Rng, batch: number, width: number, height: number, numPatches: number, minPixel: number): number[][][] {
  const corner = (side: number, full: number) => (side !== full ? rng.int(0, full - side) : 0);
  return Array.from({ length: batch }, () =>
    Array.from({ length: numPatches }, () => {
      const sw = rng.int(minPixel, width - minPixel + 1);
      const sh = rng.int(minPixel, height - minPixel + 1);
      return [corner(sw, width), corner(sh, height), sw, sh];
    }),
  );
}

/** A patch's box as the detector's target: (cx, cy, w, h) normalised by the image size (DETR's ConvertCocoPolysToMask + Normalize). */
export function patchTargets(patches: number[][][], width: number, height: number): DetrTarget[] {
  return patches.map((ps) => ({ labels: ps.map(() => PATCH_LABEL), boxes: ps.map(([x, y, w, h]) => [(x! + w! / 2) / width, (y! + h! / 2) / height, w! / width, h! / height]) }));
}

/**
 * The decoder self-attention mask: 0 inside each patch's group of Q/N consecutive queries, −∞ across groups [Q, Q].
 * updetr.py fills the blocks `for i in range(query_per_patch)`, the same thing when N ≤ Q/N (the README's 10 × 10); for
 * N > Q/N its later groups would see no query at all (NaN), so the groups here are the N patches' (what the paper means).
 */
export function groupAttentionMask(numQueries: number, numPatches: number): tf.Tensor2D {
  const per = numQueries / numPatches;
  const m = new Float32Array(numQueries * numQueries).fill(-Infinity);
  for (let q = 0; q < numQueries; q++) for (let k = 0; k < numQueries; k++) if (Math.floor(q / per) === Math.floor(k / per)) m[q * numQueries + k] = 0;
  return tf.tensor2d(m, [numQueries, numQueries]);
}

/** What one training step is given once its randomness is drawn (the parity test hands the official draws). */
export interface UpDetrInputs {
  /** The image [B, S, S, 3] (ImageNet-normalised). */
  images: tf.Tensor4D;
  /** Padding [B, S, S] bool, true = padded (DETR's NestedTensor mask); absent = none (the views are never padded here). */
  imageMask?: tf.Tensor3D;
  /** The query patches [B·N, P, P, 3], image-major. */
  patches: tf.Tensor4D;
  targets: DetrTarget[];
  /** u [B][Q] ~ U[0, 1): query q's patch feature is kept where u > maskRatio (the official `torch.rand(Q, B, 1)`, transposed). */
  patchDropDraw: number[][];
  /** Which object query each slot takes (`query_shuffle`: a permutation); default 0..Q−1. */
  queryOrder?: number[];
}

/** The forward pass's outputs and the loss terms, per decoder layer (`_i` suffixes as the official loss dict); parts: ce, bbox, giou, feature. */
export type UpDetrLoss = DetectorLoss<DetrHeadOutput & { predFeature?: tf.Tensor4D }>;

export class UpDetr implements MethodInstance<UpDetrArgs> {
  /** `backbone.*` (frozen, not trainable) and the detector under the official names. */
  readonly online = new ParamStore();
  readonly state = {};
  readonly exports: Record<string, MethodExport>;
  readonly backbone: FeatureBackbone;
  readonly head: DetrHead;
  readonly patch2query: Linear;
  readonly featureAlign: DetrMlp | null;
  readonly attentionMask: tf.Tensor2D;
  readonly criterion: SetCriterionConfig;

  constructor(
    readonly args: UpDetrArgs,
    build: Pick<MethodBuild<UpDetrArgs>, 'backbone' | 'seed' | 'pretrained'>,
  ) {
    // --fre_cnn: lr_backbone = 0, so BackboneBase sets requires_grad False on every backbone parameter.
    this.backbone = frozenBackbone(this.online, build);
    const cb = this.backbone.outChannels;
    const config: DetrHeadConfig = {
      backboneChannels: cb,
      numClasses: NUM_CLASSES,
      numQueries: args.numQueries,
      auxLoss: args.auxLoss,
      transformer: {
        dModel: args.hiddenDim,
        nHead: args.nheads,
        numEncoderLayers: args.encLayers,
        numDecoderLayers: args.decLayers,
        dimFeedforward: args.dimFeedforward,
        dropout: args.dropout,
        activation: 'relu',
        normalizeBefore: args.preNorm,
        returnIntermediateDec: true,
      },
    };
    this.head = new DetrHead(this.online.scope(''), config, `updetr-${build.seed}`);
    const init = new Initializer(`updetr-heads:${build.seed}`);
    this.patch2query = new Linear(this.online.scope('patch2query'), init, cb, args.hiddenDim);
    this.featureAlign = args.featureRecon ? new DetrMlp(this.online.scope('feature_align'), init, args.hiddenDim, args.hiddenDim, cb, 2) : null;
    this.attentionMask = groupAttentionMask(args.numQueries, args.numPatches);
    this.criterion = {
      numClasses: NUM_CLASSES,
      eosCoef: args.eosCoef,
      costs: { costClass: args.setCostClass, costBbox: args.setCostBbox, costGiou: args.setCostGiou },
      weights: { ce: 1, bbox: args.bboxLossCoef, giou: args.giouLossCoef },
    };
    const t = config.transformer;
    this.exports = {
      detector: detectorExport(this.online, {
        schema: 'densepipe.detr/v1',
        // What a DETR fine-tune rebuilds: UP-DETR's checkpoint without the backbone (official names; detr_main.py
        // --pretrain drops class_embed and loads the rest with strict=False, ignoring patch2query and feature_align).
        detr: JSON.stringify({ ...t, numQueries: args.numQueries, numClasses: NUM_CLASSES, backboneChannels: cb }),
      }),
    };
  }

  /** The frozen CNN: the image's last feature map and its padding mask at that size, and g = GAP(f(patches)) [B·N, Cb]. No gradient. */
  encode(images: tf.Tensor4D, patches: tf.Tensor4D, imageMask?: tf.Tensor3D): { features: tf.Tensor4D; mask: tf.Tensor3D; patchFeature: tf.Tensor2D } {
    return tf.tidy(() => {
      // FrozenBatchNorm2d: the running statistics, i.e. eval-mode BN.
      const features = this.backbone.apply(images, { training: false });
      const [b, h, w] = features.shape;
      const mask = imageMask ? maskToFeatureSize(imageMask, h, w) : (tf.zeros([b, h, w], 'bool') as tf.Tensor3D);
      const patchFeature = tf.mean(this.backbone.apply(patches, { training: false }), [1, 2]) as tf.Tensor2D;
      return { features, mask, patchFeature };
    });
  }

  /** Object queries per image [B, Q, D]: query_embed (in `order`) + the kept patch features, each patch over its Q/N queries. */
  queries(patchFeature: tf.Tensor2D, patchDropDraw: number[][], order?: number[]): tf.Tensor3D {
    const { numQueries: q, numPatches: n, maskRatio } = this.args;
    const b = patchFeature.shape[0] / n;
    const d = this.args.hiddenDim;
    if (patchDropDraw.length !== b || patchDropDraw.some((row) => row.length !== q)) throw new Error(`UP-DETR: patchDropDraw must be [${b}][${q}]`);
    return tf.tidy(() => {
      const projected = tf.reshape(this.patch2query.apply(patchFeature), [b, n, 1, d]);
      const grouped = tf.reshape(tf.tile(projected, [1, 1, q / n, 1]), [b, q, d]); // repeat_interleave(Q/N, dim=1)
      const keep = tf.tensor3d(patchDropDraw.flatMap((row) => row.map((u) => (u > maskRatio ? 1 : 0))), [b, q, 1]);
      const embed = order ? tf.gather(this.head.queryEmbed, tf.tensor1d(order, 'int32')) : this.head.queryEmbed;
      return tf.add(tf.mul(grouped, keep), embed) as tf.Tensor3D;
    });
  }

  /** Forward pass and loss (`UPDETR.forward` + `SetCriterion.forward` + the weight_dict sum); call under the tape. */
  loss(features: tf.Tensor4D, mask: tf.Tensor3D, patchFeature: tf.Tensor2D, inputs: Pick<UpDetrInputs, 'targets' | 'patchDropDraw' | 'queryOrder'>, ctx: { training: boolean; rng?: Rng }): UpDetrLoss {
    const queries = this.queries(patchFeature, inputs.patchDropDraw, inputs.queryOrder);
    const outputs: UpDetrLoss['outputs'] = this.head.apply(features, mask, ctx, { queries, decoderMask: this.attentionMask });
    assertFiniteDetections(outputs, 'UP-DETR');
    const r = setCriterion(outputs, inputs.targets, this.criterion);
    const losses = { ...r.losses };
    const layers = outputs.hs.shape[0];
    if (this.featureAlign) {
      const predFeature = this.featureAlign.apply(outputs.hs) as tf.Tensor4D; // [L, B, Q, Cb]
      outputs.predFeature = predFeature;
      const numBoxes = Math.max(inputs.targets.reduce((s, t) => s + t.labels.length, 0), 1);
      // r.indices: the last layer's matching first, then aux layer 0, 1, …
      r.indices.forEach((match, i) => {
        const layer = i === 0 ? layers - 1 : i - 1;
        losses[`loss_feature${i === 0 ? '' : `_${i - 1}`}`] = featureLoss(predFeature, layer, patchFeature, match, this.args.numPatches, numBoxes);
      });
    }
    const { parts, total } = weightedParts(losses, { loss_ce: this.criterion.weights.ce, loss_bbox: this.criterion.weights.bbox, loss_giou: this.criterion.weights.giou, loss_feature: this.args.featureLossCoef });
    r.total.dispose();
    return { outputs, total, losses, parts, indices: r.indices };
  }

  /** One optimisation step on drawn inputs: frozen features, loss under the tape, clip_grad_norm_, optimizer. */
  train(inputs: UpDetrInputs, ctx: Pick<StepContext, 'rng' | 'applyGradients'>): StepResult {
    const { features, mask, patchFeature } = this.encode(inputs.images, inputs.patches, inputs.imageMask);
    try {
      return clippedStep(this.online.trainable(), this.args.clipMaxNorm, ctx, () => this.loss(features, mask, patchFeature, inputs, { training: true, rng: ctx.rng }));
    } finally {
      tf.dispose([features, mask, patchFeature]);
    }
  }

  /** Draws the patches (selfdet.py), cuts them from the colour-augmented view, draws the patch drop, and trains. */
  step(batch: MethodBatch, ctx: StepContext): StepResult {
    const [images, source] = batch.views;
    if (!images || !source) throw new BadInputError('UP-DETR reads two views (the image and the patch source)', 'inputs.views');
    const [b, height, width] = images.shape;
    const { numPatches: n, numQueries: q, patchSize } = this.args;
    const drawn = drawPatches(ctx.rng, b, width, height, n, this.args.minPixel);
    const rois = drawn.flatMap((ps, i) => ps.map(([x, y, w, h]): RoiBox => [i, x!, y!, x! + w!, y! + h!]));
    // The crop resized to P × P (selfdet.py: img.crop, then Resize((128, 128))): RoIAlign with pixel-edge boxes.
    const patches = roiAlign(source, rois, { outputSize: patchSize, aligned: true });
    const patchDropDraw = Array.from({ length: b }, () => Array.from({ length: q }, () => ctx.rng.next()));
    const queryOrder = this.args.queryShuffle ? ctx.rng.shuffle(Array.from({ length: q }, (_, i) => i)) : undefined;
    try {
      return this.train({ images, patches, targets: patchTargets(drawn, width, height), patchDropDraw, ...(queryOrder ? { queryOrder } : {}) }, ctx);
    } finally {
      patches.dispose();
    }
  }

  /** StepLR: ×0.1 once `lrDropAt` of the run is done. */
  lrScale(step: number, totalSteps: number): number {
    return step >= this.args.lrDropAt * totalSteps ? 0.1 : 1;
  }

  dispose(): void {
    this.online.dispose();
    this.attentionMask.dispose();
  }
}

/**
 * `loss_feature` of one decoder layer: Σ over matched (query q of image b, patch n) of ‖ĝ/‖ĝ‖ − g/‖g‖‖² (F.normalize,
 * eps 1e-12), divided by N_boxes. predFeature [L, B, Q, Cb], patchFeature [B·N, Cb].
 */
function featureLoss(predFeature: tf.Tensor4D, layer: number, patchFeature: tf.Tensor2D, match: MatchIndices[], numPatches: number, numBoxes: number): tf.Scalar {
  const [, b, q, cb] = predFeature.shape;
  const src = match.flatMap((m, i) => m.src.map((s) => i * q + s));
  const tgt = match.flatMap((m, i) => m.tgt.map((t) => i * numPatches + t));
  if (src.length === 0) return tf.scalar(0);
  return tf.tidy(() => {
    const pred = tf.reshape(tf.slice(predFeature, [layer, 0, 0, 0], [1, b, q, cb]), [b * q, cb]);
    const normalize = (x: tf.Tensor2D) => tf.div(x, tf.maximum(l2Norm(x, 1, true), 1e-12));
    const a = normalize(tf.gather(pred, tf.tensor1d(src, 'int32')) as tf.Tensor2D);
    const g = normalize(tf.gather(patchFeature, tf.tensor1d(tgt, 'int32')) as tf.Tensor2D);
    return tf.div(tf.sum(tf.square(tf.sub(a, g))), numBoxes) as tf.Scalar;
  });
}

export const updetr = defineMethod({
  name: 'updetr',
  title: 'UP-DETR: DETR pretrained to detect random query patches from their frozen-CNN features (whole detector exported)',
  paper: { citation: 'Dai, Cai, Lin, Chen. UP-DETR: Unsupervised Pre-training for Object Detection with Transformers. CVPR 2021', url: 'https://arxiv.org/abs/2011.09094' },
  code: { repo: 'dddzg/up-detr', commit: '44c0c6e' },
  args: updetrArgs,
  consumes: { views: updetrViews, geometry: false, pretrainedBackbone: { arg: 'backboneKey' } },
  // main.py: AdamW lr 1e-4 at batch 32 × 8 = 256, weight_decay 1e-4 on every parameter, no warm-up, StepLR (lrScale).
  optimizer: { kind: 'adamw', baseLr: 1e-4, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0, schedule: 'constant', adamwDecay: 'all' },
  smallScale: {
    args: { numPatches: 4, numQueries: 16, hiddenDim: 64, nheads: 4, encLayers: 2, decLayers: 3, dimFeedforward: 256, patchSize: 32, minPixel: 4 },
    optimizer: { baseLr: 1e-3 },
    why: 'a ResNet-18/4 on 64-px synthetic scenes: a 64-wide 2+3-layer transformer, 4 patches of 4 queries (the 10 × 10 grouping scaled), 32-px patches, 4-px minimum side (8 px of a 400-px ImageNet image is 2 %); lr ×10 for a run of a few thousand steps',
  },
  validate(args, { imageSize }) {
    if (args.numQueries % args.numPatches !== 0) throw new BadInputError(`${args.numQueries} queries are not a multiple of ${args.numPatches} patches (updetr.py asserts num_queries % num_patches == 0)`, 'args.numQueries');
    if (args.hiddenDim % args.nheads !== 0) throw new BadInputError(`hidden width ${args.hiddenDim} is not divisible by ${args.nheads} heads`, 'args.hiddenDim');
    if (args.hiddenDim % 2 !== 0) throw new BadInputError(`hidden width ${args.hiddenDim} must be even (the sine position encoding splits it between y and x)`, 'args.hiddenDim');
    if (imageSize <= 2 * args.minPixel) throw new BadInputError(`images of ${imageSize} px leave no room for patches of at least ${args.minPixel} px on each side (selfdet.py skips images of 2·min_pixel or less)`, 'args.minPixel');
  },
  create: ({ args, backbone, seed, pretrained }) => new UpDetr(args, { backbone, seed, ...(pretrained ? { pretrained } : {}) }),
});
