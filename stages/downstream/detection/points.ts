/**
 * The locations an FCOS head predicts at: one per feature-map cell of every pyramid level, at
 * the cell's centre in input pixels (x = j * stride + floor(stride / 2), as FCOS's
 * `compute_locations`), flattened level by level, row-major inside a level. Every per-location
 * tensor (logits, ltrb, centerness, targets) uses this order.
 */
import { BadInputError } from '../../../core/errors.js';

export interface PyramidLevel {
  stride: number;
  height: number;
  width: number;
  /**
   * The range of object sizes this level is responsible for, as FCOS's bounds on the largest
   * ltrb distance (in pixels): a location on this level is positive for a box only when
   * lower < max(l, t, r, b) <= upper.
   */
  lower: number;
  upper: number;
}

export interface LocationGrid {
  levels: PyramidLevel[];
  /** Total locations over all levels. */
  count: number;
  /** x, y (input pixels), level index and stride of every location. */
  x: Float32Array;
  y: Float32Array;
  level: Int32Array;
  stride: Float32Array;
}

/**
 * Levels for feature maps of the given sizes on a `size` x `size` input. The size ranges follow
 * FCOS's choice (P3..P6: 64, 128, 256, 512 px for strides 8..64, i.e. 8 strides each, last level
 * unbounded), rescaled to whatever strides the backbone has: upper = `rangeStrides` * stride.
 */
export function pyramidLevels(size: number, mapSizes: Array<[number, number]>, rangeStrides = 8): PyramidLevel[] {
  if (mapSizes.length === 0) throw new BadInputError('detector needs at least one feature level', 'detection');
  return mapSizes.map(([height, width], i) => {
    const stride = size / height;
    if (!Number.isInteger(stride) || size / width !== stride) {
      throw new BadInputError(`feature map ${height}x${width} does not divide the ${size}px input evenly; choose an imageSize that is a multiple of the backbone's stride`, 'evaluation.imageSize');
    }
    const lower = i === 0 ? 0 : rangeStrides * (size / mapSizes[i - 1]![0]);
    const upper = i === mapSizes.length - 1 ? Infinity : rangeStrides * stride;
    return { stride, height, width, lower, upper };
  });
}

export function locationGrid(levels: PyramidLevel[]): LocationGrid {
  const count = levels.reduce((a, l) => a + l.height * l.width, 0);
  const grid: LocationGrid = { levels, count, x: new Float32Array(count), y: new Float32Array(count), level: new Int32Array(count), stride: new Float32Array(count) };
  let k = 0;
  levels.forEach((l, li) => {
    const offset = Math.floor(l.stride / 2);
    for (let i = 0; i < l.height; i++) {
      for (let j = 0; j < l.width; j++, k++) {
        grid.x[k] = j * l.stride + offset;
        grid.y[k] = i * l.stride + offset;
        grid.level[k] = li;
        grid.stride[k] = l.stride;
      }
    }
  });
  return grid;
}
