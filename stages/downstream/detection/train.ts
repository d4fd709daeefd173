/**
 * Fine-tuning and running the FCOS detector: targets are assigned once per training image (no
 * augmentation, so they never change), the shared downstream loop (stages/downstream/training.ts:
 * seeded shuffling, SGD + cosine lr, per-epoch checkpoints) trains the pyramid and head — and the
 * backbone too in 'finetune' mode — and inference runs the eval-mode backbone, the head and the
 * post-processing in batches.
 *
 * 'frozen' caches the backbone's C3-C5 maps for every training image once (BN in eval mode), so an
 * epoch only runs the pyramid and head; 'finetune' runs the backbone in training mode every step.
 */
import { tf } from '../../../core/tf.js';
import type { ResNet } from '../../engine/resnet.js';
import { trainLoop, type EpochCheckpointer } from '../training.js';
import { FcosHead, type FcosHeadConfig } from './head.js';
import { fcosLosses, type FocalOptions } from './loss.js';
import { locationGrid, pyramidLevels, type LocationGrid } from './points.js';
import { postprocessImage, type Detection, type PostprocessOptions } from './postprocess.js';
import { assignTargets, type GroundTruthBoxes, type LocationTargets } from './targets.js';

export interface DetectionSample extends GroundTruthBoxes {
  /** size x size x 3 normalised HWC pixels. */
  pixels: Float32Array;
}

export interface DetectorOptions {
  mode: 'frozen' | 'finetune';
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  /** Pyramid / head width, tower depth, GroupNorm groups. */
  channels: number;
  towerConvs: number;
  groups: number;
  centerSampleRadius: number;
  focal: FocalOptions;
  seed: number;
  checkpointer?: EpochCheckpointer;
  signal?: AbortSignal;
  onEpoch?(epoch: number, loss: number, seconds: number): void;
}

/** The trained head plus what inference needs to read its outputs. */
export interface Detector {
  head: FcosHead;
  grid: LocationGrid;
  /** Indices into the backbone's stage outputs fed to the pyramid (its last three stages). */
  stageIndices: number[];
  size: number;
  numClasses: number;
}

/** The backbone stages a detector uses: C3-C5, or all stages of a shallower net. */
export function detectionStages(model: ResNet): number[] {
  const n = model.stageChannels.length;
  return Array.from({ length: Math.min(3, n) }, (_, i) => n - Math.min(3, n) + i);
}

/** Map sizes of the chosen stages for a size x size input (one dry forward pass). */
function stageMapSizes(model: ResNet, stageIndices: number[], size: number): Array<[number, number]> {
  return tf.tidy(() => {
    const out = model.apply(tf.zeros([1, size, size, 3]) as tf.Tensor4D, { training: false });
    return stageIndices.map((i) => [out.stages[i]!.shape[1], out.stages[i]!.shape[2]] as [number, number]);
  });
}

export function buildDetector(model: ResNet, size: number, numClasses: number, o: Pick<DetectorOptions, 'channels' | 'towerConvs' | 'groups' | 'seed'>): Detector {
  const stageIndices = detectionStages(model);
  const grid = locationGrid(pyramidLevels(size, stageMapSizes(model, stageIndices, size)));
  const config: FcosHeadConfig = {
    inChannels: stageIndices.map((i) => model.stageChannels[i]!),
    numClasses,
    channels: o.channels,
    towerConvs: o.towerConvs,
    groups: o.groups,
    priorProbability: 0.01,
  };
  return { head: new FcosHead(config, o.seed), grid, stageIndices, size, numClasses };
}

/** Stacks per-image targets of a batch into the loss's tensors. */
function batchTargets(targets: LocationTargets[], count: number) {
  const labels = new Int32Array(targets.length * count);
  const ltrb = new Float32Array(targets.length * count * 4);
  const ctr = new Float32Array(targets.length * count);
  targets.forEach((t, j) => {
    labels.set(t.labels, j * count);
    ltrb.set(t.ltrb, j * count * 4);
    ctr.set(t.centerness, j * count);
  });
  return {
    labels: tf.tensor2d(labels, [targets.length, count], 'int32'),
    ltrb: tf.tensor3d(ltrb, [targets.length, count, 4]),
    centerness: tf.tensor2d(ctr, [targets.length, count]),
  };
}

function stackPixels(samples: Array<{ pixels: Float32Array }>, size: number): tf.Tensor4D {
  const buf = new Float32Array(samples.length * size * size * 3);
  samples.forEach((s, j) => buf.set(s.pixels, j * size * size * 3));
  return tf.tensor4d(buf, [samples.length, size, size, 3]);
}

/** Eval-mode C3-C5 maps of every sample, kept in JS memory for frozen training. */
function cacheStageFeatures(model: ResNet, samples: DetectionSample[], stageIndices: number[], size: number, batchSize: number) {
  const cached = stageIndices.map(() => ({ data: [] as Float32Array[], shape: [0, 0, 0] as [number, number, number] }));
  for (let s = 0; s < samples.length; s += batchSize) {
    const chunk = samples.slice(s, s + batchSize);
    const maps = tf.tidy(() => {
      const out = model.apply(stackPixels(chunk, size), { training: false });
      return stageIndices.map((i) => out.stages[i]!);
    });
    maps.forEach((m, li) => {
      const [, h, w, c] = m.shape;
      const all = m.dataSync() as Float32Array;
      for (let j = 0; j < chunk.length; j++) cached[li]!.data.push(all.slice(j * h * w * c, (j + 1) * h * w * c));
      cached[li]!.shape = [h, w, c];
      m.dispose();
    });
  }
  return (indices: number[]): tf.Tensor4D[] =>
    cached.map(({ data, shape }) => {
      const per = shape[0] * shape[1] * shape[2];
      const buf = new Float32Array(indices.length * per);
      indices.forEach((i, j) => buf.set(data[i]!, j * per));
      return tf.tensor4d(buf, [indices.length, ...shape]);
    });
}

export async function trainDetector(
  model: ResNet,
  train: DetectionSample[],
  size: number,
  numClasses: number,
  o: DetectorOptions,
): Promise<{ detector: Detector; finalLoss: number; secondsPerEpoch: number[]; positivesPerImage: number }> {
  const detector = buildDetector(model, size, numClasses, o);
  const { head, grid, stageIndices } = detector;
  const targets = train.map((s) => assignTargets(grid, s, { centerSampleRadius: o.centerSampleRadius }));
  const positivesPerImage = targets.reduce((a, t) => a + t.numPositive, 0) / Math.max(1, targets.length);
  const headVars = [...head.params.vars].map(([k, v]) => [`detector.${k}`, v] as const);
  const params = o.mode === 'finetune' ? new Map([...model.params.vars, ...headVars]) : new Map(headVars);
  const cachedFeatures = o.mode === 'frozen' ? cacheStageFeatures(model, train, stageIndices, size, o.batchSize) : null;
  const result = await trainLoop({
    params,
    numSamples: train.length,
    epochs: o.epochs,
    batchSize: o.batchSize,
    lr: o.lr,
    momentum: o.momentum,
    weightDecay: o.weightDecay,
    seed: `detection-${o.mode}-${o.seed}`,
    checkpointer: o.checkpointer,
    signal: o.signal,
    onEpoch: o.onEpoch,
    loss: (indices) => {
      const stages = cachedFeatures
        ? cachedFeatures(indices)
        : (() => {
            const out = model.apply(stackPixels(indices.map((i) => train[i]!), size), { training: true });
            return stageIndices.map((i) => out.stages[i]!);
          })();
      const t = batchTargets(indices.map((i) => targets[i]!), grid.count);
      return fcosLosses(head.apply(stages), t, o.focal).total;
    },
  });
  return { detector, finalLoss: result.finalLoss, secondsPerEpoch: result.secondsPerEpoch, positivesPerImage };
}

/** Detections for every image (eval-mode backbone), `batchSize` images per forward pass. */
export function detect(model: ResNet, detector: Detector, pixels: Float32Array[], batchSize: number, o: PostprocessOptions): Detection[][] {
  const { grid, size, numClasses } = detector;
  const out: Detection[][] = [];
  for (let s = 0; s < pixels.length; s += batchSize) {
    const chunk = pixels.slice(s, s + batchSize);
    const [cls, ltrb, ctr] = tf.tidy(() => {
      const x = stackPixels(chunk.map((p) => ({ pixels: p })), size);
      const stages = model.apply(x, { training: false }).stages;
      const r = detector.head.apply(detector.stageIndices.map((i) => stages[i]!));
      return [r.classLogits.dataSync() as Float32Array, r.ltrb.dataSync() as Float32Array, r.centernessLogits.dataSync() as Float32Array];
    });
    const n = grid.count;
    for (let j = 0; j < chunk.length; j++) {
      out.push(postprocessImage(grid, numClasses, cls.subarray(j * n * numClasses, (j + 1) * n * numClasses), ltrb.subarray(j * n * 4, (j + 1) * n * 4), ctr.subarray(j * n, (j + 1) * n), size, o));
    }
  }
  return out;
}
