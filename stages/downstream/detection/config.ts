/** The `detection` block of the evaluation config (see docs/downstream.md, "Detection"). */
import { z } from 'zod';

export const detectionConfigSchema = z
  .object({
    /** 'finetune' trains backbone + pyramid + head (the usual detection transfer protocol); 'frozen' only pyramid + head. */
    mode: z.enum(['frozen', 'finetune']).default('finetune'),
    epochs: z.number().int().min(1).default(12),
    batchSize: z.number().int().min(1).max(4096).default(8),
    lr: z.number().positive().default(0.01),
    momentum: z.number().min(0).max(0.999).default(0.9),
    weightDecay: z.number().min(0).default(1e-4),
    /** Pyramid and head width (FCOS: 256; these images and CPUs need far less). */
    channels: z.number().int().min(1).default(32),
    /** conv3x3 + GroupNorm + ReLU blocks in each tower (FCOS: 4). */
    towerConvs: z.number().int().min(0).default(2),
    groupNormGroups: z.number().int().min(1).default(8),
    /** Center-sampling radius in strides (FCOS: 1.5); 0 = every location inside the box. */
    centerSampleRadius: z.number().min(0).default(1.5),
    focalAlpha: z.number().min(0).max(1).default(0.25),
    focalGamma: z.number().min(0).default(2),
    /** Also train a mask branch on RoIAligned P3 features and report 'mask.AP*' (needs instance masks on every object). */
    masks: z.boolean().default(false),
    /** Mask logits per RoI side, and conv3x3 + ReLU layers of the mask branch. */
    maskResolution: z.number().int().min(2).max(64).default(14),
    maskConvs: z.number().int().min(0).default(2),
    /**
     * Masks are predicted for the best this-many detections of each image only (segm is scored on
     * those; bbox on all `maxDetections`). RoIAlign + the mask convs cost ~3-8 ms per RoI on this
     * CPU, and an under-trained detector keeps 100 low-score boxes per image.
     */
    maskMaxDetections: z.number().int().min(1).default(25),
    /** Inference: class-probability threshold, candidates per level before NMS, NMS IoU, detections per image. */
    scoreThreshold: z.number().min(0).max(1).default(0.05),
    preNmsTopK: z.number().int().min(1).default(1000),
    nmsIou: z.number().gt(0).max(1).default(0.6),
    maxDetections: z.number().int().min(1).default(100),
  })
  .strict()
  .refine((c) => c.channels % c.groupNormGroups === 0, { message: 'detection.channels must be a multiple of detection.groupNormGroups', path: ['groupNormGroups'] });

export type DetectionConfig = z.infer<typeof detectionConfigSchema>;
