/**
 * DETReg — "DETReg: Unsupervised Pretraining with Region Priors for Object Detection", Bar, Wang, Kantorov, Reed, Herzig,
 * Chechik, Rohrbach, Darrell, Globerson, CVPR 2022, https://arxiv.org/abs/2106.04550.
 * Authors' code: amirbar/DETReg@a4b6363 `models/deformable_detr.py` (DeformableDETR with `feature_embed`, SetCriterion
 * with `loss_object_embedding`), `models/def_matcher.py` (focal-cost Hungarian matcher), `models/deformable_transformer.py`,
 * `models/backbone.py` (`build_swav_backbone_old`: the 'intermediate' embedding head), `datasets/selfdet.py` (top-k
 * selective-search boxes, crops cut from the original image, their transforms), `engine.py` (train_one_epoch: targets'
 * crops through the frozen SwAV model, the weight_dict sum, clip_grad_norm_ 0.1), `main.py` (AdamW param groups with
 * `lr_linear_proj_mult`), `models/__init__.py` (weight_dict, num_classes), `util/default_args.py`,
 * `configs/DETReg_top30_in.sh` (--strategy topk --load_backbone swav --max_prop 30 --object_embedding_loss
 * --lr_backbone 0 --epochs 5 on ImageNet).
 *
 * Pretext: detect the image's top-k selective-search boxes as class "object" and predict, for each, the frozen
 * self-supervised embedding of its crop. Per image, boxes b_n (n < N ≤ k, the ones the detection view keeps) and
 *   z_n = mean_{h,w} f_layer2(crop_n)                          [C3]   frozen SwAV ResNet's layer2 on the crop of b_n cut
 *                                                                      from the ORIGINAL image, 128 × 128 ('intermediate')
 *   logits_ℓ, boxes_ℓ, hs = DeformableDETR(f(image))          ℓ < K decoder layers (stages/engine/detr/deformable.ts)
 *   ẑ_q = feature_embed(hs_{K−1, q})                           MLP D → D → C3, last decoder layer only
 * Loss (each decoder layer ℓ with its own Hungarian matching σ_ℓ on the costs 2·focal + 5·L1 + 2·GIoU):
 *   L = Σ_ℓ [ 2 FL_ℓ + 5 L1_ℓ + 2 (1 − GIoU)_ℓ ] + 1 · mean_{matched (q, n) of σ_{K−1}, c} |ẑ_qc − z_nc|
 * (sigmoid focal loss α 0.25 γ 2 over the 91 classes, normalised by N_boxes; the embedding loss is F.l1_loss's mean over
 * the matched pairs and channels of the last layer only). AdamW (lr 2e-4, wd 1e-4 on every parameter; reference_points
 * and sampling_offsets at lr × 0.1; the backbone frozen: --lr_backbone 0), gradient norm clipped to 0.1.
 *
 * Shapes: B images, S view side (px), N_b boxes of image b, P crop side (px), C3 the backbone's layer2 channels,
 * D transformer width, Q queries, K decoder layers, C classes.
 *
 * The boxes come from the proposals stage (preset `detreg`: OpenCV-style fast selective search on a 128 × 128 squash,
 * first 30 of the random rank order), computed once per image; the official runs the search online in the data loader,
 * so a new random ranking every epoch.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import type { ViewSpec } from '../data/augment.js';
import { boxesIntoView, boxOriginalToView, type Box, type ViewGeometry } from '../data/geometry.js';
import { DeformableDetr, type DeformableDetrConfig, type DeformableDetrOutput } from '../engine/detr/deformable.js';
import { deformableSetCriterion, type DeformableCriterionConfig } from '../engine/detr/deformable_criterion.js';
import { DetrMlp } from '../engine/detr/detr.js';
import type { DetrTarget, MatchIndices } from '../engine/detr/matcher.js';
import { roiAlign, type RoiBox } from '../engine/ops/roi_align.js';
import { Initializer, ParamStore } from '../engine/params.js';
import { defineMethod, type FeatureBackbone, type MethodBatch, type MethodBuild, type MethodExport, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { assertFiniteDetections, clippedStep, detectorExport, frozenBackbone, selfdetCropSourceView, weightedParts, type DetectorLoss } from './shared/detector-pretraining.js';

/** DETReg's arguments, each default from util/default_args.py (model deformable_detr) and configs/DETReg_top30_in.sh at a4b6363. */
export const detregArgs = z.strictObject({
  backboneKey: z
    .string()
    .min(1)
    .nullable()
    .default(null)
    .describe(
      "the frozen backbone, which is also the embedding model: an earlier densepipe run's backbone.safetensors key in this run's store (the paper freezes a SwAV ResNet-50: --load_backbone swav --lr_backbone 0, and build_swav_backbone_old builds the target model from the same weights); null = random init, for tests only",
    ),
  maxProp: z.number().int().min(1).default(30).describe('k, selective-search boxes per image, the first of the stored (random rank) order (`--max_prop 30`, strategy topk)'),
  numQueries: z.number().int().min(1).default(300).describe('Q, object queries (default_args deformable_detr num_queries 300)'),
  numClasses: z.number().int().min(2).default(91).describe('C, sigmoid classes of class_embed; every box is class 1 (models/__init__.py: 90 + 1 for the default dataset_file coco, which the ImageNet pretraining keeps)'),
  hiddenDim: z.number().int().min(2).default(256).describe('D, transformer width (`--hidden_dim 256`)'),
  nheads: z.number().int().min(1).default(8).describe('attention heads (`--nheads 8`)'),
  encLayers: z.number().int().min(1).default(6).describe('encoder layers (`--enc_layers 6`)'),
  decLayers: z.number().int().min(1).default(6).describe('decoder layers (`--dec_layers 6`); every one is supervised (aux loss on)'),
  dimFeedforward: z.number().int().min(1).default(1024).describe('FFN width (default_args deformable_detr dim_feedforward 1024)'),
  dropout: z.number().min(0).lt(1).default(0.1).describe('transformer dropout (`--dropout 0.1`)'),
  numFeatureLevels: z.number().int().min(4).max(8).default(4).describe('feature levels: C3, C4, C5 and extra stride-2 levels (`--num_feature_levels 4`)'),
  encNPoints: z.number().int().min(1).default(4).describe('sampling points per head and level in the encoder (`--enc_n_points 4`)'),
  decNPoints: z.number().int().min(1).default(4).describe('sampling points per head and level in the decoder (`--dec_n_points 4`)'),
  patchSize: z.number().int().min(8).default(128).describe('P, side the box crops are resized to before the embedding model (selfdet.py query transform `Resize((128, 128))`)'),
  auxLoss: z.boolean().default(true).describe('box and class losses on every decoder layer (default; `--no_aux_loss` turns them off)'),
  focalAlpha: z.number().min(0).max(1).default(0.25).describe('α of the sigmoid focal loss (`--focal_alpha 0.25`; the matcher\'s α 0.25 is fixed in def_matcher.py)'),
  setCostClass: z.number().min(0).default(2).describe('focal class cost of the matching (default_args deformable_detr set_cost_class 2)'),
  setCostBbox: z.number().min(0).default(5).describe('L1 box cost of the matching (`--set_cost_bbox 5`)'),
  setCostGiou: z.number().min(0).default(2).describe('GIoU cost of the matching (`--set_cost_giou 2`)'),
  clsLossCoef: z.number().min(0).default(2).describe('λ_cls of the focal loss (default_args deformable_detr cls_loss_coef 2)'),
  bboxLossCoef: z.number().min(0).default(5).describe('λ_L1 (`--bbox_loss_coef 5`)'),
  giouLossCoef: z.number().min(0).default(2).describe('λ_giou (`--giou_loss_coef 2`)'),
  objectEmbeddingCoef: z.number().min(0).default(1).describe('λ_emb of the object-embedding L1 loss (`--object_embedding_coef 1`)'),
  clipMaxNorm: z.number().min(0).default(0.1).describe('gradient clipping max norm over all trained parameters (`--clip_max_norm 0.1`); 0 = off'),
  lrDropAt: z
    .number()
    .gt(0)
    .max(1)
    .default(1)
    .describe('fraction of the run after which the learning rate is ×0.1 (StepLR at --lr_drop 40); 1 = never, as the ImageNet run (DETReg_top30_in.sh: --epochs 5 < lr_drop 40); 0.8 = the 50-epoch IN-100 / COCO runs'),
});
export type DetRegArgs = z.infer<typeof detregArgs>;

/** The class every box is labelled with (selfdet.py `torch.ones(len(boxes))`). */
const OBJECT_LABEL = 1;

/**
 * The two views: the detection view (selfdet.py's detection transform: horizontal flip, then a resize or a resized
 * crop, no colour change) and the whole image with the crop transform's colour augmentation (`selfdetCropSourceView`,
 * UP-DETR's query transform), which the box crops are cut from at their original boxes.
 */
function detregViews(size: number, args: DetRegArgs): ViewSpec[] {
  return [{ size, scale: [0.4, 1], ratio: [3 / 4, 4 / 3], flipP: 0.5 }, selfdetCropSourceView(size, args.patchSize)];
}

/**
 * The pseudo ground truth of one image: its first `maxProp` stored boxes (decoded-image pixels) as the detection view
 * sees them — clipped to the view, dropped when nothing is left (transforms.py `crop` keeps boxes of positive area,
 * `hflip` mirrors them) — as normalised (cx, cy, w, h), and the ORIGINAL box of each kept one, where its crop is cut.
 */
export function detectionTargets(original: readonly Box[], detection: ViewGeometry, maxProp: number): { target: DetrTarget; kept: Box[] } {
  const boxes: number[][] = [];
  const kept: Box[] = [];
  const first = original.slice(0, maxProp);
  boxesIntoView(detection, first).forEach(({ box }, n) => {
    if (!box) return;
    const [x0, y0, x1, y1] = box;
    boxes.push([(x0 + x1) / 2 / detection.width, (y0 + y1) / 2 / detection.height, (x1 - x0) / detection.width, (y1 - y0) / detection.height]);
    kept.push(first[n]!);
  });
  return { target: { labels: boxes.map(() => OBJECT_LABEL), boxes }, kept };
}

/** What one training step is given once its randomness is drawn (the parity test hands the official inputs). */
export interface DetRegInputs {
  /** The detection view [B, S, S, 3] (ImageNet-normalised). */
  images: tf.Tensor4D;
  /** Padding [B, S, S] bool, true = padded (NestedTensor.mask); absent = none (the views are never padded here). */
  imageMask?: tf.Tensor3D;
  /** The box crops [Σ_b N_b, P, P, 3], image-major in target order. */
  crops: tf.Tensor4D;
  targets: DetrTarget[];
}

/** The forward pass's outputs and the loss terms (`_i` suffixes as the official loss dict); parts: ce, bbox, giou, object_embedding. */
export type DetRegLoss = DetectorLoss<DeformableDetrOutput & { predFeatures: tf.Tensor3D }>;

export class DetReg implements MethodInstance<DetRegArgs> {
  /** `backbone.*` (frozen, not trainable) and the detector under the official names. */
  readonly online = new ParamStore();
  readonly state = {};
  readonly exports: Record<string, MethodExport>;
  readonly backbone: FeatureBackbone;
  readonly detector: DeformableDetr;
  readonly featureEmbed: DetrMlp;
  readonly criterion: DeformableCriterionConfig;
  /** Backbone stage outputs C2..C5 used: C3, C4, C5 (`return_layers` layer2, layer3, layer4). */
  private readonly levelChannels: number[];

  constructor(
    readonly args: DetRegArgs,
    build: Pick<MethodBuild<DetRegArgs>, 'backbone' | 'seed' | 'pretrained'>,
  ) {
    // --lr_backbone 0: train_backbone False, so BackboneBase sets requires_grad False on every backbone parameter.
    this.backbone = frozenBackbone(this.online, build);
    const stages = this.backbone.stageChannels;
    if (!stages || stages.length < 4 || !this.backbone.applyStages) throw new BadInputError('DETReg needs a backbone with stage outputs C3..C5 (a ResNet)', 'backbone.arch');
    this.levelChannels = stages.slice(1, 4) as number[];
    const config: DeformableDetrConfig = {
      backboneChannels: this.levelChannels,
      numClasses: args.numClasses,
      numQueries: args.numQueries,
      auxLoss: args.auxLoss,
      transformer: {
        dModel: args.hiddenDim,
        nHead: args.nheads,
        numEncoderLayers: args.encLayers,
        numDecoderLayers: args.decLayers,
        dimFeedforward: args.dimFeedforward,
        dropout: args.dropout,
        numFeatureLevels: args.numFeatureLevels,
        encNPoints: args.encNPoints,
        decNPoints: args.decNPoints,
      },
    };
    this.detector = new DeformableDetr(this.online.scope(''), config, `detreg-${build.seed}`);
    // 'intermediate': MLP(D, D, 2·D, 2), 2·D = 512 = ResNet-50's layer2 width, the embedding's size; here C3 of the backbone.
    this.featureEmbed = new DetrMlp(this.online.scope('feature_embed'), new Initializer(`detreg-heads:${build.seed}`), args.hiddenDim, args.hiddenDim, this.levelChannels[0]!, 2);
    this.criterion = {
      numClasses: args.numClasses,
      focalAlpha: args.focalAlpha,
      costs: { costClass: args.setCostClass, costBbox: args.setCostBbox, costGiou: args.setCostGiou },
      weights: { ce: args.clsLossCoef, bbox: args.bboxLossCoef, giou: args.giouLossCoef },
    };
    this.exports = {
      detector: detectorExport(this.online, {
        schema: 'densepipe.deformable-detr/v1',
        // What a Deformable DETR fine-tune rebuilds: DETReg's checkpoint without the backbone, official parameter names
        // (the fine-tune configs load it with --pretrain and drop class_embed; feature_embed is unused there).
        deformableDetr: JSON.stringify({ ...config.transformer, numQueries: args.numQueries, numClasses: args.numClasses, backboneChannels: this.levelChannels, withBoxRefine: false, twoStage: false }),
      }),
    };
  }

  /**
   * The frozen backbone (FrozenBatchNorm: running statistics): the image's C3..C5 and z = mean_{h,w} layer2(crops)
   * [Σ N_b, C3] (build_swav_backbone_old's `model(elem)['0'].mean(dim=(2,3))`). No gradient.
   */
  encode(images: tf.Tensor4D, crops: tf.Tensor4D): { features: tf.Tensor4D[]; embeddings: tf.Tensor2D } {
    return tf.tidy(() => {
      const stages = this.backbone.applyStages!(images, { training: false });
      const features = stages.slice(1, 4);
      const embeddings = crops.shape[0] > 0 ? (tf.mean(this.backbone.applyStages!(crops, { training: false })[1]!, [1, 2]) as tf.Tensor2D) : (tf.zeros([0, this.levelChannels[0]!]) as tf.Tensor2D);
      return { features, embeddings };
    });
  }

  /** Forward pass and loss (`DeformableDETR.forward` + `SetCriterion.forward` + the weight_dict sum); call under the tape. */
  loss(features: tf.Tensor4D[], imageMask: tf.Tensor3D, embeddings: tf.Tensor2D, targets: DetrTarget[], ctx: { training: boolean; rng?: Rng }): DetRegLoss {
    const out = this.detector.apply(features, imageMask, ctx);
    assertFiniteDetections(out, 'DETReg');
    const r = deformableSetCriterion(out, targets, this.criterion);
    const k = out.hs.shape[0];
    const predFeatures = this.featureEmbed.apply(tf.squeeze(tf.slice(out.hs, [k - 1, 0, 0, 0], [1, -1, -1, -1]), [0])) as tf.Tensor3D; // [B, Q, C3]
    const losses = { ...r.losses, loss_object_embedding: objectEmbeddingLoss(predFeatures, embeddings, r.indices[0]!, targets) };
    const { parts, total } = weightedParts(losses, { loss_ce: this.criterion.weights.ce, loss_bbox: this.criterion.weights.bbox, loss_giou: this.criterion.weights.giou, loss_object_embedding: this.args.objectEmbeddingCoef });
    r.total.dispose();
    return { outputs: { ...out, predFeatures }, total, losses, parts, indices: r.indices };
  }

  /** One optimisation step on drawn inputs: frozen features and embeddings, loss under the tape, clip_grad_norm_, optimizer. */
  train(inputs: DetRegInputs, ctx: Pick<StepContext, 'rng' | 'applyGradients'>): StepResult {
    const { features, embeddings } = this.encode(inputs.images, inputs.crops);
    const [b, h, w] = inputs.images.shape;
    const mask = inputs.imageMask ?? (tf.zeros([b, h, w], 'bool') as tf.Tensor3D);
    try {
      return clippedStep(this.online.trainable(), this.args.clipMaxNorm, ctx, () => this.loss(features, mask, embeddings, inputs.targets, { training: true, rng: ctx.rng }));
    } finally {
      tf.dispose([...features, embeddings, ...(inputs.imageMask ? [] : [mask])]);
    }
  }

  /** The boxes the detection view keeps become the targets; their original boxes are cut from the whole-image view. */
  step(batch: MethodBatch, ctx: StepContext): StepResult {
    const [images, source] = batch.views;
    if (!images || !source) throw new BadInputError('DETReg reads two views (the detection view and the whole image the crops are cut from)', 'inputs.views');
    const proposals = batch.proposals?.[0];
    if (!proposals) throw new BadInputError('DETReg needs box proposals (proposals preset detreg)', 'inputs.proposals');
    const targets: DetrTarget[] = [];
    const rois: RoiBox[] = [];
    proposals.forEach((p, i) => {
      const { target, kept } = detectionTargets(p.original, batch.geometry[0]![i]!, this.args.maxProp);
      targets.push(target);
      for (const box of kept) {
        const [x0, y0, x1, y1] = boxOriginalToView(batch.geometry[1]![i]!, box);
        rois.push([i, x0, y0, x1, y1]);
      }
    });
    // img.crop(box) then Resize((128, 128)): RoIAlign with pixel-edge boxes.
    const crops = rois.length > 0 ? roiAlign(source, rois, { outputSize: this.args.patchSize, aligned: true }) : (tf.zeros([0, this.args.patchSize, this.args.patchSize, 3]) as tf.Tensor4D);
    try {
      return this.train({ images, crops, targets }, ctx);
    } finally {
      crops.dispose();
    }
  }

  /** StepLR: ×0.1 once `lrDropAt` of the run is done (never at 1). */
  lrScale(step: number, totalSteps: number): number {
    return this.args.lrDropAt < 1 && step >= this.args.lrDropAt * totalSteps ? 0.1 : 1;
  }

  dispose(): void {
    this.online.dispose();
  }
}

/**
 * `loss_object_embedding`: F.l1_loss(ẑ[σ], z[σ], reduction='mean') over the last layer's matched pairs (image-major,
 * queries ascending) and every channel. predFeatures [B, Q, C3], embeddings [Σ N_b, C3] image-major in target order.
 * No pair matched (no boxes at all): 0 (the official would take the mean of an empty tensor).
 */
function objectEmbeddingLoss(predFeatures: tf.Tensor3D, embeddings: tf.Tensor2D, match: MatchIndices[], targets: readonly DetrTarget[]): tf.Scalar {
  const [b, q, c] = predFeatures.shape;
  const offsets = targets.map((_, i) => targets.slice(0, i).reduce((n, t) => n + t.labels.length, 0));
  const src = match.flatMap((m, i) => m.src.map((s) => i * q + s));
  const tgt = match.flatMap((m, i) => m.tgt.map((t) => offsets[i]! + t));
  if (src.length === 0) return tf.scalar(0);
  return tf.tidy(() => {
    const pred = tf.gather(tf.reshape(predFeatures, [b * q, c]), tf.tensor1d(src, 'int32'));
    const target = tf.gather(embeddings, tf.tensor1d(tgt, 'int32'));
    return tf.mean(tf.abs(tf.sub(pred, target))) as tf.Scalar;
  });
}

export const detreg = defineMethod({
  name: 'detreg',
  title: 'DETReg: Deformable DETR pretrained to detect selective-search boxes and predict their frozen self-supervised embeddings (whole detector exported)',
  paper: { citation: 'Bar, Wang, Kantorov, Reed, Herzig, Chechik, Rohrbach, Darrell, Globerson. DETReg: Unsupervised Pretraining with Region Priors for Object Detection. CVPR 2022', url: 'https://arxiv.org/abs/2106.04550' },
  code: { repo: 'amirbar/DETReg', commit: 'a4b6363' },
  args: detregArgs,
  consumes: {
    views: detregViews,
    geometry: true,
    // The step reads each image's stored boxes (`original`, stored order) and maps them itself. A detection view that
    // keeps fewer than 2 of them is redrawn (selfdet.py resamples such images) up to 10 times.
    proposals: { kind: 'boxes', boxes: { minVisible: 0, minSize: 0, maxPerView: 30 }, cropRetry: { maxTries: 10, minBoxes: 2, minVisible: 0 } },
    pretrainedBackbone: { arg: 'backboneKey' },
  },
  // main.py: AdamW lr 2e-4 (default_args deformable_detr) at the README's batch 24 × 8 GPUs = 192, given here at 256 (the
  // loop scales it linearly); weight_decay 1e-4 on every parameter (one AdamW over the param groups), reference_points and
  // sampling_offsets at lr × lr_linear_proj_mult 0.1, no warm-up, StepLR (lrScale).
  optimizer: { kind: 'adamw', baseLr: 2e-4 * (256 / 192), momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0, schedule: 'constant', adamwDecay: 'all', lrMultiplier: { match: ['reference_points', 'sampling_offsets'], scale: 0.1 } },
  smallScale: {
    args: { numQueries: 16, hiddenDim: 32, nheads: 2, encLayers: 2, decLayers: 3, dimFeedforward: 64, encNPoints: 2, decNPoints: 2, patchSize: 32 },
    optimizer: { baseLr: 1e-3 },
    why: 'a ResNet-18/4 on 64-px synthetic scenes: a 32-wide 2+3-layer deformable transformer (32 = the GroupNorm groups of the input projections), 2 sampling points, 16 queries for at most 30 boxes of which a 64-px view keeps fewer, 32-px crops; lr ×5 for a run of a few thousand steps',
  },
  validate(args) {
    if (args.hiddenDim % args.nheads !== 0) throw new BadInputError(`hidden width ${args.hiddenDim} is not divisible by ${args.nheads} heads`, 'args.hiddenDim');
    if (args.hiddenDim % 32 !== 0) throw new BadInputError(`hidden width ${args.hiddenDim} must be a multiple of 32 (the input projections' GroupNorm(32, hidden_dim))`, 'args.hiddenDim');
  },
  create: ({ args, backbone, seed, pretrained }) => new DetReg(args, { backbone, seed, ...(pretrained ? { pretrained } : {}) }),
});
