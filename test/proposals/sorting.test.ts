import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { argsortNonNegative } from '../../stages/proposals/sorting.js';

function referenceOrder(keys: Float64Array): number[] {
  return Array.from(keys.keys()).sort((a, b) => keys[a]! - keys[b]! || a - b);
}

describe('argsortNonNegative', () => {
  it('equals a stable float64 sort, including keys that collide in float32 and exact ties', () => {
    const rng = new Rng(11);
    const keys = new Float64Array(20000);
    for (let i = 0; i < keys.length; i++) {
      const kind = i % 4;
      // float32 collisions: 1 + tiny offsets below float32 resolution; exact ties; zeros; spread values
      keys[i] = kind === 0 ? 1 + rng.next() * 1e-9 : kind === 1 ? 0.5 : kind === 2 ? 0 : rng.next() * 1000;
    }
    expect(Array.from(argsortNonNegative(keys))).toEqual(referenceOrder(keys));
  });

  it('handles empty and single-element input', () => {
    expect(Array.from(argsortNonNegative(new Float64Array(0)))).toEqual([]);
    expect(Array.from(argsortNonNegative(Float64Array.of(3)))).toEqual([0]);
  });
});
