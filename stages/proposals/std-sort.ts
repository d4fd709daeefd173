/**
 * `std::sort` exactly as GCC's libstdc++ implements it (bits/stl_algo.h and bits/stl_heap.h, GCC
 * 4.9 to 14: introsort with median-of-three pivots moved to the front, an unguarded Hoare
 * partition, heap sort past depth 2*floor(log2 n), and a final insertion sort over runs of 16).
 *
 * Why: std::sort is not stable, and OpenCV's selective search sorts values that tie often
 * (graph-segmentation edge weights in flat areas; float32 region similarities), then acts on the
 * order it got: FH merges edges in that order, and grouping merges the pair that std::sort put
 * last. Reproducing OpenCV's boxes therefore needs the same permutation of equal keys, which only
 * the same algorithm gives. Checked against the real std::sort in test/proposals/std-sort.test.ts.
 *
 * Sorts `keys[lo, hi)` ascending by `keys[i] < keys[j]` and applies the same moves to `ids`. Keys
 * are int32: callers sorting non-negative float32 values (edge weights, similarities) pass their
 * bit patterns (`float32Bits`), which order exactly as the values do.
 */
const THRESHOLD = 16;

export function stdSort(keys: Int32Array, ids: Int32Array, lo = 0, hi = keys.length): void {
  if (hi - lo < 2) return;
  introsortLoop(keys, ids, lo, hi, 2 * (31 - Math.clz32(hi - lo)));
  finalInsertionSort(keys, ids, lo, hi);
}

function swap(keys: Int32Array, ids: Int32Array, i: number, j: number): void {
  const k = keys[i]!;
  keys[i] = keys[j]!;
  keys[j] = k;
  const d = ids[i]!;
  ids[i] = ids[j]!;
  ids[j] = d;
}

function introsortLoop(keys: Int32Array, ids: Int32Array, first: number, last: number, depth: number): void {
  while (last - first > THRESHOLD) {
    if (depth === 0) {
      heapSort(keys, ids, first, last);
      return;
    }
    depth--;
    const cut = partitionPivot(keys, ids, first, last);
    introsortLoop(keys, ids, cut, last, depth);
    last = cut;
  }
}

function partitionPivot(keys: Int32Array, ids: Int32Array, first: number, last: number): number {
  const mid = first + ((last - first) >> 1);
  // __move_median_to_first(first, first + 1, mid, last - 1)
  const a = first + 1;
  const c = last - 1;
  const ka = keys[a]!;
  const kb = keys[mid]!;
  const kc = keys[c]!;
  let m: number;
  if (ka < kb) m = kb < kc ? mid : ka < kc ? c : a;
  else m = ka < kc ? a : kb < kc ? c : mid;
  swap(keys, ids, first, m);
  // __unguarded_partition(first + 1, last, pivot = first)
  const pivot = keys[first]!;
  let i = first + 1;
  let j = last;
  for (;;) {
    while (keys[i]! < pivot) i++;
    j--;
    while (pivot < keys[j]!) j--;
    if (!(i < j)) return i;
    swap(keys, ids, i, j);
    i++;
  }
}

function finalInsertionSort(keys: Int32Array, ids: Int32Array, first: number, last: number): void {
  if (last - first > THRESHOLD) {
    insertionSort(keys, ids, first, first + THRESHOLD);
    for (let i = first + THRESHOLD; i < last; i++) unguardedLinearInsert(keys, ids, i);
  } else insertionSort(keys, ids, first, last);
}

function insertionSort(keys: Int32Array, ids: Int32Array, first: number, last: number): void {
  if (first === last) return;
  for (let i = first + 1; i < last; i++) {
    const k = keys[i]!;
    if (k < keys[first]!) {
      const d = ids[i]!;
      keys.copyWithin(first + 1, first, i);
      ids.copyWithin(first + 1, first, i);
      keys[first] = k;
      ids[first] = d;
    } else unguardedLinearInsert(keys, ids, i);
  }
}

function unguardedLinearInsert(keys: Int32Array, ids: Int32Array, last: number): void {
  const k = keys[last]!;
  const d = ids[last]!;
  let next = last - 1;
  while (k < keys[next]!) {
    keys[last] = keys[next]!;
    ids[last] = ids[next]!;
    last = next;
    next--;
  }
  keys[last] = k;
  ids[last] = d;
}

/** `std::partial_sort(first, last, last)`, introsort's fallback: __make_heap then __sort_heap (exported for its test). */
export function heapSort(keys: Int32Array, ids: Int32Array, first: number, last: number): void {
  const len = last - first;
  if (len >= 2) {
    for (let parent = (len - 2) >> 1; ; parent--) {
      adjustHeap(keys, ids, first, parent, len, keys[first + parent]!, ids[first + parent]!);
      if (parent === 0) break;
    }
  }
  while (last - first > 1) {
    last--;
    // __pop_heap(first, last, last)
    const k = keys[last]!;
    const d = ids[last]!;
    keys[last] = keys[first]!;
    ids[last] = ids[first]!;
    adjustHeap(keys, ids, first, 0, last - first, k, d);
  }
}

function adjustHeap(keys: Int32Array, ids: Int32Array, first: number, hole: number, len: number, k: number, d: number): void {
  const top = hole;
  let child = hole;
  while (child < (len - 1) >> 1) {
    child = 2 * (child + 1);
    if (keys[first + child]! < keys[first + child - 1]!) child--;
    keys[first + hole] = keys[first + child]!;
    ids[first + hole] = ids[first + child]!;
    hole = child;
  }
  if ((len & 1) === 0 && child === (len - 2) >> 1) {
    child = 2 * (child + 1);
    keys[first + hole] = keys[first + child - 1]!;
    ids[first + hole] = ids[first + child - 1]!;
    hole = child - 1;
  }
  // __push_heap(first, hole, top, value)
  let parent = (hole - 1) >> 1;
  while (hole > top && keys[first + parent]! < k) {
    keys[first + hole] = keys[first + parent]!;
    ids[first + hole] = ids[first + parent]!;
    hole = parent;
    parent = (hole - 1) >> 1;
  }
  keys[first + hole] = k;
  ids[first + hole] = d;
}
