import * as tf from '@tensorflow/tfjs';

/**
 * ‖x‖₂ along `axis` (all elements when omitted): sqrt(Σ x²). tf.norm computes the same as sqrt(Σ pow(|x|, 2)), and
 * its float `Pow` (std::pow per element) and `Abs` with their gradients (Pow, Step, Select) cost ~17 % of an SCFS
 * step at 64 px (scripts/profile-step.ts); `Square` is one cheap kernel each way.
 */
export function l2Norm(x: tf.Tensor, axis?: number | number[], keepDims = false): tf.Tensor {
  return tf.tidy(() => tf.sqrt(tf.sum(tf.square(x), axis, keepDims)));
}
