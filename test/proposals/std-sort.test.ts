import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { heapSort, stdSort } from '../../stages/proposals/std-sort.js';

/**
 * Our std::sort against the real one (GCC 12 libstdc++, the library OpenCV 4.6 is built with in
 * Debian): the same permutation of equal keys on inputs with many ties, for the introsort and for
 * its heap-sort fallback. Fixture: test/fixtures/proposals/std-sort/make_std_sort.cpp.
 */
const fixture = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/proposals/std-sort/std-sort.json'), 'utf8'));

function input(n: number, distinct: number, seed: number): { keys: Int32Array; ids: Int32Array } {
  const keys = new Int32Array(n);
  const ids = new Int32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    keys[i] = (x >>> 8) % distinct;
    ids[i] = i;
  }
  return { keys, ids };
}

describe('std::sort as libstdc++ does it', () => {
  it.each((fixture.cases as any[]).map((c): [string, any] => [`${c.algo} n=${c.n} distinct=${c.distinct}`, c]))('%s', (_name, c) => {
    const { keys, ids } = input(c.n, c.distinct, c.seed);
    if (c.algo === 'sort') stdSort(keys, ids);
    else heapSort(keys, ids, 0, c.n);
    expect(Array.from(ids)).toEqual(c.ids);
    for (let i = 1; i < c.n; i++) expect(keys[i - 1]!).toBeLessThanOrEqual(keys[i]!);
  });

  it('ties are not in index order (so a stable sort would not do)', () => {
    const c = (fixture.cases as any[]).find((e) => e.algo === 'sort' && e.n === 1500 && e.distinct === 7);
    const { keys } = input(c.n, c.distinct, c.seed);
    const stable = Array.from(keys.keys()).sort((i, j) => keys[i]! - keys[j]! || i - j);
    expect(stable).not.toEqual(c.ids);
  });
});
