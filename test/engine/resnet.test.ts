import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { ResNet, RESNET_PRESETS } from '../../stages/engine/resnet.js';
import { namedGradients, disposeGradients } from '../../stages/engine/grads.js';
import { SGD } from '../../stages/engine/optim.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('ResNet', () => {
  it('resnet18 has exactly torchvision resnet18 state_dict names, order and parameter count', async () => {
    const { default: fixture } = await import('../fixtures/engine/resnet18_state_dict.json', { with: { type: 'json' } });
    const net = ResNet.preset('resnet18', { numClasses: 1000 });
    const names = [...net.params.vars.keys()];
    expect(names).toEqual(fixture.names);
    const shapes = names.map((n) => {
      const v = net.params.get(n);
      const layout = net.params.info.get(n)!.layout;
      return layout === 'hwio' ? [v.shape[3], v.shape[2], v.shape[0], v.shape[1]] : layout === 'io' ? [v.shape[1], v.shape[0]] : v.shape;
    });
    expect(shapes).toEqual(fixture.shapes);
    expect(net.params.countTrainable()).toBe(fixture.trainableCount);
    net.dispose();
  });

  it('resnet50 names match torchvision (bottleneck, downsample.0/1) and count is 25,557,032 with fc', async () => {
    const { default: fixture } = await import('../fixtures/engine/resnet50_state_dict.json', { with: { type: 'json' } });
    const net = ResNet.preset('resnet50', { numClasses: 1000 });
    expect([...net.params.vars.keys()]).toEqual(fixture.names);
    expect(net.params.countTrainable()).toBe(fixture.trainableCount);
    expect(net.outChannels).toBe(2048);
    net.dispose();
  });

  it('kaiming fan_out init: conv std = sqrt(2 / (out * k * k)); BN weight 1 bias 0; zero-init residual', () => {
    const net = new ResNet({ ...RESNET_PRESETS['resnet18-w16-cifar'], layers: [2, 2, 2, 2], zeroInitResidual: true }, 7);
    const w = net.params.get('layer4.0.conv2.weight'); // 3x3, 128 -> 128
    const std = tf.tidy(() => tf.moments(w).variance.sqrt().dataSync()[0]!);
    expect(std).toBeCloseTo(Math.sqrt(2 / (128 * 9)), 3);
    expect(Array.from(net.params.get('bn1.weight').dataSync())).toEqual(new Array(16).fill(1));
    expect(Array.from(net.params.get('layer1.0.bn2.weight').dataSync())).toEqual(new Array(16).fill(0));
    expect(Array.from(net.params.get('layer1.0.bn1.weight').dataSync())).toEqual(new Array(16).fill(1));
    net.dispose();
  });

  it('forward gives C2..C5, the dense map and the pooled vector with the right shapes and strides', () => {
    const net = ResNet.preset('resnet-tiny');
    const out = tf.tidy(() => {
      const o = net.apply(tf.ones([2, 32, 32, 3]) as tf.Tensor4D, { training: false });
      return { stages: o.stages.map((s) => s.shape), dense: o.dense.shape, pooled: o.pooled.shape };
    });
    expect(out.stages).toEqual([
      [2, 32, 32, 8],
      [2, 16, 16, 16],
      [2, 8, 8, 32],
      [2, 4, 4, 64],
    ]);
    expect(out.dense).toEqual([2, 4, 4, 64]);
    expect(out.pooled).toEqual([2, 64]);
    expect(net.outputStride).toBe(8);
    net.dispose();
  });

  it('training mode updates BN running stats with momentum 0.1 and unbiased variance', () => {
    const net = ResNet.preset('resnet-tiny');
    // Stem conv output statistics are easy to compute independently: reproduce them here.
    const x = tf.randomNormal([4, 8, 8, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
    const conv = tf.conv2d(x, net.params.get('conv1.weight') as tf.Tensor4D, 1, [[0, 0], [1, 1], [1, 1], [0, 0]]);
    const { mean, variance } = tf.moments(conv, [0, 1, 2]);
    const n = 4 * 8 * 8;
    const expectedMean = mean.mul(0.1).dataSync();
    const expectedVar = variance.mul(n / (n - 1)).mul(0.1).add(0.9).dataSync();
    tf.tidy(() => net.apply(x, { training: true }).dense);
    const rm = net.params.get('bn1.running_mean').dataSync();
    const rv = net.params.get('bn1.running_var').dataSync();
    for (let c = 0; c < 8; c++) {
      expect(rm[c]).toBeCloseTo(expectedMean[c]!, 5);
      expect(rv[c]).toBeCloseTo(expectedVar[c]!, 5);
    }
    expect(net.params.get('bn1.num_batches_tracked').dataSync()[0]).toBe(1);
    tf.dispose([x, conv, mean, variance]);
    net.dispose();
  });

  it('trains: loss falls over SGD steps and the tensor count stays flat', () => {
    const net = ResNet.preset('resnet-tiny', { numClasses: 4 });
    const opt = new SGD(net.params.vars, { momentum: 0.9, weightDecay: 1e-4 }, net.params.info);
    const x = tf.randomNormal([8, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const labels = tf.oneHot(tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 3], 'int32'), 4);
    const losses: number[] = [];
    const counts: number[] = [];
    for (let i = 0; i < 8; i++) {
      const { loss, grads } = namedGradients(() => tf.losses.softmaxCrossEntropy(labels, net.apply(x, { training: true }).logits!) as tf.Scalar, net.params.vars);
      opt.step(grads, 0.05);
      losses.push(loss.dataSync()[0]!);
      loss.dispose();
      disposeGradients(grads);
      counts.push(tf.memory().numTensors);
    }
    expect(losses[7]!).toBeLessThan(losses[0]! * 0.7);
    expect(new Set(counts.slice(1)).size).toBe(1);
    tf.dispose([x, labels]);
    opt.dispose();
    net.dispose();
  });
});

describe('BatchNorm', () => {
  it('bnGroups=2 (op path) normalises each half exactly as a separate batch (fused native path) would', async () => {
    const { BatchNorm } = await import('../../stages/engine/layers.js');
    const { ParamStore } = await import('../../stages/engine/params.js');
    const store = new ParamStore();
    const grouped = new BatchNorm(store.scope('g'), 6);
    const single = new BatchNorm(store.scope('s'), 6);
    const x = tf.randomNormal([4, 5, 5, 6], 2, 3, 'float32', 9) as tf.Tensor4D;
    const diff = tf.tidy(() => {
      const both = grouped.apply(x, { training: true, bnGroups: 2 });
      const firstHalf = single.apply(tf.slice(x, [0, 0, 0, 0], [2, 5, 5, 6]), { training: true });
      return tf.max(tf.abs(tf.sub(tf.slice(both, [0, 0, 0, 0], [2, 5, 5, 6]), firstHalf))).dataSync()[0]!;
    });
    expect(diff).toBeLessThan(1e-4);
    expect(() => tf.tidy(() => grouped.apply(x, { training: true, bnGroups: 3 }))).toThrow(/bnGroups=3 must divide the batch size 4/);
    x.dispose();
    store.dispose();
  });

  it('fused native path equals the op-by-op path: outputs, running stats and gradients, 1 and 2 groups, 4-D and 2-D', async () => {
    const { BatchNorm } = await import('../../stages/engine/layers.js');
    const { ParamStore } = await import('../../stages/engine/params.js');
    const run = (fused: boolean, shape: number[], groups: number) => {
      BatchNorm.useFusedKernels = fused;
      try {
        const store = new ParamStore();
        const bn = new BatchNorm(store.scope('bn'), shape[shape.length - 1]!);
        bn.weight!.assign(tf.tensor1d(Array.from({ length: bn.channels }, (_, i) => 1 + i / 10)));
        const x = tf.randomNormal(shape, 1, 2, 'float32', 11);
        const upstream = tf.randomNormal(shape, 0, 1, 'float32', 12);
        const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(bn.apply(x, { training: true, bnGroups: groups }), upstream)) as tf.Scalar, [bn.weight!, bn.bias!]);
        const dx = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(bn.apply(xi, { training: true, bnGroups: groups }), upstream)))(x);
        const out = {
          value: value.dataSync()[0]!,
          dWeight: Array.from(grads[bn.weight!.name]!.dataSync()),
          dBias: Array.from(grads[bn.bias!.name]!.dataSync()),
          dx: Array.from(dx.dataSync()),
          runningVar: Array.from(bn.runningVar.dataSync()),
          runningMean: Array.from(bn.runningMean.dataSync()),
        };
        tf.dispose([x, upstream, value, dx, ...Object.values(grads)]);
        store.dispose();
        return out;
      } finally {
        BatchNorm.useFusedKernels = true;
      }
    };
    for (const [shape, groups] of [[[4, 5, 5, 6], 1], [[4, 5, 5, 6], 2], [[6, 3], 1], [[6, 3], 3]] as Array<[number[], number]>) {
      const a = run(true, shape, groups);
      const b = run(false, shape, groups);
      expect(a.value).toBeCloseTo(b.value, 3);
      for (const key of ['dWeight', 'dBias', 'dx', 'runningVar', 'runningMean'] as const) {
        a[key].forEach((v, i) => expect(v, `${key}[${i}] shape ${shape} groups ${groups}`).toBeCloseTo(b[key][i]!, 4));
      }
    }
  });

  it('[N, C] input (MLP heads) trains with batch statistics and eval uses running statistics', async () => {
    const { BatchNorm } = await import('../../stages/engine/layers.js');
    const { ParamStore } = await import('../../stages/engine/params.js');
    const store = new ParamStore();
    const bn = new BatchNorm(store.scope('bn'), 3);
    const x = tf.tensor2d([[1, 2, 3], [3, 6, 9]]);
    const y = tf.tidy(() => bn.apply(x, { training: true }).arraySync() as number[][]);
    y[0]!.forEach((v) => expect(v).toBeCloseTo(-1, 3)); // (1-2)/sqrt(1+1e-5)
    // running_var: 0.9 * 1 + 0.1 * unbiased var; column 0: values 1, 3 -> unbiased var 2.
    expect(bn.runningVar.dataSync()[0]).toBeCloseTo(0.9 + 0.2, 5);
    expect(bn.runningMean.dataSync()[2]).toBeCloseTo(0.6, 5);
    const e = tf.tidy(() => bn.apply(x, { training: false }).dataSync()[0]!);
    expect(e).toBeCloseTo((1 - 0.2) / Math.sqrt(1.1 + 1e-5), 4);
    x.dispose();
    store.dispose();
  });
});

describe('pointwiseConv (1x1 conv as subsample + matMul)', () => {
  it('equals tf.conv2d for stride 1 and 2 on even and odd sizes', async () => {
    const { pointwiseConv } = await import('../../stages/engine/layers.js');
    for (const [size, stride] of [[8, 1], [8, 2], [7, 2], [9, 3]] as const) {
      const diff = tf.tidy(() => {
        const x = tf.randomNormal([2, size, size, 5], 0, 1, 'float32', size) as tf.Tensor4D;
        const k = tf.randomNormal([1, 1, 5, 4], 0, 1, 'float32', 2) as tf.Tensor4D;
        const ref = tf.conv2d(x, k, stride, 'valid');
        const ours = pointwiseConv(x, k, stride);
        expect(ours.shape).toEqual(ref.shape);
        return tf.max(tf.abs(tf.sub(ours, ref))).dataSync()[0]!;
      });
      expect(diff).toBeLessThan(1e-5);
    }
  });

  it('a 64 px training step through the stride-2 downsample path runs (native 1x1/2 filter-gradient crash)', () => {
    const net = ResNet.preset('resnet-tiny');
    const x = tf.randomNormal([4, 64, 64, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
    const { loss, grads } = namedGradients(() => tf.mean(tf.square(net.apply(x, { training: true }).pooled)) as tf.Scalar, net.params.vars);
    expect(grads.get('layer2.0.downsample.0.weight')!.shape).toEqual([1, 1, 8, 16]);
    expect(Number.isFinite(loss.dataSync()[0]!)).toBe(true);
    disposeGradients(grads);
    tf.dispose([loss, x]);
    net.dispose();
  });
});
