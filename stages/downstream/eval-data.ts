/**
 * The evaluation view of a dataset split: images resized to one square input size (so they batch),
 * normalised with ImageNet statistics (torchvision's, which every pretraining stage here uses),
 * the semantic label map resized with nearest neighbour, and one class label per image.
 */
import { BadInputError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import type { ArtifactStore } from '../../core/store/index.js';
import { tf } from '../../core/tf.js';
import { readShardFromStore } from '../../core/webdataset.js';
import { decodeSample } from '../data/sample.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

export interface EvalSample {
  key: string;
  /** size x size x 3, normalised, row-major HWC. */
  pixels: Float32Array;
  /** size x size, 0 = background, c + 1 = class c, 255 = ignore; null without masks. */
  semantic: Uint8Array | null;
  /** The image-level class: the annotation's imageLabel, else the class of the largest object; -1 if neither. */
  classLabel: number;
  /** Objects in resized pixel coordinates (xyxy) for detection. */
  boxes: Float32Array;
  labels: Int32Array;
  /** Instance masks at the resized resolution (row-major 0/1), null where the object had none. */
  masks: Array<Uint8Array | null>;
  iscrowd: boolean[];
}

export interface EvalSplit {
  size: number;
  samples: EvalSample[];
}

export interface DatasetRefResult {
  splits: Record<string, { shardKeys: string[]; samples: number }>;
  classes: string[];
}

export async function loadEvalSplit(
  store: ArtifactStore,
  dataset: DatasetRefResult,
  split: string,
  size: number,
  options: { maxSamples?: number; signal?: AbortSignal } = {},
): Promise<EvalSplit> {
  const info = dataset.splits[split];
  if (!info) throw new BadInputError(`dataset has no split '${split}' (has: ${Object.keys(dataset.splits).join(', ')})`, 'evaluation.splits');
  const samples: EvalSample[] = [];
  const limit = options.maxSamples ?? Infinity;
  for (const shardKey of info.shardKeys) {
    for await (const raw of readShardFromStore(store, shardKey)) {
      if (samples.length >= limit) break;
      if (options.signal?.aborted) throw new Error('cancelled');
      const decoded = await decodeSample(raw, `${store.url(shardKey)}#${raw.key}`);
      samples.push(toEvalSample(decoded, size, dataset.classes.length));
    }
    if (samples.length >= limit) break;
  }
  if (samples.length === 0) throw new BadInputError(`split '${split}' has no samples`, 'dataset');
  return { size, samples };
}

function toEvalSample(d: Awaited<ReturnType<typeof decodeSample>>, size: number, numClasses: number): EvalSample {
  const { width, height } = d.image;
  const pixels = tf.tidy(() => {
    const img = tf.tensor3d(d.image.data, [height, width, 3], 'int32').toFloat().div(255);
    const resized = width === size && height === size ? img : tf.image.resizeBilinear(img as tf.Tensor3D, [size, size], true);
    return resized.sub(tf.tensor1d(IMAGENET_MEAN)).div(tf.tensor1d(IMAGENET_STD)).dataSync() as Float32Array;
  });
  const nearest = (src: Uint8Array): Uint8Array => {
    const out = new Uint8Array(size * size);
    for (let y = 0; y < size; y++) {
      const sy = Math.min(height - 1, Math.floor(((y + 0.5) * height) / size));
      for (let x = 0; x < size; x++) out[y * size + x] = src[sy * width + Math.min(width - 1, Math.floor(((x + 0.5) * width) / size))]!;
    }
    return out;
  };
  const sx = size / width;
  const sy = size / height;
  const n = d.labels.length;
  const boxes = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) {
    boxes[i * 4] = d.boxes[i * 4]! * sx;
    boxes[i * 4 + 1] = d.boxes[i * 4 + 1]! * sy;
    boxes[i * 4 + 2] = d.boxes[i * 4 + 2]! * sx;
    boxes[i * 4 + 3] = d.boxes[i * 4 + 3]! * sy;
  }
  let classLabel = d.imageLabel ?? -1;
  if (classLabel < 0 && n > 0) {
    let best = -1;
    d.annotation.objects.forEach((o, i) => {
      if (o.area > best) {
        best = o.area;
        classLabel = d.labels[i]!;
      }
    });
  }
  if (classLabel >= numClasses) throw new BadInputError(`class ${classLabel} is outside the dataset's ${numClasses} classes`, d.key);
  return {
    key: d.key,
    pixels,
    semantic: d.semantic ? nearest(d.semantic) : null,
    classLabel,
    boxes,
    labels: d.labels,
    masks: d.masks.map((m) => (m ? nearest(m) : null)),
    iscrowd: d.annotation.objects.map((o) => Boolean(o.iscrowd)),
  };
}

/**
 * A fixed label-scarce subset: `fraction` of the samples chosen by a seeded shuffle, at least one
 * per class that has any, and the same for every backbone, so 1 % / 10 % results are comparable.
 */
export function labelSubset<T extends { classLabel: number }>(samples: T[], fraction: number, seed: number): T[] {
  if (!(fraction > 0 && fraction <= 1)) throw new BadInputError(`labelFraction must be in (0, 1], got ${fraction}`, 'evaluation.labelFraction');
  if (fraction === 1) return samples;
  const order = Rng.fromSeed('label-subset', seed).shuffle(samples.map((_, i) => i));
  const want = Math.max(1, Math.round(samples.length * fraction));
  const chosen = new Set<number>();
  const seenClass = new Set<number>();
  // First one sample per class (in shuffled order), so no class vanishes at 1 %; then fill up.
  for (const i of order) {
    const c = samples[i]!.classLabel;
    if (c >= 0 && !seenClass.has(c)) {
      seenClass.add(c);
      chosen.add(i);
    }
  }
  for (const i of order) {
    if (chosen.size >= Math.max(want, seenClass.size)) break;
    chosen.add(i);
  }
  return [...chosen].sort((a, b) => a - b).map((i) => samples[i]!);
}
