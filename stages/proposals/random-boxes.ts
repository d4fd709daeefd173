import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import type { Box } from './boxes.js';

export interface RandomBoxOptions {
  count?: number;
  /** UP-DETR / DETReg `get_random_patch_from_img(img, min_pixel=8)`. */
  minPixel?: number;
}

/**
 * `count` random patches [x1, y1, x2, y2) as UP-DETR draws them (`get_random_patch_from_img(img,
 * min_pixel=8)`): size ~ U{minPixel .. n - minPixel}; offset ~ U{0 .. n - size - 1} (numpy's
 * randint(n - size), so a patch narrower than the image never touches the far border); offset 0
 * when the patch spans the image. Sides shorter than 2 * minPixel (where numpy would raise) get
 * the full extent.
 */
export function randomBoxes(width: number, height: number, rng: Rng, options: RandomBoxOptions = {}): Box[] {
  const count = options.count ?? 10;
  const minPixel = options.minPixel ?? 8;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new BadInputError(`image size must be positive integers (got ${width}x${height})`, 'randomBoxes');
  }
  if (!Number.isInteger(count) || count < 0) throw new BadInputError(`must be an integer >= 0 (got ${count})`, 'randomBoxes.count');
  if (!Number.isInteger(minPixel) || minPixel < 1) throw new BadInputError(`must be an integer >= 1 (got ${minPixel})`, 'randomBoxes.minPixel');
  const boxes: Box[] = [];
  for (let i = 0; i < count; i++) {
    // numpy draws sw, sh first, then x, y; keep that order so a seeded stream reads the same way
    const sw = width - minPixel < minPixel ? width : rng.int(minPixel, width - minPixel + 1);
    const sh = height - minPixel < minPixel ? height : rng.int(minPixel, height - minPixel + 1);
    const x = sw === width ? 0 : rng.int(0, width - sw);
    const y = sh === height ? 0 : rng.int(0, height - sh);
    boxes.push([x, y, x + sw, y + sh]);
  }
  return boxes;
}
