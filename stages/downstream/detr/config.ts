/**
 * The `detr` block of the evaluation config: fine-tuning a DETR detector (docs/downstream.md, "DETR"). Defaults are
 * facebookresearch/detr main.py's (and UP-DETR's detr_main.py) where they exist; the sizes of a detector built from
 * scratch are the CPU-sized ones of UP-DETR's `smallScale`, so a from-scratch arm matches a scaled-down UP-DETR run.
 */
import { z } from 'zod';

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
  })
  .strict()
  .refine((c) => c.hiddenDim % c.nheads === 0 && c.hiddenDim % 2 === 0, { message: 'detr.hiddenDim must be even and a multiple of detr.nheads', path: ['hiddenDim'] });

export type DetrConfig = z.infer<typeof detrConfigSchema>;
