/**
 * `zeroInitResidual` (torchvision's `zero_init_residual=True`; PixPro's contrast/resnet.py zeroes every 'bn2.weight' of a
 * BasicBlock and 'bn3.weight' of a Bottleneck): exactly the last BN γ of each residual branch is 0, every other BN γ
 * (stem, inner BNs, downsample.1) stays 1, nothing else moves (same seed, same draws), and each block starts as its
 * shortcut: relu(shortcut), which for an identity block is its (post-ReLU) input.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import type { ForwardOptions } from '../../stages/engine/layers.js';
import { ResNet, type ResNetConfig } from '../../stages/engine/resnet.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** Two blocks per stage, so every stage has a block with a downsample (stages 2, 3; stage 1 of a Bottleneck) and one without. */
const CONFIGS: Record<'basic' | 'bottleneck', Omit<ResNetConfig, 'zeroInitResidual'>> = {
  basic: { block: 'basic', layers: [2, 2, 2], baseWidth: 4, stem: 'cifar', numClasses: 3 },
  bottleneck: { block: 'bottleneck', layers: [2, 2, 2], baseWidth: 4, stem: 'cifar', numClasses: 3 },
};
const LAST_BN = { basic: /^layer\d+\.\d+\.bn2\.weight$/, bottleneck: /^layer\d+\.\d+\.bn3\.weight$/ } as const;

/** The engine's blocks are module-private; their shape is what the test needs. */
interface BlockView {
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D;
  downsample: { apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D } | null;
}
const blocksOf = (net: ResNet) => (net as unknown as { stages: BlockView[][] }).stages.flat();

const bnWeights = (net: ResNet) => [...net.params.vars.keys()].filter((n) => net.params.info.get(n)!.role === 'norm' && n.endsWith('.weight'));

describe.each(['basic', 'bottleneck'] as const)('zeroInitResidual, %s blocks', (block) => {
  it('zeroes exactly the last BN γ of every residual branch; every other tensor is as without it', () => {
    const zero = new ResNet({ ...CONFIGS[block], layers: [...CONFIGS[block].layers], zeroInitResidual: true }, 5);
    const plain = new ResNet({ ...CONFIGS[block], layers: [...CONFIGS[block].layers], zeroInitResidual: false }, 5);
    const names = bnWeights(zero);
    const zeroed = names.filter((n) => LAST_BN[block].test(n));
    expect(zeroed).toHaveLength(6); // one per block
    expect(names.some((n) => n.includes('downsample.1'))).toBe(true);
    for (const n of names) {
      const values = Array.from(zero.params.get(n).dataSync());
      expect(values, n).toEqual(new Array(values.length).fill(LAST_BN[block].test(n) ? 0 : 1));
      expect(Array.from(plain.params.get(n).dataSync()), `${n} without the option`).toEqual(new Array(values.length).fill(1));
    }
    // Same names, and every tensor but the zeroed γs drawn identically (the option draws nothing).
    expect([...zero.params.vars.keys()]).toEqual([...plain.params.vars.keys()]);
    for (const n of zero.params.vars.keys()) {
      if (zeroed.includes(n)) continue;
      expect(Array.from(zero.params.get(n).dataSync()), n).toEqual(Array.from(plain.params.get(n).dataSync()));
    }
    zero.dispose();
    plain.dispose();
  });

  it('each block outputs relu(its shortcut) at init, in training and eval mode; without the option it does not', () => {
    const zero = new ResNet({ ...CONFIGS[block], layers: [...CONFIGS[block].layers], zeroInitResidual: true }, 3);
    const plain = new ResNet({ ...CONFIGS[block], layers: [...CONFIGS[block].layers], zeroInitResidual: false }, 3);
    for (const training of [true, false]) {
      const opts: ForwardOptions = { training };
      const gaps = tf.tidy(() => {
        const x = tf.relu(tf.randomNormal([4, 8, 8, 4], 0, 1, 'float32', 7)) as tf.Tensor4D;
        const result: { zero: number[]; plain: number[]; identity: number[] } = { zero: [], plain: [], identity: [] };
        for (const [net, key] of [[zero, 'zero'], [plain, 'plain']] as const) {
          let h = x;
          for (const b of blocksOf(net)) {
            const shortcut = b.downsample ? b.downsample.apply(h, opts) : h;
            const out = b.apply(h, opts);
            result[key].push(tf.max(tf.abs(tf.sub(out, tf.relu(shortcut)))).dataSync()[0]!);
            if (key === 'zero' && !b.downsample) result.identity.push(tf.max(tf.abs(tf.sub(out, h))).dataSync()[0]!);
            h = out;
          }
        }
        return result;
      });
      expect(gaps.zero).toHaveLength(6);
      for (const [i, g] of gaps.zero.entries()) expect(g, `block ${i}, training ${training}`).toBe(0);
      // An identity block of the zero-init net passes its (non-negative) input through unchanged.
      expect(gaps.identity.length).toBeGreaterThan(0);
      for (const g of gaps.identity) expect(g).toBe(0);
      for (const [i, g] of gaps.plain.entries()) expect(g, `block ${i} without the option, training ${training}`).toBeGreaterThan(1e-3);
    }
    zero.dispose();
    plain.dispose();
  });
});
