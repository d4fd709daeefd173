/**
 * Linear probe: one trained linear layer (cross-entropy, SGD + momentum, cosine lr) on frozen
 * global features. Features are standardised with the training set's per-dimension mean and
 * std first (a BatchNorm without affine parameters, as MAE's linear probe does), which makes one
 * learning rate work across backbones whose feature scales differ by orders of magnitude.
 */
import { tf } from '../../core/tf.js';
import { Linear } from '../engine/layers.js';
import { Initializer, ParamStore } from '../engine/params.js';
import { sgdTrainingOptions, trainLoop, type SgdTrainingOptions } from './training.js';

export interface LinearProbeOptions extends SgdTrainingOptions {
  seed: number;
}

export async function linearProbe(
  train: Float32Array,
  trainLabels: Int32Array,
  test: Float32Array,
  dim: number,
  numClasses: number,
  o: LinearProbeOptions,
): Promise<{ predictions: Int32Array; finalLoss: number; secondsPerEpoch: number[] }> {
  const n = trainLabels.length;
  const { mean, std } = columnStats(train, n, dim);
  const params = new ParamStore();
  const layer = new Linear(params.scope('fc'), new Initializer(`linear-probe-${o.seed}`), dim, numClasses);
  const xTrain = tf.tidy(() => tf.tensor2d(train, [n, dim]).sub(mean).div(std)) as tf.Tensor2D;
  const yTrain = tf.oneHot(tf.tensor1d(trainLabels, 'int32'), numClasses);
  try {
    const result = await trainLoop({
      params: params.vars,
      numSamples: n,
      ...sgdTrainingOptions(o),
      seed: `linear-${o.seed}`,
      loss: (indices) => {
        const idx = tf.tensor1d(indices, 'int32');
        const logits = layer.apply(tf.gather(xTrain, idx));
        return tf.losses.softmaxCrossEntropy(tf.gather(yTrain, idx), logits) as tf.Scalar;
      },
    });
    const predictions = tf.tidy(() => {
      const x = tf.tensor2d(test, [test.length / dim, dim]).sub(mean).div(std);
      return tf.argMax(layer.apply(x), 1).dataSync() as Int32Array;
    });
    return { predictions: Int32Array.from(predictions), finalLoss: result.finalLoss, secondsPerEpoch: result.secondsPerEpoch };
  } finally {
    xTrain.dispose();
    yTrain.dispose();
    mean.dispose();
    std.dispose();
    params.dispose();
  }
}

function columnStats(x: Float32Array, n: number, dim: number): { mean: tf.Tensor1D; std: tf.Tensor1D } {
  return tf.tidy(() => {
    const t = tf.tensor2d(x, [n, dim]);
    const { mean, variance } = tf.moments(t, 0);
    return { mean: mean as tf.Tensor1D, std: tf.sqrt(tf.add(variance, 1e-5)) as tf.Tensor1D };
  });
}
