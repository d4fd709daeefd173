/**
 * Fine-tuning and running the FCOS detector: targets are assigned once per training image (no
 * augmentation, so they never change), the shared downstream loop (stages/downstream/training.ts:
 * seeded shuffling, SGD + cosine lr, per-epoch checkpoints) trains the pyramid and head — and the
 * backbone too in 'finetune' mode — and inference runs the eval-mode backbone, the head and the
 * post-processing in batches.
 *
 * 'frozen' caches the backbone's C3-C5 maps for every training image once (BN in eval mode), so an
 * epoch only runs the pyramid and head; 'finetune' runs the backbone in training mode every step.
 * With `masks`, the mask branch (mask-head.ts) is trained with the same steps on the batch's
 * ground-truth boxes and its loss is added; at inference it predicts a mask for every detection.
 * A ViT has one map: ViTDet's simple feature pyramid (simple-pyramid.ts) makes the head's three
 * levels from it, and trains with the head (frozen mode caches the ViT map only).
 */
import { tf } from '../../../core/tf.js';
import type { EvalBackbone } from '../backbone.js';
import { sgdTrainingOptions, trainLoop, type SgdTrainingOptions } from '../training.js';
import type { Xyxy } from './boxes.js';
import { FcosHead, type FcosHeadConfig } from './head.js';
import { fcosLosses, type FocalOptions } from './loss.js';
import { MaskHead, maskLoss } from './mask-head.js';
import { maskTarget, pasteMask } from './masks.js';
import { locationGrid, pyramidLevels, type LocationGrid } from './points.js';
import { SimpleFeaturePyramid } from './simple-pyramid.js';
import { postprocessImage, type Detection, type PostprocessOptions } from './postprocess.js';
import { assignTargets, type GroundTruthBoxes, type LocationTargets } from './targets.js';

export interface DetectionSample extends GroundTruthBoxes {
  /** size x size x 3 normalised HWC pixels. */
  pixels: Float32Array;
  /** Per object: size x size row-major 0/1 mask, or null; only read by the mask branch. */
  masks?: Array<Uint8Array | null>;
}

export interface MaskBranchOptions {
  /** RoI side M of the mask logits (Mask R-CNN: 28 from 14x14 RoIs; 14 suits 64-128 px images). */
  resolution: number;
  convs: number;
  /** Inference: masks for this many best detections per image (the rest keep no mask). */
  maxDetections?: number;
}

export interface DetectorOptions extends SgdTrainingOptions {
  mode: 'frozen' | 'finetune';
  /** Pyramid / head width, tower depth, GroupNorm groups. */
  channels: number;
  towerConvs: number;
  groups: number;
  centerSampleRadius: number;
  focal: FocalOptions;
  /** Train and run the mask branch; null = boxes only. */
  masks?: MaskBranchOptions | null;
  seed: number;
}

/** The trained head plus what inference needs to read its outputs. */
export interface Detector {
  head: FcosHead;
  grid: LocationGrid;
  /** Indices into the backbone's stage outputs fed to the pyramid (its last three stages; a ViT's one map). */
  stageIndices: number[];
  /** A ViT's simple feature pyramid (the stage maps -> the head's levels); null for a ResNet (its stages are the levels). */
  simple: SimpleFeaturePyramid | null;
  size: number;
  numClasses: number;
  maskHead: MaskHead | null;
  /** Detections per image that get a mask (score order). */
  maskMaxDetections: number;
}

/** The backbone stages a detector uses: C3-C5, or all stages of a shallower net. */
export function detectionStages(model: EvalBackbone): number[] {
  const n = model.stageChannels.length;
  return Array.from({ length: Math.min(3, n) }, (_, i) => n - Math.min(3, n) + i);
}

/** The head's input levels from the chosen stage maps: the maps themselves, or a ViT's simple pyramid of its one map. */
function levelsOf(detector: Pick<Detector, 'simple'>, stages: tf.Tensor4D[]): tf.Tensor4D[] {
  return detector.simple ? detector.simple.apply(stages[0]!) : stages;
}

/** Map sizes of the head's levels for a size x size input (one dry forward pass). */
function levelMapSizes(model: EvalBackbone, stageIndices: number[], simple: SimpleFeaturePyramid | null, size: number): Array<[number, number]> {
  return tf.tidy(() => {
    const out = model.apply(tf.zeros([1, size, size, 3]) as tf.Tensor4D, { training: false });
    return levelsOf({ simple }, stageIndices.map((i) => out.stages[i]!)).map((m) => [m.shape[1], m.shape[2]] as [number, number]);
  });
}

export function buildDetector(model: EvalBackbone, size: number, numClasses: number, o: Pick<DetectorOptions, 'channels' | 'towerConvs' | 'groups' | 'seed' | 'masks'>): Detector {
  const stageIndices = detectionStages(model);
  const simple = model.family === 'vit' ? new SimpleFeaturePyramid(model.stageChannels[stageIndices[0]!]!, size / levelMapSizes(model, stageIndices, null, size)[0]![0], o.seed) : null;
  const grid = locationGrid(pyramidLevels(size, levelMapSizes(model, stageIndices, simple, size)));
  const config: FcosHeadConfig = {
    inChannels: simple ? simple.outChannels : stageIndices.map((i) => model.stageChannels[i]!),
    numClasses,
    channels: o.channels,
    towerConvs: o.towerConvs,
    groups: o.groups,
    priorProbability: 0.01,
  };
  const maskHead = o.masks ? new MaskHead({ channels: o.channels, numClasses, resolution: o.masks.resolution, convs: o.masks.convs, stride: grid.levels[0]!.stride }, o.seed) : null;
  return { head: new FcosHead(config, o.seed), grid, stageIndices, simple, size, numClasses, maskHead, maskMaxDetections: o.masks?.maxDetections ?? Infinity };
}

/** Releases the detector's own weights (not the backbone's). */
export function disposeDetector(d: Detector): void {
  d.head.params.dispose();
  d.maskHead?.params.dispose();
  d.simple?.params.dispose();
}

interface MaskRoi {
  box: Xyxy;
  label: number;
  target: Float32Array;
}

/** Mask-branch training RoIs of one image: its non-crowd objects that have a mask and a box of positive size. */
function maskRois(s: DetectionSample, size: number, resolution: number): MaskRoi[] {
  const rois: MaskRoi[] = [];
  s.labels.forEach((label, g) => {
    const mask = s.masks?.[g];
    const box: Xyxy = [s.boxes[g * 4]!, s.boxes[g * 4 + 1]!, s.boxes[g * 4 + 2]!, s.boxes[g * 4 + 3]!];
    if (!mask || s.iscrowd?.[g] || box[2] <= box[0] || box[3] <= box[1]) return;
    rois.push({ box, label, target: maskTarget(mask, size, size, box, resolution) });
  });
  return rois;
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
function cacheStageFeatures(model: EvalBackbone, samples: DetectionSample[], stageIndices: number[], size: number, batchSize: number) {
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
  model: EvalBackbone,
  train: DetectionSample[],
  size: number,
  numClasses: number,
  o: DetectorOptions,
): Promise<{ detector: Detector; finalLoss: number; secondsPerEpoch: number[]; positivesPerImage: number }> {
  const detector = buildDetector(model, size, numClasses, o);
  const { head, grid, stageIndices, maskHead } = detector;
  const targets = train.map((s) => assignTargets(grid, s, { centerSampleRadius: o.centerSampleRadius }));
  const positivesPerImage = targets.reduce((a, t) => a + t.numPositive, 0) / Math.max(1, targets.length);
  const rois = maskHead ? train.map((s) => maskRois(s, size, maskHead.config.resolution)) : [];
  const headVars = [...(detector.simple?.params.vars ?? []), ...head.params.vars, ...(maskHead?.params.vars ?? [])].map(([k, v]) => [`detector.${k}`, v] as const);
  const params = o.mode === 'finetune' ? new Map([...model.params.vars, ...headVars]) : new Map(headVars);
  const cachedFeatures = o.mode === 'frozen' ? cacheStageFeatures(model, train, stageIndices, size, o.batchSize) : null;
  const result = await trainLoop({
    params,
    numSamples: train.length,
    ...sgdTrainingOptions(o),
    seed: `detection-${o.mode}-${o.seed}`,
    loss: (indices) => {
      const stages = cachedFeatures
        ? cachedFeatures(indices)
        : (() => {
            const out = model.apply(stackPixels(indices.map((i) => train[i]!), size), { training: true });
            return stageIndices.map((i) => out.stages[i]!);
          })();
      const t = batchTargets(indices.map((i) => targets[i]!), grid.count);
      const out = head.apply(levelsOf(detector, stages));
      const boxLoss = fcosLosses(out, t, o.focal).total;
      const batchRois = indices.flatMap((i, j) => (maskHead ? rois[i]!.map((r) => ({ ...r, image: j })) : []));
      if (!maskHead || batchRois.length === 0) return boxLoss;
      const M = maskHead.config.resolution;
      const logits = maskHead.apply(out.pyramid[0]!, batchRois.map((r) => [r.image, ...r.box]), batchRois.map((r) => r.label));
      const maskTargets = new Float32Array(batchRois.length * M * M);
      batchRois.forEach((r, k) => maskTargets.set(r.target, k * M * M));
      return tf.add(boxLoss, maskLoss(logits, tf.tensor3d(maskTargets, [batchRois.length, M, M]))) as tf.Scalar;
    },
  });
  return { detector, finalLoss: result.finalLoss, secondsPerEpoch: result.secondsPerEpoch, positivesPerImage };
}

/** Detections for every image (eval-mode backbone), `batchSize` images per forward pass. */
export function detect(model: EvalBackbone, detector: Detector, pixels: Float32Array[], batchSize: number, o: PostprocessOptions): Detection[][] {
  const { grid, size, numClasses } = detector;
  const out: Detection[][] = [];
  for (let s = 0; s < pixels.length; s += batchSize) {
    const chunk = pixels.slice(s, s + batchSize);
    let finest: tf.Tensor4D | null = null;
    const [cls, ltrb, ctr] = tf.tidy(() => {
      const x = stackPixels(chunk.map((p) => ({ pixels: p })), size);
      const stages = model.apply(x, { training: false }).stages;
      const r = detector.head.apply(levelsOf(detector, detector.stageIndices.map((i) => stages[i]!)));
      if (detector.maskHead) finest = tf.keep(r.pyramid[0]!);
      return [r.classLogits.dataSync() as Float32Array, r.ltrb.dataSync() as Float32Array, r.centernessLogits.dataSync() as Float32Array];
    });
    const n = grid.count;
    const chunkDetections: Detection[][] = [];
    for (let j = 0; j < chunk.length; j++) {
      chunkDetections.push(postprocessImage(grid, numClasses, cls.subarray(j * n * numClasses, (j + 1) * n * numClasses), ltrb.subarray(j * n * 4, (j + 1) * n * 4), ctr.subarray(j * n, (j + 1) * n), size, o));
    }
    if (finest) {
      addMasks(detector, finest, chunkDetections);
      (finest as tf.Tensor4D).dispose();
    }
    out.push(...chunkDetections);
  }
  return out;
}

/** Mask of every detection from the mask branch, pasted into the image at its box. */
function addMasks(detector: Detector, finest: tf.Tensor4D, perImage: Detection[][]): void {
  const maskHead = detector.maskHead!;
  const M = maskHead.config.resolution;
  // Detections are in score order, so the first maskMaxDetections are the best.
  const flat = perImage.flatMap((dets, j) => dets.slice(0, detector.maskMaxDetections).map((d) => ({ d, image: j })));
  if (flat.length === 0) return;
  const probabilities = tf.tidy(() => tf.sigmoid(maskHead.apply(finest, flat.map(({ d, image }) => [image, ...d.box]), flat.map(({ d }) => d.label))).dataSync() as Float32Array);
  flat.forEach(({ d }, k) => {
    d.mask = pasteMask(probabilities.subarray(k * M * M, (k + 1) * M * M), M, d.box, detector.size, detector.size);
  });
}
