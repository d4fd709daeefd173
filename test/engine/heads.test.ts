import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { disposeGradients, namedGradients } from '../../stages/engine/grads.js';
import { DenseProjectionHead, MlpHead, mocoV2Head } from '../../stages/engine/heads.js';
import { gridSampleBilinear } from '../../stages/engine/ops/grid_sample.js';
import { roiAlign } from '../../stages/engine/ops/roi_align.js';
import { AdamW } from '../../stages/engine/optim.js';
import { ParamStore } from '../../stages/engine/params.js';
import { VisionTransformer } from '../../stages/engine/vit.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('heads', () => {
  it('MoCo v2 head is fc.0 / fc.2 (Linear ReLU Linear) with 2048 hidden for a ResNet-50', () => {
    const store = new ParamStore();
    const head = mocoV2Head(store, 'fc', 2048, 128);
    expect([...store.vars.keys()]).toEqual(['fc.0.weight', 'fc.0.bias', 'fc.2.weight', 'fc.2.bias']);
    expect(store.get('fc.0.weight').shape).toEqual([2048, 2048]);
    const shape = tf.tidy(() => head.apply(tf.ones([2, 2048]) as tf.Tensor2D, { training: true }).shape);
    expect(shape).toEqual([2, 128]);
    store.dispose();
  });

  it('BN variant follows nn.Sequential indices: Linear(0, no bias) BN(1) ReLU(2) Linear(3)', () => {
    const store = new ParamStore();
    new MlpHead(store, 'projector', { inDim: 8, hiddenDims: [16], outDim: 4, batchNorm: true });
    expect([...store.vars.keys()]).toEqual([
      'projector.0.weight',
      'projector.1.weight',
      'projector.1.bias',
      'projector.1.running_mean',
      'projector.1.running_var',
      'projector.1.num_batches_tracked',
      'projector.3.weight',
      'projector.3.bias',
    ]);
    store.dispose();
  });

  it('DenseCL dense head: 1x1 convs 0 and 2 mapping [B, H, W, C] to [B, H, W, out]', () => {
    const store = new ParamStore();
    const head = new DenseProjectionHead(store, 'neck.mlp2', { inChannels: 32, hiddenChannels: 32, outChannels: 16 });
    expect([...store.vars.keys()]).toEqual(['neck.mlp2.0.weight', 'neck.mlp2.0.bias', 'neck.mlp2.2.weight', 'neck.mlp2.2.bias']);
    const shape = tf.tidy(() => head.apply(tf.ones([2, 7, 7, 32]) as tf.Tensor4D).shape);
    expect(shape).toEqual([2, 7, 7, 16]);
    store.dispose();
  });
});

describe('memory', () => {
  it('ViT + AdamW + roiAlign + gridSample training steps keep tf.memory().numTensors flat', () => {
    const vit = new VisionTransformer({ imageSize: 32, patchSize: 8, embedDim: 16, depth: 1, numHeads: 2, mlpRatio: 2 }, 0);
    const opt = new AdamW(vit.params.vars, { weightDecay: 0.05 }, vit.params.info);
    const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 4) as tf.Tensor4D;
    const grid = tf.randomUniform([2, 3, 3, 2], -1, 1, 'float32', 5) as tf.Tensor4D;
    const counts: number[] = [];
    const losses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const { loss, grads } = namedGradients(() => {
        const map = tf.reshape(vit.apply(x).patches, [2, 4, 4, 16]) as tf.Tensor4D;
        const rois = roiAlign(map, [[0, 0, 0, 2, 2], [1, 1, 1, 4, 3]], { outputSize: 2, samplingRatio: 2, aligned: true });
        const sampled = gridSampleBilinear(map, grid);
        return tf.add(tf.mean(tf.square(rois)), tf.mean(tf.square(sampled))) as tf.Scalar;
      }, vit.params.vars);
      opt.step(grads, 1e-2);
      losses.push(loss.dataSync()[0]!);
      loss.dispose();
      disposeGradients(grads);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
    expect(losses[3]!).toBeLessThan(losses[0]!);
    tf.dispose([x, grid]);
    opt.dispose();
    vit.dispose();
  });
});
