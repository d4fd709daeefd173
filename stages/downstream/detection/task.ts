/**
 * The evaluation stage's 'detection' task: fine-tune an FCOS detector on the training split's
 * boxes and score the eval split with cocoEvaluate (bbox). Images without objects stay in both
 * splits (they teach / test the background). In 'finetune' mode the backbone is a fresh copy
 * so later tasks still see the evaluated weights.
 */
import { BadInputError } from '../../../core/errors.js';
import type { EvalBackbone } from '../backbone.js';
import type { EvalSample } from '../eval-data.js';
import type { EpochCheckpointer } from '../training.js';
import type { DetectionConfig } from './config.js';
import { scoreDetections, scoreMasks } from './evaluate.js';
import { detect, disposeDetector, trainDetector } from './train.js';

export interface DetectionTaskInput {
  config: DetectionConfig;
  seed: number;
  imageSize: number;
  batchSize: number;
  classes: string[];
  train: EvalSample[];
  evalSamples: EvalSample[];
  /** The evaluated backbone (used as is when frozen). */
  model: EvalBackbone;
  /** A fresh copy of the evaluated backbone, for fine-tuning. */
  loadCopy(): Promise<EvalBackbone>;
  checkpointer?: EpochCheckpointer;
  signal?: AbortSignal;
  onEpoch?(epoch: number, loss: number, seconds: number): void;
}

export interface DetectionTaskOutcome {
  metrics: Record<string, number>;
  perClass: unknown;
  predictions: unknown;
}

export async function runDetectionTask(t: DetectionTaskInput): Promise<DetectionTaskOutcome> {
  const c = t.config;
  const objects = (s: EvalSample[]) => s.reduce((a, x) => a + x.labels.length, 0);
  if (objects(t.train) === 0) throw new BadInputError('detection needs training samples with boxes (the training split has no objects)', 'evaluation.tasks');
  for (const s of [...t.train, ...t.evalSamples]) {
    const bad = s.labels.find((l) => !(l >= 0 && l < t.classes.length));
    if (bad !== undefined) throw new BadInputError(`object class ${bad} is outside the dataset's ${t.classes.length} classes`, s.key);
  }
  if (c.masks && t.evalSamples.some((s) => s.masks.some((m) => !m))) {
    throw new BadInputError('detection.masks needs an instance mask on every eval object (this dataset has objects without one)', 'evaluation.detection.masks');
  }
  const model = c.mode === 'finetune' ? await t.loadCopy() : t.model;
  try {
    const { detector, finalLoss, secondsPerEpoch, positivesPerImage } = await trainDetector(
      model,
      t.train.map((s) => ({ pixels: s.pixels, boxes: s.boxes, labels: s.labels, iscrowd: s.iscrowd, masks: s.masks })),
      t.imageSize,
      t.classes.length,
      {
        mode: c.mode,
        epochs: c.epochs,
        batchSize: c.batchSize,
        lr: c.lr,
        momentum: c.momentum,
        weightDecay: c.weightDecay,
        channels: c.channels,
        towerConvs: c.towerConvs,
        groups: c.groupNormGroups,
        centerSampleRadius: c.centerSampleRadius,
        focal: { alpha: c.focalAlpha, gamma: c.focalGamma },
        masks: c.masks ? { resolution: c.maskResolution, convs: c.maskConvs, maxDetections: c.maskMaxDetections } : null,
        seed: t.seed,
        checkpointer: t.checkpointer,
        signal: t.signal,
        onEpoch: t.onEpoch,
      },
    );
    try {
      const t0 = performance.now();
      const detections = detect(model, detector, t.evalSamples.map((s) => s.pixels), t.batchSize, c);
      const evalSeconds = (performance.now() - t0) / 1000;
      const scores = scoreDetections(t.evalSamples, detections, t.classes, t.imageSize);
      const masks = c.masks ? scoreMasks(t.evalSamples, detections, t.classes, t.imageSize) : null;
      return {
        metrics: {
          ...scores.metrics,
          ...masks?.metrics,
          'det.finalLoss': finalLoss,
          'det.secondsPerEpoch': secondsPerEpoch.length ? secondsPerEpoch.reduce((a, b) => a + b, 0) / secondsPerEpoch.length : NaN,
          'det.imagesPerSecond': t.evalSamples.length / Math.max(evalSeconds, 1e-9),
          'det.positivesPerImage': positivesPerImage,
        },
        perClass: { mode: c.mode, ...scores.perClass, ...(masks ? { maskAP: masks.AP } : {}) },
        predictions: scores.predictions,
      };
    } finally {
      disposeDetector(detector);
    }
  } finally {
    if (model !== t.model) model.dispose();
  }
}
