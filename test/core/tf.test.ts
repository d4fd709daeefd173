import { describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';

describe('tensor backend', () => {
  it("'auto' loads the native TensorFlow backend built by scripts/setup.sh", async () => {
    const info = await initBackend('auto');
    expect(info.backend).toBe('tensorflow');
    expect(tf.getBackend()).toBe('tensorflow');
    expect(info.tensorflowVersion).toBe('2.21.0');
    expect(info.fallbackWarning).toBeUndefined();
  });

  it('trains a conv layer natively (both conv gradients are native kernels)', async () => {
    await initBackend('tensorflow');
    const x = tf.randomNormal([8, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const w = tf.variable(tf.randomNormal([3, 3, 3, 4], 0, 0.1, 'float32', 2));
    const before = tf.memory().numTensors;
    const losses: number[] = [];
    const opt = tf.train.sgd(0.1);
    for (let i = 0; i < 5; i++) {
      const loss = opt.minimize(() => tf.conv2d(x, w as tf.Variable<tf.Rank.R4>, 1, 'same').square().mean() as tf.Scalar, true, [w]);
      losses.push((await loss!.data())[0]!);
      loss!.dispose();
    }
    expect(losses[4]).toBeLessThan(losses[0]!);
    // No tensor leaks across steps (the optimizer's own slots aside, created on the first step).
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before + 1);
    x.dispose();
    w.dispose();
    opt.dispose();
  });
});
