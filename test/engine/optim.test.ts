import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { clipGradientsByGlobalNorm } from '../../stages/engine/grads.js';
import { AdamW, LARS, SGD, type Optimizer } from '../../stages/engine/optim.js';
import type { ParamInfo } from '../../stages/engine/params.js';
import { cosineMomentum, multiStepLr, warmupCosineLr } from '../../stages/engine/schedule.js';
import { copyWeights, emaUpdate } from '../../stages/engine/ema.js';
import { MemoryQueue } from '../../stages/engine/queue.js';
import ref from '../fixtures/engine/optim_reference.json' with { type: 'json' };

beforeAll(async () => {
  await initBackend('tensorflow');
});

const infos = new Map<string, ParamInfo>([
  ['weight', { layout: 'same', role: 'weight' }],
  ['bias', { layout: 'same', role: 'bias' }],
]);

function freshParams(): Map<string, tf.Variable> {
  return new Map<string, tf.Variable>([
    ['weight', tf.variable(tf.tensor2d(ref.initial.weight, [3, 4]))],
    ['bias', tf.variable(tf.tensor1d(ref.initial.bias))],
  ]);
}

function gradsAt(step: number): Map<string, tf.Tensor> {
  return new Map<string, tf.Tensor>([
    ['weight', tf.tensor2d(ref.grads[step]!.weight, [3, 4])],
    ['bias', tf.tensor1d(ref.grads[step]!.bias)],
  ]);
}

function expectTrajectory(params: Map<string, tf.Variable>, make: (p: Map<string, tf.Variable>) => Optimizer, expected: Array<{ weight: number[]; bias: number[] }>, clip?: number): number[] {
  const opt = make(params);
  const norms: number[] = [];
  ref.lrs.forEach((lr, step) => {
    let grads = gradsAt(step);
    if (clip !== undefined) {
      const clipped = clipGradientsByGlobalNorm(grads, clip);
      grads = clipped.grads;
      norms.push(clipped.totalNorm.dataSync()[0]!);
      clipped.totalNorm.dispose();
    }
    opt.step(grads, lr);
    tf.dispose([...grads.values()]);
    const w = params.get('weight')!.dataSync();
    const b = params.get('bias')!.dataSync();
    expected[step]!.weight.forEach((v, i) => expect(w[i]).toBeCloseTo(v, 5));
    expected[step]!.bias.forEach((v, i) => expect(b[i]).toBeCloseTo(v, 5));
  });
  opt.dispose();
  for (const v of params.values()) v.dispose();
  return norms;
}

describe('optimizers against torch (fixture: make_optim_fixtures.py)', () => {
  it('SGD without momentum', () => {
    expectTrajectory(freshParams(), (p) => new SGD(p, {}, infos), ref.cases.sgd_plain);
  });
  it('SGD momentum 0.9 + weight decay 1e-2 on every parameter (torch semantics: decay added to the gradient)', () => {
    expectTrajectory(freshParams(), (p) => new SGD(p, { momentum: 0.9, weightDecay: 1e-2 }, infos), ref.cases.sgd_momentum_wd);
  });
  it('SGD Nesterov', () => {
    expectTrajectory(freshParams(), (p) => new SGD(p, { momentum: 0.9, weightDecay: 1e-2, nesterov: true }, infos), ref.cases.sgd_nesterov);
  });
  it('AdamW (decoupled decay 0.05, betas 0.9/0.95) with the bias excluded from decay', () => {
    expectTrajectory(freshParams(), (p) => new AdamW(p, { beta1: 0.9, beta2: 0.95, weightDecay: 0.05 }, infos), ref.cases.adamw_bias_no_decay);
  });
  it('LARS (MoCo v3 formula), bias excluded from decay and adaptation', () => {
    expectTrajectory(freshParams(), (p) => new LARS(p, { momentum: 0.9, weightDecay: 1e-2 }, infos), ref.cases.lars);
  });
  it('clip by global norm = torch.nn.utils.clip_grad_norm_', () => {
    const norms = expectTrajectory(freshParams(), (p) => new SGD(p, {}, infos), ref.cases.sgd_clip_1_5, 1.5);
    norms.forEach((n, i) => expect(n).toBeCloseTo(ref.clipNorms[i]!, 4));
  });
  it('rejects gradients for unknown parameters and bad learning rates', () => {
    const params = freshParams();
    const opt = new SGD(params);
    const g = new Map([['nope', tf.zeros([1])]]);
    expect(() => opt.step(g, 0.1)).toThrow(/unknown parameter 'nope'/);
    expect(() => opt.step(new Map(), Number.NaN)).toThrow(/learning rate/);
    tf.dispose([...g.values(), ...params.values()]);
  });
});

describe('schedules', () => {
  it('warm-up is linear from 0, cosine ends at minLr, and both meet at the warm-up boundary', () => {
    const o = { baseLr: 0.3, warmupSteps: 10, totalSteps: 110, minLr: 0.01 };
    expect(warmupCosineLr(0, o)).toBe(0);
    expect(warmupCosineLr(5, o)).toBeCloseTo(0.15, 12);
    expect(warmupCosineLr(10, o)).toBeCloseTo(0.3, 12);
    expect(warmupCosineLr(60, o)).toBeCloseTo(0.01 + 0.29 * 0.5, 12); // halfway: cos = 0
    expect(warmupCosineLr(110, o)).toBeCloseTo(0.01, 12);
    expect(warmupCosineLr(500, o)).toBeCloseTo(0.01, 12);
    expect(() => warmupCosineLr(0, { baseLr: 1, totalSteps: 5, warmupSteps: 6 })).toThrow(/warmupSteps/);
  });
  it('multi-step and BYOL momentum', () => {
    expect(multiStepLr(119, 0.03, [120, 160])).toBeCloseTo(0.03, 12);
    expect(multiStepLr(160, 0.03, [120, 160])).toBeCloseTo(0.0003, 12);
    expect(cosineMomentum(0, 0.996, 100)).toBeCloseTo(0.996, 12);
    expect(cosineMomentum(100, 0.996, 100)).toBeCloseTo(1, 12);
  });
});

describe('EMA and memory queue', () => {
  it('emaUpdate: t = m t + (1 - m) s on trainable tensors; BN buffers skipped by default', () => {
    const mk = (w: number, rm: number) =>
      new Map([
        ['w', tf.variable(tf.fill([2], w))],
        ['bn.running_mean', tf.variable(tf.fill([2], rm), false)],
      ]);
    const target = mk(1, 5);
    const source = mk(3, 7);
    emaUpdate(target, source, 0.9);
    target.get('w')!.dataSync().forEach((v) => expect(v).toBeCloseTo(0.9 * 1 + 0.1 * 3, 6));
    expect(target.get('bn.running_mean')!.dataSync()[0]).toBe(5);
    emaUpdate(target, source, 0.9, 'copy');
    expect(target.get('bn.running_mean')!.dataSync()[0]).toBe(7);
    copyWeights(target, source);
    expect(target.get('w')!.dataSync()[0]).toBe(3);
    const other = new Map([['w', tf.variable(tf.zeros([3]))]]);
    expect(() => emaUpdate(other, source, 0.9)).toThrow(/missing in target: bn.running_mean.*shape mismatch: w/);
    tf.dispose([...target.values(), ...source.values(), ...other.values()]);
  });

  it('queue starts L2-normalised and overwrites the oldest rows, wrapping around', () => {
    const q = new MemoryQueue(5, 3, 1);
    const norms = tf.tidy(() => tf.norm(q.buffer, 'euclidean', 1).dataSync());
    norms.forEach((n) => expect(n).toBeCloseTo(1, 5));
    const before = q.buffer.arraySync() as number[][];
    const keys = (v: number, b: number) => tf.fill([b, 3], v) as tf.Tensor2D;
    const k1 = keys(10, 2);
    q.dequeueAndEnqueue(k1);
    expect(q.pointer).toBe(2);
    const k2 = keys(20, 2);
    q.dequeueAndEnqueue(k2);
    const k3 = keys(30, 2); // rows 4 and 0
    q.dequeueAndEnqueue(k3);
    expect(q.pointer).toBe(1);
    const rows = (q.buffer.arraySync() as number[][]).map((r) => r[0]);
    expect(rows).toEqual([30, 10, 20, 20, 30]);
    expect(before[1]![0]).not.toBe(10);
    expect(() => q.dequeueAndEnqueue(tf.zeros([1, 4]) as tf.Tensor2D)).toThrow(/dim 4, queue has 3/);
    tf.dispose([k1, k2, k3]);
    q.dispose();
  });
});
