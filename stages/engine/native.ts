import * as tf from '@tensorflow/tfjs';

/**
 * Fused kernels of the native TensorFlow backend that tfjs does not use for training.
 *
 * Why: tfjs builds BatchNorm and ReLU gradients out of ~20 elementwise ops; on the native
 * backend those elementwise passes, not the convolutions, dominated a ResNet training step
 * (profile in docs/ENGINE.md). TensorFlow's own FusedBatchNormV3 / FusedBatchNormGradV3 and
 * ReluGrad do the same math in one pass each. Other backends (cpu, wasm) use the op-based path.
 */
interface NativeBackend {
  binding: { TF_ATTR_FLOAT: number; TF_ATTR_STRING: number; TF_ATTR_BOOL: number; TF_ATTR_TYPE: number };
  executeMultipleOutputs(name: string, attrs: unknown[], inputs: tf.Tensor[], numOutputs: number): tf.Tensor[];
  executeSingleOutput(name: string, attrs: unknown[], inputs: tf.Tensor[]): tf.Tensor;
}

const TF_FLOAT = 1; // TF_DataType TF_FLOAT

export function nativeKernelsAvailable(): boolean {
  return tf.getBackend() === 'tensorflow';
}

function backend(): NativeBackend {
  return tf.backend() as unknown as NativeBackend;
}

function attrs(b: NativeBackend, epsilon: number): unknown[] {
  return [
    { name: 'T', type: b.binding.TF_ATTR_TYPE, value: TF_FLOAT },
    { name: 'U', type: b.binding.TF_ATTR_TYPE, value: TF_FLOAT },
    { name: 'epsilon', type: b.binding.TF_ATTR_FLOAT, value: epsilon },
    { name: 'data_format', type: b.binding.TF_ATTR_STRING, value: 'NHWC' },
    { name: 'is_training', type: b.binding.TF_ATTR_BOOL, value: true },
  ];
}

export interface FusedBatchNormResult {
  y: tf.Tensor4D;
  /** Batch mean [C] (kept: caller disposes). */
  mean: tf.Tensor1D;
  /** Batch variance [C] with Bessel's correction, i.e. what PyTorch puts in running_var (kept: caller disposes). */
  unbiasedVariance: tf.Tensor1D;
}

/**
 * Training-mode batch norm of NHWC `x` over N, H, W with batch statistics, differentiable in
 * x, scale and offset (FusedBatchNormGradV3).
 */
export function fusedBatchNormTrain(x: tf.Tensor4D, scale: tf.Tensor1D, offset: tf.Tensor1D, epsilon: number): FusedBatchNormResult {
  const b = backend();
  let mean: tf.Tensor1D | null = null;
  let unbiasedVariance: tf.Tensor1D | null = null;
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [xs, sc, off, save] = args as [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D, tf.GradSaveFunc];
    const empty = tf.zeros([0]);
    const [y, batchMean, batchVar, r1, r2, r3] = b.executeMultipleOutputs(
      'FusedBatchNormV3',
      [...attrs(b, epsilon), { name: 'exponential_avg_factor', type: b.binding.TF_ATTR_FLOAT, value: 1 }],
      [xs, sc, off, empty, empty],
      6,
    );
    mean = tf.keep(batchMean as tf.Tensor1D);
    unbiasedVariance = tf.keep(batchVar as tf.Tensor1D);
    save([xs, sc, r1!, r2!, r3!]);
    return {
      value: y as tf.Tensor4D,
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [sx, ssc, s1, s2, s3] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        const [dx, dScale, dOffset] = b.executeMultipleOutputs('FusedBatchNormGradV3', attrs(b, epsilon), [dy, sx, ssc, s1, s2, s3], 5);
        return [dx!, dScale!, dOffset!];
      },
    };
  });
  const y = op(x, scale, offset) as tf.Tensor4D;
  return { y, mean: mean!, unbiasedVariance: unbiasedVariance! };
}

/** ReLU whose gradient is TensorFlow's ReluGrad (one pass) instead of tfjs' step + multiply. */
export const nativeRelu = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
  const y = tf.relu(x);
  save([y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const b = backend();
      // ReluGrad(gradients, features): passes dy where features > 0; relu(x) > 0 iff x > 0.
      return b.executeSingleOutput('ReluGrad', [{ name: 'T', type: b.binding.TF_ATTR_TYPE, value: TF_FLOAT }], [dy, saved[0]!]);
    },
  };
});

/** ReLU: the native fused gradient on the tensorflow backend, tf.relu elsewhere. */
export function relu<T extends tf.Tensor>(x: T): T {
  return (nativeKernelsAvailable() ? nativeRelu(x) : tf.relu(x)) as T;
}
