/**
 * The `detr` block of the evaluation config: fine-tuning a DETR detector (docs/downstream.md, "DETR"). Defaults are
 * facebookresearch/detr main.py's (and UP-DETR's detr_main.py) where they exist; the sizes of a detector built from
 * scratch are the CPU-sized ones of UP-DETR's `smallScale`, so a from-scratch arm matches a scaled-down UP-DETR run.
 *
 * A Deformable DETR (DETReg's detector) is the other `kind`: its settings are the optional `deformable` block (DETReg's
 * util/default_args.py for deformable_detr; from-scratch sizes = DetReg's `smallScale`). The fields added for it
 * (`kind`, `deformable`) are optional without defaults, so a plain-DETR config parses to the same
 * object as before and its evaluation's cache key is unchanged.
 */
import { z } from 'zod';

/** The detector a `detr` task fine-tunes. */
export const DETR_KINDS = ['detr', 'deformable'] as const;
export type DetrKind = (typeof DETR_KINDS)[number];

/**
 * The Deformable DETR fine-tune (amirbar/DETReg@a4b6363 main.py with util/default_args.py `deformable_detr`, the
 * fine-tune configs configs/DETReg_fine_tune_*.sh). Shared with the plain path: epochs, batchSize, weightDecay,
 * clipMaxNorm, pretrainedDetector; everything below replaces its plain-DETR namesake.
 */
export const deformableFinetuneSchema = z
  .strictObject({
    lr: z.number().positive().default(2e-4).describe('AdamW learning rate of the transformer and heads (default_args deformable_detr lr 2e-4)'),
    lrBackbone: z.number().min(0).default(2e-5).describe("AdamW learning rate of the backbone's layer2-4 (default_args lr_backbone 2e-5; `backbone.0` param group); 0 = frozen"),
    lrLinearProjMult: z.number().min(0).default(0.1).describe('learning-rate multiple of every parameter whose name holds reference_points or sampling_offsets (main.py --lr_linear_proj_mult 0.1)'),
    lrDropAt: z
      .number()
      .gt(0)
      .max(1)
      .default(0.8)
      .describe('fraction of the epochs after which every rate is ×0.1 (StepLR: lr_drop 40 of 50 epochs = 0.8; the 1 % / 10 % configs set --lr_drop = --epochs, i.e. 1 = never)'),
    focalAlpha: z.number().min(0).max(1).default(0.25).describe('α of the sigmoid focal loss (--focal_alpha 0.25)'),
    costClass: z.number().min(0).default(2).describe('focal class cost of the matching (set_cost_class 2)'),
    costBbox: z.number().min(0).default(5).describe('L1 box cost of the matching (--set_cost_bbox 5)'),
    costGiou: z.number().min(0).default(2).describe('GIoU cost of the matching (--set_cost_giou 2)'),
    clsLossCoef: z.number().min(0).default(2).describe('weight of the focal loss (cls_loss_coef 2)'),
    bboxLossCoef: z.number().min(0).default(5).describe('weight of the L1 box loss (--bbox_loss_coef 5)'),
    giouLossCoef: z.number().min(0).default(2).describe('weight of the GIoU loss (--giou_loss_coef 2)'),
    topK: z.number().int().min(1).default(100).describe('detections kept per image: the top (query, class) pairs by sigmoid score (PostProcess topk 100; fewer when Q · C is smaller)'),
    hiddenDim: z.number().int().min(32).default(32).describe("from scratch only (an exported detector brings its own shape): D (DetReg smallScale 32; official 256); a multiple of 32, the input projections' GroupNorm groups"),
    nheads: z.number().int().min(1).default(2).describe('from scratch only: attention heads (DetReg smallScale 2; official 8)'),
    encLayers: z.number().int().min(1).default(2).describe('from scratch only: encoder layers (DetReg smallScale 2; official 6)'),
    decLayers: z.number().int().min(1).default(3).describe('from scratch only: decoder layers (DetReg smallScale 3; official 6)'),
    dimFeedforward: z.number().int().min(1).default(64).describe('from scratch only: FFN width (DetReg smallScale 64; official 1024)'),
    dropout: z.number().min(0).lt(1).default(0.1).describe('from scratch only: transformer dropout (--dropout 0.1)'),
    numFeatureLevels: z.number().int().min(4).max(8).default(4).describe('from scratch only: feature levels, C3..C5 and extra stride-2 levels (--num_feature_levels 4)'),
    encNPoints: z.number().int().min(1).default(2).describe('from scratch only: encoder sampling points (DetReg smallScale 2; official 4)'),
    decNPoints: z.number().int().min(1).default(2).describe('from scratch only: decoder sampling points (DetReg smallScale 2; official 4)'),
    numQueries: z.number().int().min(1).default(16).describe('from scratch only: Q (DetReg smallScale 16; official 300)'),
  })
  .refine((c) => c.hiddenDim % c.nheads === 0 && c.hiddenDim % 32 === 0, { message: 'detr.deformable.hiddenDim must be a multiple of 32 (GroupNorm groups) and of detr.deformable.nheads', path: ['hiddenDim'] });

export type DeformableFinetuneConfig = z.infer<typeof deformableFinetuneSchema>;

export const detrConfigSchema = z
  .object({
    epochs: z.number().int().min(1).max(1000).default(50),
    batchSize: z.number().int().min(1).max(4096).default(8),
    /** AdamW learning rate of the transformer and heads (main.py `--lr 1e-4`). */
    lr: z.number().positive().default(1e-4),
    /** AdamW learning rate of the backbone's layer2-4 (main.py `--lr_backbone 1e-5`; UP-DETR's fine-tune 5e-5); 0 = frozen. */
    lrBackbone: z.number().min(0).default(1e-5),
    weightDecay: z.number().min(0).default(1e-4),
    /** Gradient clipping max norm (`--clip_max_norm 0.1`); 0 = off. */
    clipMaxNorm: z.number().min(0).default(0.1),
    /** Fraction of the epochs after which both learning rates are ×0.1 (StepLR `--lr_drop 200` of `--epochs 300`). */
    lrDropAt: z.number().gt(0).max(1).default(2 / 3),
    /** Start from the pretraining run's exported detector (UP-DETR's `detector`) when it has one (detr_main.py `--pretrain`). */
    pretrainedDetector: z.boolean().default(true),
    /** A detector built from scratch (no exported detector, or pretrainedDetector false): its transformer and queries. */
    hiddenDim: z.number().int().min(2).default(64),
    nheads: z.number().int().min(1).default(4),
    encLayers: z.number().int().min(1).default(2),
    decLayers: z.number().int().min(1).default(3),
    dimFeedforward: z.number().int().min(1).default(256),
    dropout: z.number().min(0).lt(1).default(0.1),
    preNorm: z.boolean().default(false),
    numQueries: z.number().int().min(1).default(16),
    /** Loss and matching (main.py): no-object weight, matching costs, loss weights (CE weight 1). */
    eosCoef: z.number().min(0).default(0.1),
    costClass: z.number().min(0).default(1),
    costBbox: z.number().min(0).default(5),
    costGiou: z.number().min(0).default(2),
    bboxLossCoef: z.number().min(0).default(5),
    giouLossCoef: z.number().min(0).default(2),
    kind: z
      .enum(DETR_KINDS)
      .optional()
      .describe(
        "the detector: 'detr' (DETR, softmax classes) or 'deformable' (Deformable DETR, DETReg's). Starting from a pretrained detector, the export's schema decides (densepipe.detr/v1 → detr, densepipe.deformable-detr/v1 → deformable) and a different kind here is refused; otherwise this (absent = 'detr')",
      ),
    deformable: deformableFinetuneSchema.optional().describe("the Deformable DETR fine-tune's settings (kind 'deformable'); absent = DETReg's defaults"),
  })
  .strict()
  .refine((c) => c.hiddenDim % c.nheads === 0 && c.hiddenDim % 2 === 0, { message: 'detr.hiddenDim must be even and a multiple of detr.nheads', path: ['hiddenDim'] });

export type DetrConfig = z.infer<typeof detrConfigSchema>;
