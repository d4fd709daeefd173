import * as tf from '@tensorflow/tfjs';

/**
 * PyTorch `F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)`
 * on NHWC input.
 *
 * input [N, H, W, C], grid [N, Ho, Wo, 2] with (x, y) in [-1, 1] (x across width), output
 * [N, Ho, Wo, C]. With align_corners=False, -1 and 1 are the outer EDGES of the corner pixels:
 * ix = ((x + 1) * W - 1) / 2. Each of the 4 neighbours outside the image contributes 0.
 *
 * The gradient is written out (tf.customGrad) because the gather indices derive from the grid and
 * tfjs refuses int32 tensors on a differentiated path. Like PyTorch: d/d(input) scatters
 * dy * weight back to the 4 neighbours; d/d(grid) differentiates the bilinear weights (the cell
 * choice itself is piecewise constant).
 */
export function gridSampleBilinear(input: tf.Tensor4D, grid: tf.Tensor4D): tf.Tensor4D {
  const [n, h, w, c] = input.shape;
  const [gn, ho, wo, two] = grid.shape;
  if (gn !== n || two !== 2) throw new Error(`gridSampleBilinear: grid must be [${n}, Ho, Wo, 2], got [${grid.shape.join(', ')}]`);
  if (n * h * w >= 2 ** 24) throw new Error(`gridSampleBilinear: input has ${n * h * w} pixels, more than float32 indexes exactly`);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [x, g, save] = args as [tf.Tensor4D, tf.Tensor4D, tf.GradSaveFunc];
    const plan = samplingPlan(g as tf.Tensor4D, n, h, w);
    const flat = tf.reshape(x, [n * h * w, c]);
    const values = plan.corners.map((k) => tf.reshape(tf.gather(flat, k.index), [n, ho, wo, c]));
    const value = tf.addN(values.map((v, i) => tf.mul(v, plan.corners[i]!.weight))) as tf.Tensor4D;
    save([x, g]);
    return {
      value,
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [xs, gs] = saved as [tf.Tensor4D, tf.Tensor4D];
        const p = samplingPlan(gs, n, h, w);
        const flatX = tf.reshape(xs, [n * h * w, c]);
        const dyFlat = tf.reshape(dy, [n * ho * wo, c]);
        // d/d(input): each corner receives dy * its (masked) weight.
        const dInput = tf.reshape(
          tf.addN(p.corners.map((k) => tf.unsortedSegmentSum(tf.mul(dyFlat, tf.reshape(k.weight, [-1, 1])), k.index, n * h * w))),
          [n, h, w, c],
        );
        // d/d(ix), d/d(iy): sum over channels of dy * value * d(weight)/d(ix or iy).
        const dot = p.corners.map((k) => tf.sum(tf.mul(dy, tf.reshape(tf.gather(flatX, k.index), [n, ho, wo, c])), 3, true));
        const dIx = tf.addN(p.corners.map((k, i) => tf.mul(dot[i]!, k.dWeightDx)));
        const dIy = tf.addN(p.corners.map((k, i) => tf.mul(dot[i]!, k.dWeightDy)));
        const dGrid = tf.concat([tf.mul(dIx, w / 2), tf.mul(dIy, h / 2)], 3);
        return [dInput, dGrid];
      },
    };
  });
  return op(input, grid) as tf.Tensor4D;
}

interface Corner {
  /** Row of the [N*H*W, C] input per output location (clamped; masked by `weight`). */
  index: tf.Tensor1D;
  /** Bilinear weight times the inside-the-image mask, [N, Ho, Wo, 1]. */
  weight: tf.Tensor;
  dWeightDx: tf.Tensor;
  dWeightDy: tf.Tensor;
}

function samplingPlan(grid: tf.Tensor4D, n: number, h: number, w: number): { corners: Corner[] } {
  const [gx, gy] = tf.split(grid, 2, 3) as [tf.Tensor4D, tf.Tensor4D];
  const ix = tf.div(tf.sub(tf.mul(tf.add(gx, 1), w), 1), 2);
  const iy = tf.div(tf.sub(tf.mul(tf.add(gy, 1), h), 1), 2);
  const x0 = tf.floor(ix);
  const y0 = tf.floor(iy);
  const fx = tf.sub(ix, x0);
  const fy = tf.sub(iy, y0);
  const gx0 = tf.sub(1, fx);
  const gy0 = tf.sub(1, fy);
  // Index arithmetic in float32 (exact below 2^24 rows), cast once for gather.
  const batchBase = tf.reshape(tf.mul(tf.range(0, n, 1, 'float32'), h * w), [n, 1, 1, 1]);
  const make = (dx: 0 | 1, dy: 0 | 1, wx: tf.Tensor, wy: tf.Tensor, sx: number, sy: number): Corner => {
    const xc = dx ? tf.add(x0, 1) : x0;
    const yc = dy ? tf.add(y0, 1) : y0;
    const inside = tf.cast(
      tf.logicalAnd(tf.logicalAnd(tf.greaterEqual(xc, 0), tf.lessEqual(xc, w - 1)), tf.logicalAnd(tf.greaterEqual(yc, 0), tf.lessEqual(yc, h - 1))),
      'float32',
    );
    const row = tf.add(tf.add(tf.mul(tf.clipByValue(yc, 0, h - 1), w), tf.clipByValue(xc, 0, w - 1)), batchBase);
    return {
      index: tf.reshape(tf.cast(row, 'int32'), [-1]) as tf.Tensor1D,
      weight: tf.mul(tf.mul(wx, wy), inside),
      // d(wx)/d(ix) = sx (+1 for the right neighbour, -1 for the left), likewise for y.
      dWeightDx: tf.mul(tf.mul(wy, inside), sx),
      dWeightDy: tf.mul(tf.mul(wx, inside), sy),
    };
  };
  return { corners: [make(0, 0, gx0, gy0, -1, -1), make(1, 0, fx, gy0, 1, -1), make(0, 1, gx0, fy, -1, 1), make(1, 1, fx, fy, 1, 1)] };
}
