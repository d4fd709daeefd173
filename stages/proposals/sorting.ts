/**
 * Stable argsort of non-negative finite float64 keys.
 *
 * Why not a comparator sort: graph segmentation sorts ~4 edges per pixel (1M for a 512x512
 * image); a comparator sort over an index array costs ~10x more in JS.
 *
 * How: LSD radix sort (two 16-bit passes) on each key rounded to float32, whose bit pattern read
 * as an unsigned integer orders like the value for non-negative floats. Rounding to float32 is
 * monotonic, so keys only need reordering inside runs that share a float32 value; those runs are
 * short and are finished by a stable insertion sort on the float64 keys. The result is exactly the
 * stable float64 order (ties resolve by index, which keeps results reproducible; the references'
 * std::sort / numpy quicksort leave tie order unspecified).
 */
export function argsortNonNegative(keys: Float64Array): Uint32Array {
  const n = keys.length;
  const rounded = Float32Array.from(keys);
  const bits = new Uint32Array(rounded.buffer);
  let order = new Uint32Array(n);
  let scratch = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const counts = new Uint32Array(65536);
  for (const shift of [0, 16]) {
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[(bits[i]! >>> shift) & 0xffff]!++;
    if (n === 0 || counts[(bits[0]! >>> shift) & 0xffff] === n) continue; // every key shares this digit
    let sum = 0;
    for (let d = 0; d < 65536; d++) {
      const c = counts[d]!;
      counts[d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const idx = order[i]!;
      scratch[counts[(bits[idx]! >>> shift) & 0xffff]!++] = idx;
    }
    const t = order;
    order = scratch;
    scratch = t;
  }
  // Finish runs of equal float32 keys by their float64 values (stable insertion sort).
  let runStart = 0;
  for (let i = 1; i <= n; i++) {
    if (i < n && bits[order[i]!] === bits[order[runStart]!]) continue;
    let sorted = true;
    for (let j = runStart + 1; j < i && sorted; j++) sorted = keys[order[j - 1]!]! <= keys[order[j]!]!;
    if (sorted) {
      runStart = i;
      continue;
    }
    if (i - runStart > 64) {
      // long runs are mostly exact ties (flat areas: weight 0); a stable library sort bounds the worst case
      const run = Array.from(order.subarray(runStart, i)).sort((x, y) => keys[x]! - keys[y]!);
      order.set(run, runStart);
      runStart = i;
      continue;
    }
    for (let j = runStart + 1; j < i; j++) {
      const idx = order[j]!;
      const key = keys[idx]!;
      let k = j - 1;
      while (k >= runStart && keys[order[k]!]! > key) {
        order[k + 1] = order[k]!;
        k--;
      }
      order[k + 1] = idx;
    }
    runStart = i;
  }
  return order;
}
