/**
 * The `pairdetr` block of the evaluation config: training a Pair DETR detector (arXiv 2210.16476; docs/downstream.md,
 * "Pair DETR"; docs/methods/pairdetr.md). The paper's text past its abstract and the start of §1 was not reachable
 * (no official code either), so every default says where it comes from: DETR main.py (facebookresearch/detr@29901c5)
 * for what Pair DETR shares with DETR, the `detr` task's CPU sizes for the detector (so the two tasks compare like for
 * like), and "inferred" where the paper's value is unknown.
 */
import { z } from 'zod';

export const pairDetrConfigSchema = z
  .strictObject({
    epochs: z.number().int().min(1).max(1000).default(50).describe('Training epochs (50: the schedule the abstract compares against Conditional DETR on; inferred, the paper\'s schedule is not read)'),
    batchSize: z.number().int().min(1).max(4096).default(8).describe('Images per step (the detr task\'s default)'),
    lr: z.number().positive().default(1e-4).describe('AdamW learning rate of the transformers and heads (DETR main.py --lr 1e-4)'),
    lrBackbone: z.number().min(0).default(1e-5).describe('AdamW learning rate of the backbone\'s layer2-4 (DETR main.py --lr_backbone 1e-5); 0 = frozen'),
    weightDecay: z.number().min(0).default(1e-4).describe('AdamW weight decay on every parameter (DETR main.py --weight_decay 1e-4)'),
    clipMaxNorm: z.number().min(0).default(0.1).describe('Gradient clipping max norm (DETR main.py --clip_max_norm 0.1); 0 = off'),
    lrDropAt: z.number().gt(0).max(1).default(0.8).describe('Fraction of the epochs after which both rates are x0.1 (Conditional DETR\'s 50-epoch schedule, --lr_drop 40; inferred)'),
    hiddenDim: z.number().int().min(2).default(64).describe('D, transformer width (the detr task\'s CPU size; DETR main.py: 256)'),
    nheads: z.number().int().min(1).default(4).describe('Attention heads (the detr task\'s CPU size; DETR main.py: 8)'),
    encLayers: z.number().int().min(1).default(2).describe('Encoder layers, shared by both decoders (the detr task\'s CPU size; DETR main.py: 6)'),
    decLayers: z.number().int().min(1).default(3).describe('Layers of EACH of the two decoders (the detr task\'s CPU size; DETR main.py: 6)'),
    dimFeedforward: z.number().int().min(1).default(256).describe('Feed-forward width (the detr task\'s CPU size; DETR main.py: 2048)'),
    dropout: z.number().min(0).lt(1).default(0.1).describe('Transformer dropout (DETR main.py 0.1)'),
    preNorm: z.boolean().default(false).describe('Pre-norm transformer layers (DETR main.py: post-norm)'),
    numQueries: z.number().int().min(1).default(16).describe('Q, queries of EACH decoder (the detr task\'s CPU size; DETR main.py: 100)'),
    eosCoef: z.number().min(0).default(0.1).describe('No-object weight in each decoder\'s loss_ce (DETR main.py 0.1)'),
    costClass: z.number().min(0).default(1).describe('Matching cost of the class probability (DETR main.py 1)'),
    costBbox: z.number().min(0).default(5).describe('Matching cost of the L1 box distance (DETR main.py 5)'),
    costGiou: z.number().min(0).default(2).describe('Matching cost of the GIoU (DETR main.py 2)'),
    bboxLossCoef: z.number().min(0).default(5).describe('Weight of loss_bbox in each decoder\'s SetCriterion (DETR main.py 5)'),
    giouLossCoef: z.number().min(0).default(2).describe('Weight of loss_giou in each decoder\'s SetCriterion (DETR main.py 2)'),
    pairLossCoef: z.number().min(0).default(1).describe('λ_pair, weight of the contrastive pair-association loss (inferred: the paper\'s value is not read)'),
    temperature: z.number().positive().default(0.1).describe('τ of the pair-association InfoNCE (inferred: the paper\'s value is not read; 0.1 is between MoCo\'s 0.07 and 0.2)'),
  })
  .refine((c) => c.hiddenDim % c.nheads === 0 && c.hiddenDim % 2 === 0, { message: 'pairdetr.hiddenDim must be even and a multiple of pairdetr.nheads', path: ['hiddenDim'] });

export type PairDetrConfig = z.infer<typeof pairDetrConfigSchema>;
