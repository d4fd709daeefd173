/**
 * Instance-mask geometry for the mask branch, in plain JS: the M x M training target of an object
 * inside its box, and pasting a predicted M x M probability map back into the image.
 *
 * Target: bin (i, j) of the box is split into 2 x 2 sample points (as RoIAlign with sampling ratio
 * 2 splits the features); each point reads the mask pixel it falls in, and the bin is foreground
 * when at least half of its points are (Mask R-CNN's RoIAligned binary mask, thresholded at 0.5).
 * Paste: every image pixel whose centre lies inside the box reads the map bilinearly at its
 * position in bin coordinates (edge values extended) and is foreground when the probability is
 * at least `threshold` (Detectron2's paste_masks_in_image, threshold 0.5).
 */
import type { Xyxy } from './boxes.js';

export function maskTarget(mask: Uint8Array, height: number, width: number, box: Xyxy, resolution: number): Float32Array {
  const out = new Float32Array(resolution * resolution);
  const bw = (box[2] - box[0]) / resolution;
  const bh = (box[3] - box[1]) / resolution;
  for (let i = 0; i < resolution; i++) {
    for (let j = 0; j < resolution; j++) {
      let hits = 0;
      for (const fy of [0.25, 0.75]) {
        for (const fx of [0.25, 0.75]) {
          const x = Math.floor(box[0] + (j + fx) * bw);
          const y = Math.floor(box[1] + (i + fy) * bh);
          if (x >= 0 && y >= 0 && x < width && y < height && mask[y * width + x]) hits++;
        }
      }
      out[i * resolution + j] = hits >= 2 ? 1 : 0;
    }
  }
  return out;
}

export function pasteMask(probabilities: ArrayLike<number>, resolution: number, box: Xyxy, height: number, width: number, threshold = 0.5): Uint8Array {
  const out = new Uint8Array(height * width);
  const bw = (box[2] - box[0]) / resolution;
  const bh = (box[3] - box[1]) / resolution;
  if (!(bw > 0 && bh > 0)) return out;
  const at = (i: number, j: number) => probabilities[Math.min(resolution - 1, Math.max(0, i)) * resolution + Math.min(resolution - 1, Math.max(0, j))]!;
  for (let y = Math.max(0, Math.floor(box[1])); y < Math.min(height, Math.ceil(box[3])); y++) {
    const cy = y + 0.5;
    if (cy < box[1] || cy > box[3]) continue;
    const v = (cy - box[1]) / bh - 0.5;
    const i0 = Math.floor(v);
    const wy = v - i0;
    for (let x = Math.max(0, Math.floor(box[0])); x < Math.min(width, Math.ceil(box[2])); x++) {
      const cx = x + 0.5;
      if (cx < box[0] || cx > box[2]) continue;
      const u = (cx - box[0]) / bw - 0.5;
      const j0 = Math.floor(u);
      const wx = u - j0;
      const p = (1 - wy) * ((1 - wx) * at(i0, j0) + wx * at(i0, j0 + 1)) + wy * ((1 - wx) * at(i0 + 1, j0) + wx * at(i0 + 1, j0 + 1));
      if (p >= threshold) out[y * width + x] = 1;
    }
  }
  return out;
}
