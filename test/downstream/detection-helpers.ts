import type { DetectorOptions } from '../../stages/downstream/detection/train.js';
/**
 * In-memory detection scenes for the detector tests: grey noise with 1-2 solid squares whose colour
 * is the class, normalised like eval-data.ts (ImageNet mean/std), boxes in xyxy pixels.
 */
import { Rng } from '../../core/rng.js';
import { tf } from '../../core/tf.js';
import { IMAGENET_MEAN, IMAGENET_STD } from '../../stages/downstream/eval-data.js';
import type { EpochCheckpointer } from '../../stages/downstream/training.js';

const COLOURS = [
  [0.85, 0.15, 0.15],
  [0.15, 0.8, 0.15],
  [0.15, 0.25, 0.85],
];

export interface SquareScene {
  key: string;
  pixels: Float32Array;
  boxes: Float32Array;
  labels: Int32Array;
  /** Visible part of each square (later squares cover earlier ones), row-major 0/1. */
  masks: Uint8Array[];
}

export function squareScenes(count: number, size: number, seed: string): SquareScene[] {
  const rng = Rng.fromSeed('detection-scenes', seed);
  return Array.from({ length: count }, (_, n) => {
    const rgb = new Float32Array(size * size * 3);
    for (let i = 0; i < rgb.length; i++) rgb[i] = 0.4 + 0.15 * rng.next();
    const objects = rng.int(1, 3);
    const boxes: number[] = [];
    const labels: number[] = [];
    const owner = new Int32Array(size * size).fill(-1);
    for (let o = 0; o < objects; o++) {
      const side = rng.int(Math.round(size * 0.25), Math.round(size * 0.5));
      const x0 = rng.int(0, size - side);
      const y0 = rng.int(0, size - side);
      const label = rng.int(0, COLOURS.length);
      for (let y = y0; y < y0 + side; y++) {
        for (let x = x0; x < x0 + side; x++) {
          rgb.set(COLOURS[label]!, (y * size + x) * 3);
          owner[y * size + x] = o;
        }
      }
      boxes.push(x0, y0, x0 + side, y0 + side);
      labels.push(label);
    }
    const pixels = rgb.map((v, i) => (v - IMAGENET_MEAN[i % 3]!) / IMAGENET_STD[i % 3]!);
    const masks = labels.map((_, o) => Uint8Array.from(owner, (v) => (v === o ? 1 : 0)));
    return { key: `scene-${n}`, pixels, boxes: Float32Array.from(boxes), labels: Int32Array.from(labels), masks };
  });
}

/** Post-processing used by the detector tests. */
export const POST = { scoreThreshold: 0.05, preNmsTopK: 1000, nmsIou: 0.6, maxDetections: 100 };
/** Small, fast detector settings for tests; override per test. */
export const detectorOptions = (over: Partial<DetectorOptions> = {}): DetectorOptions => ({
  mode: 'finetune',
  epochs: 30,
  batchSize: 4,
  lr: 0.01,
  momentum: 0.9,
  weightDecay: 1e-4,
  channels: 16,
  towerConvs: 1,
  groups: 4,
  centerSampleRadius: 1.5,
  focal: { alpha: 0.25, gamma: 2 },
  seed: 0,
  ...over,
});

/** Epoch checkpoints kept in memory, as the stage keeps them in the store. */
export function memoryCheckpointer(): EpochCheckpointer & { saved: number[] } {
  let last: { epoch: number; rngState: number; stepCount: number; values: Map<string, tf.Tensor> } | null = null;
  const saved: number[] = [];
  return {
    saved,
    async load() {
      if (!last) return null;
      const l = last;
      return { epoch: l.epoch, rngState: l.rngState, stepCount: l.stepCount, restore: (vars) => vars.forEach((v, k) => v.assign(l.values.get(k)!)) };
    },
    async save(epoch, vars, rngState, stepCount) {
      if (last) tf.dispose([...last.values.values()]);
      last = { epoch, rngState, stepCount, values: new Map([...vars].map(([k, v]) => [k, tf.keep(v.clone())])) };
      saved.push(epoch);
    },
  };
}
