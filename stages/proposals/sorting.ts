/**
 * Stable argsort of non-negative finite float64 keys by LSD radix sort on their IEEE-754 bits.
 *
 * Why radix: graph segmentation sorts ~4 edges per pixel (660k for a 500x333 image); a comparator
 * sort over an index array costs ~10x more in JS. For non-negative doubles the bit pattern read as
 * an unsigned integer orders exactly like the value, so four 16-bit passes give the full order.
 * Passes whose digit is the same for every key (common: float32-valued keys leave the low word
 * zero) are skipped. Stability makes ties resolve by index, which keeps results reproducible
 * (the references' std::sort / numpy quicksort leave tie order unspecified).
 */
export function argsortNonNegative(keys: Float64Array): Uint32Array {
  const n = keys.length;
  const words = new Uint32Array(keys.buffer, keys.byteOffset, n * 2); // little-endian: [lo, hi] per key
  let order = new Uint32Array(n);
  let scratch = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const counts = new Uint32Array(65536);
  // digit 0 = low 16 bits of the low word ... digit 3 = high 16 bits of the high word
  for (let digit = 0; digit < 4; digit++) {
    const wordOffset = digit >> 1;
    const shift = (digit & 1) * 16;
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[(words[i * 2 + wordOffset]! >>> shift) & 0xffff]!++;
    if (n === 0 || counts[(words[wordOffset]! >>> shift) & 0xffff] === n) continue; // every key shares this digit
    let sum = 0;
    for (let d = 0; d < 65536; d++) {
      const c = counts[d]!;
      counts[d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const idx = order[i]!;
      const d = (words[idx * 2 + wordOffset]! >>> shift) & 0xffff;
      scratch[counts[d]!++] = idx;
    }
    const t = order;
    order = scratch;
    scratch = t;
  }
  return order;
}
