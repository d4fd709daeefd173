/**
 * SLIC's per-pixel loops as a small WebAssembly module, each with its JavaScript twin (used where
 * WebAssembly SIMD is unavailable, for 1-pixel-wide images, and by the tests through
 * `slicWorkspace(..., { simd: false })`): the byte scan and rgb2lab that make the features, the
 * k-means assignment pass (its distances two pixels at a time, f64x2 SIMD), and the connectivity
 * pass. slic-kernel-wasm.ts is the module's source; KERNEL_BASE64 below is its output.
 *
 * A pass goes row by row. For each row y it visits, in index order, every centre k whose +-2S
 * window covers the row, and every pixel x of the window on that row:
 *
 *   d = (dy^2 + dx^2) * spatialWeight + ((d0^2 + d1^2) + d2^2),   dy = ky - y, dx = kx - x,
 *                                                                  dc = feature_c(x, y) - centre_c(k)
 *   if (best[x] > d) { best[x] = d; label[x] = k }
 *
 * in float64, with these operations in this order: scikit-image's _slic_cython expression (its dz
 * term is 0 for a 2-D image). WebAssembly's f64 arithmetic is IEEE round-to-nearest with no fused
 * multiply-add, so the kernel, the JavaScript twin and skimage's compiled loop give the same bits
 * (the kernel's cube root is V8's Math.cbrt transcribed, for the same reason). skimage loops over
 * centres, each over its whole window; per pixel the outcome (the smallest d, the lowest k among
 * equal ones, since only a strictly smaller d replaces) does not depend on that order, so going
 * row by row gives the same labels while the row's data stay in the L1 cache. A finished row's
 * labels are final: they are added to the next centres' sums right away (rows in order, pixels in
 * order: skimage's order of additions), and compared with the last pass's.
 *
 * Why WebAssembly (issue #18: at or above scikit-image, cold and warm): V8 does not vectorise
 * JavaScript, and a JavaScript loop spends much of a process's first call in the interpreter and
 * the optimising compiler (deoptimising where the first iterations left no type feedback). The
 * module (2.8 KB) is compiled once per process in well under a millisecond, runs at once in V8's
 * baseline WebAssembly tier, and is optimised in the background; the loops call small functions
 * per row or per slice so that the optimised code takes over within the first call.
 */

/** Per centre in `centres`: y, x, then its three feature means. */
export const CENTRE = 5;
/** Per centre in `windows` (Int32): yMin, yMax, xMin, xMax, half-open. */
export const WINDOW = 4;
/** Per centre in `sums`: pixel count, then the sums of y, x and the three features. */
export const SUMS = 6;

export interface SlicWorkspace {
  /** The three feature planes (n values each), for the caller to fill. */
  planes: [Float64Array, Float64Array, Float64Array];
  centres: Float64Array;
  windows: Int32Array;
  sums: Float64Array;
  /** The labels of the last pass (the pass starts from them where no window covers a pixel). */
  nearest: Int32Array;
  /** The labels before the last pass, for the convergence test (the caller starts it at -1). */
  previous: Int32Array;
  /**
   * One pass over centres[0..K) into `nearest`; with `accumulate`, also adds every pixel to its
   * centre's `sums` (the caller zeroes them) and returns whether any label differs from `previous`
   * (then updated). Without, returns false.
   */
  assignPass(spatialWeight: number, accumulate: boolean): boolean;
  /** seen[c * 256 + byte] = 1 for each byte value of channel c in the RGB image `data`. */
  bytesSeen(data: Uint8Array): Uint8Array;
  /** rgb2lab of the image through `table`, times `ratio`, into `planes` (labFeaturesJs). */
  labFeatures(data: Uint8Array, table: Float64Array, ratio: number): void;
  /** The connectivity pass over `nearest` (enforceConnectivityJs); the labels are a new array. */
  enforceConnectivity(minSize: number, maxSize: number, startLabel: number): { labels: Int32Array; count: number };
  /** Whether the WebAssembly kernel runs (false: the JavaScript twins). */
  simd: boolean;
}

// ---- the pass in JavaScript: the reference for the kernel, and its fallback ----

function assignSpanJs(f0: Float64Array, f1: Float64Array, f2: Float64Array, best: Float64Array, label: Int32Array, row: number, k: number, kx: number, dy2: number, c0: number, c1: number, c2: number, xMin: number, xMax: number, spatialWeight: number): void {
  for (let x = xMin; x < xMax; x++) {
    const dx = kx - x;
    const p = row + x;
    const d0 = f0[p]! - c0;
    const d1 = f1[p]! - c1;
    const d2 = f2[p]! - c2;
    const d = (dy2 + dx * dx) * spatialWeight + (d0 * d0 + d1 * d1 + d2 * d2);
    if (best[x]! > d) {
      best[x] = d;
      label[p] = k;
    }
  }
}

function accumulateRowJs(ws: SlicWorkspace, y: number, width: number): boolean {
  const { nearest, previous, sums } = ws;
  const [f0, f1, f2] = ws.planes;
  let changed = false;
  for (let x = 0, p = y * width; x < width; x++, p++) {
    const k = nearest[p]!;
    if (previous[p] !== k) {
      changed = true;
      previous[p] = k;
    }
    const o = k * SUMS;
    sums[o]!++;
    sums[o + 1]! += y;
    sums[o + 2]! += x;
    sums[o + 3]! += f0[p]!;
    sums[o + 4]! += f1[p]!;
    sums[o + 5]! += f2[p]!;
  }
  return changed;
}

function assignPassJs(ws: SlicWorkspace, width: number, height: number, best: Float64Array, spatialWeight: number, accumulate: boolean): boolean {
  const { centres, windows, nearest } = ws;
  const [f0, f1, f2] = ws.planes;
  const K = centres.length / CENTRE;
  let changed = false;
  for (let y = 0; y < height; y++) {
    best.fill(Number.MAX_VALUE);
    for (let k = 0; k < K; k++) {
      const w = k * WINDOW;
      if (y < windows[w]! || y >= windows[w + 1]!) continue;
      const o = k * CENTRE;
      const dy = centres[o]! - y;
      assignSpanJs(f0, f1, f2, best, nearest, y * width, k, centres[o + 1]!, dy * dy, centres[o + 2]!, centres[o + 3]!, centres[o + 4]!, windows[w + 2]!, windows[w + 3]!, spatialWeight);
    }
    if (accumulate && accumulateRowJs(ws, y, width)) changed = true;
  }
  return changed;
}

/** seen[c * 256 + byte] = 1 for each byte value of channel c. */
function bytesSeenJs(data: Uint8Array): Uint8Array {
  const seen = new Uint8Array(768);
  for (let i = 0; i < data.length; i += 3) {
    seen[data[i]!] = 1;
    seen[256 + data[i + 1]!] = 1;
    seen[512 + data[i + 2]!] = 1;
  }
  return seen;
}

/** skimage's xyz2lab f(t) (cube root above the CIE threshold). */
function labF(t: number): number {
  return t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116;
}

/**
 * skimage rgb2lab (D65, 2 degree observer) of the image's bytes through `table` (table[c * 256 +
 * byte]: the channel's linear RGB value), times `ratio`, into three planes. The scaling is a
 * separate rounding, as skimage multiplies the finished Lab image.
 */
function labFeaturesJs(data: Uint8Array, table: Float64Array, ratio: number, l: Float64Array, a: Float64Array, b: Float64Array): void {
  for (let p = 0, i = 0; i < data.length; p++, i += 3) {
    const R = table[data[i]!]!;
    const G = table[256 + data[i + 1]!]!;
    const B = table[512 + data[i + 2]!]!;
    const x = labF((0.412453 * R + 0.35758 * G + 0.180423 * B) / 0.95047);
    const y = labF(0.212671 * R + 0.71516 * G + 0.072169 * B);
    const z = labF((0.019334 * R + 0.119193 * G + 0.950227 * B) / 1.08883);
    l[p] = (116 * y - 16) * ratio;
    a[p] = 500 * (x - y) * ratio;
    b[p] = 200 * (y - z) * ratio;
  }
}

/**
 * skimage's _enforce_label_connectivity_cython: raster scan, 4-connected BFS per component that
 * stops growing at maxSize (so a huge component is split), components below minSize take the label
 * of the last already-labelled neighbour met during the BFS. A small component with no such
 * neighbour keeps the current label without advancing it, so the next component reuses that id
 * (skimage issue #8295); this only happens for the first component scanned.
 */
function enforceConnectivityJs(segments: Int32Array, width: number, minSize: number, maxSize: number, startLabel: number): { labels: Int32Array; count: number } {
  const n = segments.length;
  const final = new Int32Array(n); // 0 = not yet visited; labels are stored 1-based
  const queue = new Int32Array(n);
  const found = new Int32Array(2); // growComponent's results: size, adjacent label
  let currentLabel = 1;
  for (let start = 0; start < n; start++) {
    if (final[start]! > 0) continue;
    growComponent(segments, final, queue, width, start, currentLabel, maxSize, found);
    const size = found[0]!;
    if (size < minSize) {
      // the last labelled neighbour met, or the current label when there was none
      const target = found[1]! > 0 ? found[1]! : currentLabel;
      for (let i = 0; i < size; i++) final[queue[i]!] = target;
    } else {
      currentLabel++;
    }
  }
  let count = 0;
  for (let i = 0; i < n; i++) {
    const f = final[i]!;
    final[i] = f - 1 + startLabel;
    if (f > count) count = f;
  }
  return { labels: final, count };
}

/**
 * The BFS from `start` over 4-neighbours with the same segment id, in skimage's neighbour order
 * (x+1, x-1, y+1, y-1), stopping once maxSize pixels are taken. Labels them `label` in `final`,
 * leaves them in queue[0..size). found = [size, the last already-labelled neighbour of another label met (0 = none)].
 */
function growComponent(segments: Int32Array, final: Int32Array, queue: Int32Array, width: number, start: number, label: number, maxSize: number, found: Int32Array): void {
  const n = segments.length;
  const id = segments[start]!;
  let adjacent = 0;
  final[start] = label;
  queue[0] = start;
  let size = 1;
  let visited = 0;
  while (visited < size && size < maxSize) {
    const p = queue[visited++]!;
    const x = p % width;
    for (let dir = 0; dir < 4; dir++) {
      let q: number;
      if (dir === 0) {
        if (x + 1 >= width) continue;
        q = p + 1;
      } else if (dir === 1) {
        if (x === 0) continue;
        q = p - 1;
      } else if (dir === 2) {
        q = p + width;
        if (q >= n) continue;
      } else {
        q = p - width;
        if (q < 0) continue;
      }
      const f = final[q]!;
      if (f === 0) {
        if (segments[q] === id) {
          final[q] = label;
          queue[size++] = q;
          if (size >= maxSize) break;
        }
      } else if (f !== label) {
        adjacent = f;
      }
    }
  }
  found[0] = size;
  found[1] = adjacent;
}

/** slic-kernel-wasm.ts's kernelBytes(), base64 (scripts/slic-kernel.ts writes it). */
export const KERNEL_BASE64 =
  'AGFzbQEAAAABZwlgC39/f3x/f39/f39/AGAFf39/f38AYAp/f39/f39/f39/AX9gD39/f3x/f39/f39/f39/fwF/YAh/f39/' +
  'f39/fwJ/f2AIf39/f39/f38Bf2ABfAF8YAh/f39/fH9/fwBgA39/fwACDwEDZW52Bm1lbW9yeQIAAQMKCQABAgMEBQYHCAc5' +
  'BQphc3NpZ25QYXNzAAMHY29ubmVjdAAFC2xhYkZlYXR1cmVzAAcJYnl0ZXNTZWVuAAgEY2JydAAGCq8UCZAFFwF/AX8BfwF/' +
  'AX8BfwF/AX8BfwF8AXsBewF7AXsBewF7AXsBewF7AXsBewF7AXsgBCAAIAJsQQN0aiERIAUgACACbEEDdGohEiAGIAAgAmxB' +
  'A3RqIRMgA/0UIRpEAAAAAAAAAED9FCEbQQAhCwJAA0AgCyABTg0BIAogC0EQbGohDCAAIAwoAgBOIAAgDCgCBEhxBEAgCSAL' +
  'QShsaiENIA0rAwAgALehIhQgFKL9FCEWIA0rAwj9FCEVIA0rAxD9FCEXIA0rAxj9FCEYIA0rAyD9FCEZIAu3/RQhHSAMKAIM' +
  'IQ8gDCgCCCIOtyIU/RQgFEQAAAAAAADwP6D9IgEhHAJAA0AgDkEBaiAPTg0BIA5BA3QhECAVIBz98QEiHiAe/fIBIBb98AEg' +
  'Gv3yASARIBBq/QADACAX/fEBIiEgIf3yASASIBBq/QADACAY/fEBIiEgIf3yAf3wASATIBBq/QADACAZ/fEBIiEgIf3yAf3w' +
  'Af3wASEfIAggEGogHSAIIBBq/QADACAHIBBq/QADACIgIB/9Sv1S/QsDACAHIBBqICAgH/32Af0LAwAgHCAb/fABIRwgDkEC' +
  'aiEODAALCyAOIA9IBEAgD0ECayIOtyIU/RQgFEQAAAAAAADwP6D9IgEhHCAOQQN0IRAgFSAc/fEBIh4gHv3yASAW/fABIBr9' +
  '8gEgESAQav0AAwAgF/3xASIhICH98gEgEiAQav0AAwAgGP3xASIhICH98gH98AEgEyAQav0AAwAgGf3xASIhICH98gH98AH9' +
  '8AEhHyAIIBBqIB0gCCAQav0AAwAgByAQav0AAwAiICAf/Ur9Uv0LAwAgByAQaiAgIB/99gH9CwMACwsgC0EBaiELDAALCwtV' +
  'AgF/AX8gACABbCEGQQAhBQJAA0AgBSABTg0BIAIgBUEIbGpE////////7385AwAgAyAFQQhsaiAEIAYgBWpBBGxqKAIAtzkD' +
  'ACAFQQFqIQUMAAsLC/QBBgF/AX8BfwF/AX8Bf0EAIQ9BACEKAkADQCAKIAFODQEgACABbCAKaiELIAUgCkEIbGorAwCqIQwg' +
  'BiALQQRsaiAMNgIAIAkEQCAHIAtBBGxqKAIAIAxHBEBBASEPIAcgC0EEbGogDDYCAAsgCCAMQTBsaiENIAtBA3QhDiANIA0r' +
  'AwBEAAAAAAAA8D+gOQMAIA0gDSsDCCAAt6A5AwggDSANKwMQIAq3oDkDECANIA0rAxggAiAOaisDAKA5AxggDSANKwMgIAMg' +
  'DmorAwCgOQMgIA0gDSsDKCAEIA5qKwMAoDkDKAsgCkEBaiEKDAALCyAPC2UCAX8Bf0EAIRBBACEPAkADQCAPIAJODQEgDyAB' +
  'IAcgCCALEAEgDyAAIAEgAyAEIAUgBiAHIAggCSAKEAAgDyABIAQgBSAGIAggCyAMIA0gDhACIBByIRAgD0EBaiEPDAALCyAQ' +
  'C5AECAF/AX8BfwF/AX8BfwF/AX8gBCAAQQRsaigCACEIIAUgAEEEbGogATYCACAGIAA2AgBBASEKAkADQCALIApODQEgCiAH' +
  'Tg0BIAYgC0EEbGooAgAhDCALQQFqIQsgDCACbyENAkAgDUEBaiACSARAIAxBAWohDiAFIA5BBGxqKAIAIQ8gD0UEQCAEIA5B' +
  'BGxqKAIAIAhGBEAgBSAOQQRsaiABNgIAIAYgCkEEbGogDjYCACAKQQFqIgogB04NAwsFIA8gAUcEQCAPIQkLCwsgDUEASgRA' +
  'IAxBAWshDiAFIA5BBGxqKAIAIQ8gD0UEQCAEIA5BBGxqKAIAIAhGBEAgBSAOQQRsaiABNgIAIAYgCkEEbGogDjYCACAKQQFq' +
  'IgogB04NAwsFIA8gAUcEQCAPIQkLCwsgDCACaiADSARAIAwgAmohDiAFIA5BBGxqKAIAIQ8gD0UEQCAEIA5BBGxqKAIAIAhG' +
  'BEAgBSAOQQRsaiABNgIAIAYgCkEEbGogDjYCACAKQQFqIgogB04NAwsFIA8gAUcEQCAPIQkLCwsgDCACa0EATgRAIAwgAmsh' +
  'DiAFIA5BBGxqKAIAIQ8gD0UEQCAEIA5BBGxqKAIAIAhGBEAgBSAOQQRsaiABNgIAIAYgCkEEbGogDjYCACAKQQFqIgogB04N' +
  'AwsFIA8gAUcEQCAPIQkLCwsLDAALCyAKIAkL7QEIAX8BfwF/AX8BfwF/AX8Bf0EBIQlBACEIAkADQCAIIAFODQEgAyAIQQRs' +
  'aigCAEUEQCAIIAkgACABIAIgAyAEIAYQBCELIQogCiAFSARAIAsgCSALQQBKGyEOQQAhDAJAA0AgDCAKTg0BIAMgBCAMQQRs' +
  'aigCAEEEbGogDjYCACAMQQFqIQwMAAsLBSAJQQFqIQkLCyAIQQFqIQgMAAsLQQAhD0EAIQwCQANAIAwgAU4NASADIAxBBGxq' +
  'KAIAIQ0gAyAMQQRsaiANQQFrIAdqNgIAIA0gD0oEQCANIQ8LIAxBAWohDAwACwsgDwu8AQQBfAF8AXwBfCAAvUIgiKdB////' +
  '/wdxQQNuQZPx/dQCaq1CIIa/IQEgASABoiABIACjoiECIAFEkuZhD+YD/j8gAkQgJPCS4Cj+vyACRMLWSUpg8fk/oqCioCAC' +
  'IAKiIAKiRNlR577LROi/IAJE1+3k1ACwwj+ioKKgoiEBIAG9QoCAgIAIfEKAgICAfIO/IQEgASABoiEDIAAgA6MhAiABIAGg' +
  'IQQgAiABoSAEIAKgoyECIAEgASACoqAL2AMJAX8BfwF8AXwBfAF8AXwBfAF8IAEhCAJAA0AgCCACTg0BIAhBA2whCSADIAAg' +
  'CWotAABBA3RqKwMAIQogAyAAIAlqLQABQQN0aisDgBAhCyADIAAgCWotAAJBA3RqKwOAICEMRA3GiEShZdo/IAqiRBgJbTmX' +
  '4tY/IAuioERYHTnSGRjHPyAMoqBEJ4i6D0Bq7j+jIhBEjqz8Mhgjgj9kBHwgEBAGBUTZzvdT4yUfQCAQokSWexphuafBP6AL' +
  'IQ1E9l/nps04yz8gCqJEGAltOZfi5j8gC6KgRFX3yOaqebI/IAyioCIQRI6s/DIYI4I/ZAR8IBAQBgVE2c73U+MlH0AgEKJE' +
  'lnsaYbmnwT+gCyEOREuvzcZKzJM/IAqiRDiB6bRug74/IAuioESR1hh0QmjuPyAMoqBEeXWOAdlr8T+jIhBEjqz8Mhgjgj9k' +
  'BHwgEBAGBUTZzvdT4yUfQCAQokSWexphuafBP6ALIQ8gBSAIQQhsakQAAAAAAABdQCAOokQAAAAAAAAwQKEgBKI5AwAgBiAI' +
  'QQhsakQAAAAAAEB/QCANIA6hoiAEojkDACAHIAhBCGxqRAAAAAAAAGlAIA4gD6GiIASiOQMAIAhBAWohCAwACwsLUAEBf0EA' +
  'IQMCQANAIAMgAU4NASACIAAgA2otAABqQQE6AAAgAiAAIANqLQABakEBOgCAAiACIAAgA2otAAJqQQE6AIAEIANBA2ohAwwA' +
  'CwsL';

let compiled: WebAssembly.Module | null | undefined;

/** The compiled kernel, or null where WebAssembly (with SIMD) is not available. */
function kernelModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      const bytes = new Uint8Array(Buffer.from(KERNEL_BASE64, 'base64'));
      compiled = typeof WebAssembly === 'object' && WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/**
 * Buffers for one SLIC run (n pixels, `width` x `height`, K centres) and the loops over them. With
 * the kernel they live in one WebAssembly memory, freed with the workspace. Images 1 pixel wide
 * take the JavaScript twins: the kernel's distance loop needs windows at least 2 pixels wide.
 */
export function slicWorkspace(width: number, height: number, K: number, options: { simd?: boolean } = {}): SlicWorkspace {
  const n = width * height;
  const module = options.simd === false ? null : kernelModule();
  // float64 buffers, then int32 ones, then bytes (each kind keeps its alignment)
  const f64Lengths = [n, n, n, width, width, K * CENTRE, K * SUMS, 768];
  const i32Lengths = [n, n, n, K * WINDOW];
  const u8Lengths = [3 * n, 768];
  const bytes = 8 * f64Lengths.reduce((a, b) => a + b, 0) + 4 * i32Lengths.reduce((a, b) => a + b, 0) + u8Lengths.reduce((a, b) => a + b, 0);
  if (module === null || width < 2 || bytes > 2 ** 31) {
    const best = new Float64Array(width);
    const ws: SlicWorkspace = {
      planes: [new Float64Array(n), new Float64Array(n), new Float64Array(n)],
      centres: new Float64Array(K * CENTRE),
      windows: new Int32Array(K * WINDOW),
      sums: new Float64Array(K * SUMS),
      nearest: new Int32Array(n),
      previous: new Int32Array(n),
      bytesSeen: bytesSeenJs,
      labFeatures: (data, table, ratio) => labFeaturesJs(data, table, ratio, ...ws.planes),
      assignPass: (spatialWeight, accumulate) => assignPassJs(ws, width, height, best, spatialWeight, accumulate),
      enforceConnectivity: (minSize, maxSize, startLabel) => enforceConnectivityJs(ws.nearest, width, minSize, maxSize, startLabel),
      simd: false,
    };
    return ws;
  }
  const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
  const kernel = new WebAssembly.Instance(module, { env: { memory } }).exports as Record<'assignPass' | 'connect' | 'labFeatures' | 'bytesSeen', (...args: number[]) => number>;
  const offsets: number[] = [];
  let at = 0;
  for (const length of f64Lengths) (offsets.push(at), (at += 8 * length));
  for (const length of i32Lengths) (offsets.push(at), (at += 4 * length));
  for (const length of u8Lengths) (offsets.push(at), (at += length));
  const [f0, f1, f2, best, label, centres, sums, table, nearest, previous, queue, windows, image, seen] = offsets as [number, number, number, number, number, number, number, number, number, number, number, number, number, number];
  const f64View = (offset: number, length: number) => new Float64Array(memory.buffer, offset, length);
  const i32View = (offset: number, length: number) => new Int32Array(memory.buffer, offset, length);
  const imageView = new Uint8Array(memory.buffer, image, 3 * n);
  return {
    planes: [f64View(f0, n), f64View(f1, n), f64View(f2, n)],
    centres: f64View(centres, K * CENTRE),
    windows: i32View(windows, K * WINDOW),
    sums: f64View(sums, K * SUMS),
    nearest: i32View(nearest, n),
    previous: i32View(previous, n),
    bytesSeen: (data) => {
      imageView.set(data);
      const view = new Uint8Array(memory.buffer, seen, 768);
      view.fill(0);
      kernel.bytesSeen(image, 3 * n, seen);
      return view.slice();
    },
    labFeatures: (data, tableValues, ratio) => {
      imageView.set(data);
      f64View(table, 768).set(tableValues);
      // in slices, so that V8 can switch to its optimised code between calls
      for (let from = 0; from < n; from += 8192) kernel.labFeatures(image, from, Math.min(n, from + 8192), table, ratio, f0, f1, f2);
    },
    assignPass: (spatialWeight, accumulate) => kernel.assignPass(K, width, height, spatialWeight, f0, f1, f2, best, label, centres, windows, nearest, previous, sums, accumulate ? 1 : 0) !== 0,
    enforceConnectivity: (minSize, maxSize, startLabel) => {
      // `previous` is done with: it becomes `final` (0 = not visited). Sizes never exceed n, so
      // clamping to [0, n + 1] keeps every comparison and fits an i32.
      const final = i32View(previous, n);
      final.fill(0);
      const clamp = (v: number) => Math.min(Math.max(v, 0), n + 1);
      const count = kernel.connect(width, n, nearest, previous, queue, clamp(minSize), clamp(maxSize), startLabel);
      return { labels: final.slice(), count };
    },
    simd: true,
  };
}
