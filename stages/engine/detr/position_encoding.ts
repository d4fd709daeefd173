/**
 * DETR's fixed sine position encoding of a feature map (facebookresearch/detr@29901c5,
 * models/position_encoding.py `PositionEmbeddingSine`; Deformable-DETR@11169a6 uses the same module with the
 * normalised coordinates shifted by −0.5: pass `offset: -0.5`).
 *
 * For every unpadded pixel, y and x are the running counts of unpadded pixels down its column and along its row
 * (`not_mask.cumsum`), 1-based. With `normalize` they become (y + offset) / (y_last + 1e-6) · scale, scale = 2π.
 * Feature k of each coordinate is sin(c / T^(2⌊k/2⌋/F)) for even k and cos(·) for odd k (F = numPosFeats,
 * T = temperature); the output concatenates the y features, then the x features: 2F channels, NHWC.
 *
 * A constant of the mask (no gradient flows to anything), computed with tfjs ops.
 */
import * as tf from '@tensorflow/tfjs';

export interface PositionEmbeddingSineOptions {
  /** F, features per coordinate (DETR: hidden_dim / 2 = 128). */
  numPosFeats: number;
  /** T (official default 10000). */
  temperature?: number;
  /** Normalise the coordinates to (0, scale] (DETR and Deformable DETR build it with normalize=True). */
  normalize?: boolean;
  /** Default 2π; only with `normalize` (the official constructor refuses a scale otherwise). */
  scale?: number;
  /** Added to the running count before normalising: 0 in DETR, −0.5 in Deformable DETR. Only with `normalize`. */
  offset?: number;
}

/**
 * mask [B, H, W] (bool, or 0/1 numbers; true / 1 = padded pixel, as in NestedTensor.mask) → pos [B, H, W, 2F].
 */
export function positionEmbeddingSine(mask: tf.Tensor3D, options: PositionEmbeddingSineOptions): tf.Tensor4D {
  const { numPosFeats: f, temperature = 10000, normalize = false } = options;
  // The official stacks the even-indexed sines with the odd-indexed cosines, which needs an even F.
  if (!Number.isInteger(f) || f < 2 || f % 2 !== 0) throw new Error(`positionEmbeddingSine: numPosFeats must be a positive even integer, got ${f}`);
  if (!normalize && (options.scale !== undefined || options.offset !== undefined)) throw new Error('positionEmbeddingSine: scale and offset need normalize: true (as the official module requires)');
  const scale = options.scale ?? 2 * Math.PI;
  const offset = options.offset ?? 0;
  // dim_t[k] = T^(2⌊k/2⌋ / F), in float32 like torch (arange float32, integer-valued floor division).
  const dimT = new Float32Array(f);
  for (let k = 0; k < f; k++) dimT[k] = Math.fround(temperature ** Math.fround((2 * Math.floor(k / 2)) / f));
  return tf.tidy(() => {
    const notMask = tf.sub(1, tf.cast(mask, 'float32'));
    let yEmbed: tf.Tensor = tf.cumsum(notMask, 1);
    let xEmbed: tf.Tensor = tf.cumsum(notMask, 2);
    if (normalize) {
      const [b, h, w] = mask.shape;
      const eps = 1e-6;
      const yLast = tf.slice(yEmbed, [0, h - 1, 0], [b, 1, w]);
      const xLast = tf.slice(xEmbed, [0, 0, w - 1], [b, h, 1]);
      yEmbed = tf.mul(tf.div(tf.add(yEmbed, offset), tf.add(yLast, eps)), scale);
      xEmbed = tf.mul(tf.div(tf.add(xEmbed, offset), tf.add(xLast, eps)), scale);
    }
    const dim = tf.tensor1d(dimT);
    // Even k → sin, odd k → cos; the official stacks (sin of the even, cos of the odd) and interleaves them back,
    // which puts feature k at position k again.
    const parity = tf.tensor1d(Array.from({ length: f }, (_, k) => k % 2));
    const encode = (c: tf.Tensor): tf.Tensor => {
      const phase = tf.div(tf.expandDims(c, 3), dim); // [B, H, W, F]
      return tf.where(tf.cast(parity, 'bool'), tf.cos(phase), tf.sin(phase));
    };
    return tf.concat([encode(yEmbed), encode(xEmbed)], 3) as tf.Tensor4D;
  });
}
