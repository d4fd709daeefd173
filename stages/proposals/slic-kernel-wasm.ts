/**
 * The source of slic-kernel.ts's WebAssembly module: a minimal encoder (the instructions the kernel
 * uses, structured loops, named locals) and the module's functions, each the transcription of its
 * JavaScript counterpart in slic-kernel.ts. slic-kernel.ts holds the assembled bytes as base64
 * (assembling them costs a cold process a few milliseconds of its first call, decoding them
 * microseconds); test/proposals/slic-kernel.test.ts checks that the two agree. After an edit here:
 *
 *   npx tsx scripts/slic-kernel.ts      (rewrites KERNEL_BASE64 in slic-kernel.ts)
 *
 * Opcodes: the WebAssembly core specification, binary format (SIMD: 0xfd prefix, LEB128 opcode).
 */
import { CENTRE, SUMS, WINDOW } from './slic-kernel.js';

/** Instructions as nested arrays of bytes, flattened once per vector (cheaper than spreading at every level). */
type Code = readonly (number | Code)[];
function flat(code: Code, out: number[] = []): number[] {
  for (const item of code) {
    if (typeof item === 'number') out.push(item);
    else flat(item, out);
  }
  return out;
}

/** Unsigned LEB128 (counts, sizes, indices, alignments, offsets). */
function uleb(v: number): number[] {
  const out: number[] = [];
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

/** Signed LEB128 (the immediates of i32.const and i64.const). */
function sleb(v: bigint): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    if ((v === 0n && (byte & 0x40) === 0) || (v === -1n && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

const vec = (code: Code): Code => {
  const bytes = flat(code);
  return [uleb(bytes.length), bytes];
};
const name = (s: string): Code => vec(Array.from(new TextEncoder().encode(s)));

const I32 = 0x7f;
const F64 = 0x7c;
const V128 = 0x7b;
type ValueType = typeof I32 | typeof F64 | typeof V128;

const memarg = (align: number, offset: number) => [uleb(align), uleb(offset)];
const simd = (op: number, ...imm: Code) => [0xfd, uleb(op), imm];
const get = (i: number) => [0x20, uleb(i)];
const set = (i: number) => [0x21, uleb(i)];
const tee = (i: number) => [0x22, uleb(i)];
const i32 = (v: number) => [0x41, sleb(BigInt(v))];
const i64 = (v: number) => [0x42, sleb(BigInt(v))];
const f64 = (v: number) => [0x44, Array.from(new Uint8Array(Float64Array.of(v).buffer))];

/** The instructions used, by opcode; the comment is the specification's name where ours differs. */
const op = {
  select: [0x1b],
  call: (f: number) => [0x10, uleb(f)],
  i32Load: (offset = 0) => [0x28, memarg(2, offset)],
  f64Load: (offset = 0) => [0x2b, memarg(3, offset)],
  i32Load8U: (offset = 0) => [0x2d, memarg(0, offset)],
  i32Store: (offset = 0) => [0x36, memarg(2, offset)],
  f64Store: (offset = 0) => [0x39, memarg(3, offset)],
  i32Store8: (offset = 0) => [0x3a, memarg(0, offset)],
  i32Eqz: [0x45],
  i32Eq: [0x46],
  i32Ne: [0x47],
  i32LtS: [0x48],
  i32GtS: [0x4a],
  i32GeS: [0x4e],
  f64Gt: [0x64],
  i32Add: [0x6a],
  i32Sub: [0x6b],
  i32Mul: [0x6c],
  i32DivU: [0x6e],
  i32RemS: [0x6f],
  i32And: [0x71],
  i32Or: [0x72],
  i32Shl: [0x74],
  i64Add: [0x7c],
  i64And: [0x83],
  i64Shl: [0x86],
  i64ShrU: [0x88],
  f64Add: [0xa0],
  f64Sub: [0xa1],
  f64Mul: [0xa2],
  f64Div: [0xa3],
  i32FromI64: [0xa7], // i32.wrap_i64
  i32FromF64: [0xaa], // i32.trunc_f64_s
  i64FromI32U: [0xad], // i64.extend_i32_u
  f64FromI32: [0xb7], // f64.convert_i32_s
  i64FromF64Bits: [0xbd], // i64.reinterpret_f64
  f64FromI64Bits: [0xbf], // f64.reinterpret_i64
  v128Load: simd(0x00, memarg(3, 0)),
  v128Store: simd(0x0b, memarg(3, 0)),
  f64x2Splat: simd(0x14),
  f64x2ReplaceLane1: simd(0x22, 1), // f64x2.replace_lane 1
  f64x2Gt: simd(0x4a),
  v128Bitselect: simd(0x52), // (a, b, mask): a where mask bits are set, else b
  f64x2Add: simd(0xf0),
  f64x2Sub: simd(0xf1),
  f64x2Mul: simd(0xf2),
  f64x2Pmin: simd(0xf6), // (a, b): b < a ? b : a
};

/** for (i = from; i < to; i += step) body; `from` and `to` leave an i32. */
const forRange = (i: number, from: Code, to: Code, step: number, body: Code): Code => [
  from, set(i),
  0x02, 0x40, 0x03, 0x40, // block, loop
  get(i), to, op.i32GeS, 0x0d, 1, // br_if out of the block
  body,
  get(i), i32(step), op.i32Add, set(i),
  0x0c, 0, 0x0b, 0x0b, // br to the loop, end, end
];
/** if (cond) then [else otherwise]; `cond` leaves an i32. */
const ifThen = (cond: Code, then: Code, otherwise: Code = []): Code => [cond, 0x04, 0x40, then, (otherwise.length ? [0x05, otherwise] : []), 0x0b];

/** Names for a function's parameters and locals, numbered as WebAssembly does (parameters first). */
function frame<P extends string, L extends string>(params: Record<P, ValueType>, locals: Record<L, ValueType>) {
  const names = [...Object.keys(params), ...Object.keys(locals)] as (P | L)[];
  const at = Object.fromEntries(names.map((n, i) => [n, i])) as Record<P | L, number>;
  const declarations = Object.values<ValueType>(locals).flatMap((type) => [1, type]);
  return { at, params: Object.values<ValueType>(params), localsCode: [uleb(declarations.length / 2), declarations] };
}

const pointer = (base: Code, index: Code, bytes: number) => [base, index, i32(bytes), op.i32Mul, op.i32Add];

// assignRow: one row's distances, two pixels at a time
const row = frame(
  { y: I32, K: I32, width: I32, spatialWeight: F64, f0: I32, f1: I32, f2: I32, best: I32, label: I32, centres: I32, windows: I32 },
  { k: I32, w: I32, c: I32, x: I32, xMax: I32, off: I32, r0: I32, r1: I32, r2: I32, dy: F64, kx: V128, dy2: V128, c0: V128, c1: V128, c2: V128, sw: V128, two: V128, xs: V128, kk: V128, dx: V128, d: V128, b: V128, t: V128 },
);
function assignRowCode(): Code {
  const v = row.at;
  const rowAddress = (plane: number) => [get(plane), get(v.y), get(v.width), op.i32Mul, i32(3), op.i32Shl, op.i32Add];
  // (feature - centre)^2 of the two pixels, for the plane whose row starts at `r`
  const colourTerm = (r: number, centre: number) => [get(r), get(v.off), op.i32Add, op.v128Load, get(centre), op.f64x2Sub, tee(v.t), get(v.t), op.f64x2Mul];
  const splatF64At = (local: number, offset: number) => [get(v.c), op.f64Load(offset), op.f64x2Splat, set(local)];
  // the pair of pixels (x, x + 1): both inside the window (see the tail below)
  const pixelPair = [
    get(v.x), i32(3), op.i32Shl, set(v.off),
    // d = (dy2 + dx * dx) * sw + ((d0^2 + d1^2) + d2^2)
    get(v.kx), get(v.xs), op.f64x2Sub, tee(v.dx), get(v.dx), op.f64x2Mul, get(v.dy2), op.f64x2Add, get(v.sw), op.f64x2Mul,
    colourTerm(v.r0, v.c0), colourTerm(v.r1, v.c1), op.f64x2Add, colourTerm(v.r2, v.c2), op.f64x2Add,
    op.f64x2Add, set(v.d),
    // label = best > d ? k : label; best = d < best ? d : best (pmin)
    get(v.label), get(v.off), op.i32Add, get(v.kk), get(v.label), get(v.off), op.i32Add, op.v128Load,
    get(v.best), get(v.off), op.i32Add, op.v128Load, tee(v.b), get(v.d), op.f64x2Gt, op.v128Bitselect, op.v128Store,
    get(v.best), get(v.off), op.i32Add, get(v.b), get(v.d), op.f64x2Pmin, op.v128Store,
  ];
  const centre = [
    pointer(get(v.windows), get(v.k), 4 * WINDOW), set(v.w),
    // only centres whose window covers row y: yMin <= y < yMax
    ifThen([get(v.y), get(v.w), op.i32Load(0), op.i32GeS, get(v.y), get(v.w), op.i32Load(4), op.i32LtS, op.i32And], [
      pointer(get(v.centres), get(v.k), 8 * CENTRE), set(v.c),
      get(v.c), op.f64Load(0), get(v.y), op.f64FromI32, op.f64Sub, tee(v.dy), get(v.dy), op.f64Mul, op.f64x2Splat, set(v.dy2),
      splatF64At(v.kx, 8), splatF64At(v.c0, 16), splatF64At(v.c1, 24), splatF64At(v.c2, 32),
      get(v.k), op.f64FromI32, op.f64x2Splat, set(v.kk),
      get(v.w), op.i32Load(12), set(v.xMax),
      // pairs (x, x + 1) while both are inside; xs = (x, x + 1) as float64
      get(v.w), op.i32Load(8), tee(v.x), op.f64FromI32, tee(v.dy), op.f64x2Splat, get(v.dy), f64(1), op.f64Add, op.f64x2ReplaceLane1, set(v.xs),
      0x02, 0x40, 0x03, 0x40,
      get(v.x), i32(1), op.i32Add, get(v.xMax), op.i32GeS, 0x0d, 1,
      pixelPair,
      get(v.xs), get(v.two), op.f64x2Add, set(v.xs),
      get(v.x), i32(2), op.i32Add, set(v.x),
      0x0c, 0, 0x0b, 0x0b,
      // an odd span's last pixel: the pair (xMax - 2, xMax - 1) again. Visiting a pixel twice for the
      // same centre changes nothing (its best is already <= this d), and a span is >= 2 pixels as
      // the image is >= 2 wide (slicWorkspace's JavaScript path takes 1-wide images).
      ifThen([get(v.x), get(v.xMax), op.i32LtS], [
        get(v.xMax), i32(2), op.i32Sub, tee(v.x), op.f64FromI32, tee(v.dy), op.f64x2Splat, get(v.dy), f64(1), op.f64Add, op.f64x2ReplaceLane1, set(v.xs),
        pixelPair,
      ]),
    ]),
  ];
  return [
    rowAddress(v.f0), set(v.r0), rowAddress(v.f1), set(v.r1), rowAddress(v.f2), set(v.r2),
    get(v.spatialWeight), op.f64x2Splat, set(v.sw),
    f64(2), op.f64x2Splat, set(v.two),
    forRange(v.k, i32(0), get(v.K), 1, centre),
  ];
}

/** The module's functions, by name: their index is their position here. */
const FUNCTIONS = ['assignRow', 'startRow', 'finishRow', 'assignPass', 'grow', 'connect', 'cbrt', 'labFeatures', 'bytesSeen'] as const;
const call = (f: (typeof FUNCTIONS)[number]) => op.call(FUNCTIONS.indexOf(f));

// startRow: best = MAX, label = the last pass's labels
const start = frame({ y: I32, width: I32, best: I32, label: I32, nearest: I32 }, { x: I32, p: I32 });
function startRowCode(): Code {
  const v = start.at;
  return [
    get(v.y), get(v.width), op.i32Mul, set(v.p),
    forRange(v.x, i32(0), get(v.width), 1, [
      pointer(get(v.best), get(v.x), 8), f64(Number.MAX_VALUE), op.f64Store(),
      pointer(get(v.label), get(v.x), 8), pointer(get(v.nearest), [get(v.p), get(v.x), op.i32Add], 4), op.i32Load(), op.f64FromI32, op.f64Store(),
    ]),
  ];
}

// finishRow: labels into `nearest`; with `accumulate`, the sums and the change test (1 = changed)
const finish = frame(
  { y: I32, width: I32, f0: I32, f1: I32, f2: I32, label: I32, nearest: I32, previous: I32, sums: I32, accumulate: I32 },
  { x: I32, p: I32, k: I32, o: I32, q: I32, changed: I32 },
);
function finishRowCode(): Code {
  const v = finish.at;
  const addTo = (offset: number, value: Code) => [get(v.o), get(v.o), op.f64Load(offset), value, op.f64Add, op.f64Store(offset)];
  const plane = (f: number) => [get(f), get(v.q), op.i32Add, op.f64Load()];
  return [
    i32(0), set(v.changed),
    forRange(v.x, i32(0), get(v.width), 1, [
      get(v.y), get(v.width), op.i32Mul, get(v.x), op.i32Add, set(v.p),
      pointer(get(v.label), get(v.x), 8), op.f64Load(), op.i32FromF64, set(v.k),
      pointer(get(v.nearest), get(v.p), 4), get(v.k), op.i32Store(),
      ifThen(get(v.accumulate), [
        ifThen([pointer(get(v.previous), get(v.p), 4), op.i32Load(), get(v.k), op.i32Ne], [
          i32(1), set(v.changed),
          pointer(get(v.previous), get(v.p), 4), get(v.k), op.i32Store(),
        ]),
        pointer(get(v.sums), get(v.k), 8 * SUMS), set(v.o),
        get(v.p), i32(3), op.i32Shl, set(v.q),
        addTo(0, f64(1)),
        addTo(8, [get(v.y), op.f64FromI32]),
        addTo(16, [get(v.x), op.f64FromI32]),
        addTo(24, plane(v.f0)),
        addTo(32, plane(v.f1)),
        addTo(40, plane(v.f2)),
      ]),
    ]),
    get(v.changed),
  ];
}

// assignPass: rows in order (each a few small calls, so that V8 swaps in optimised code between rows)
const pass = frame(
  { K: I32, width: I32, height: I32, spatialWeight: F64, f0: I32, f1: I32, f2: I32, best: I32, label: I32, centres: I32, windows: I32, nearest: I32, previous: I32, sums: I32, accumulate: I32 },
  { y: I32, changed: I32 },
);
function assignPassCode(): Code {
  const v = pass.at;
  return [
    i32(0), set(v.changed),
    forRange(v.y, i32(0), get(v.height), 1, [
      [v.y, v.width, v.best, v.label, v.nearest].map(get), call('startRow'),
      [v.y, v.K, v.width, v.spatialWeight, v.f0, v.f1, v.f2, v.best, v.label, v.centres, v.windows].map(get), call('assignRow'),
      [v.y, v.width, v.f0, v.f1, v.f2, v.label, v.nearest, v.previous, v.sums, v.accumulate].map(get), call('finishRow'),
      get(v.changed), op.i32Or, set(v.changed),
    ]),
    get(v.changed),
  ];
}

// grow: the BFS of one component (growComponent), returning (size, adjacent)
const grow = frame(
  { start: I32, label: I32, width: I32, n: I32, segments: I32, final: I32, queue: I32, maxSize: I32 },
  { id: I32, adjacent: I32, size: I32, visited: I32, p: I32, x: I32, q: I32, f: I32 },
);
function growCode(): Code {
  const v = grow.at;
  const at = (base: number, index: number) => pointer(get(base), get(index), 4);
  // one neighbour q of p: take it if unvisited with the same id (leaving the 4 neighbours once
  // maxSize pixels are taken: br_if 3 = out of this if, its two enclosing ifs and the neighbours' block)
  const neighbour = (inside: Code, q: Code) => ifThen(inside, [
    q, set(v.q),
    at(v.final, v.q), op.i32Load(), set(v.f),
    ifThen([get(v.f), op.i32Eqz], ifThen([at(v.segments, v.q), op.i32Load(), get(v.id), op.i32Eq], [
      at(v.final, v.q), get(v.label), op.i32Store(),
      at(v.queue, v.size), get(v.q), op.i32Store(),
      get(v.size), i32(1), op.i32Add, tee(v.size), get(v.maxSize), op.i32GeS, 0x0d, 3,
    ]), ifThen([get(v.f), get(v.label), op.i32Ne], [get(v.f), set(v.adjacent)])),
  ]);
  return [
    at(v.segments, v.start), op.i32Load(), set(v.id),
    at(v.final, v.start), get(v.label), op.i32Store(),
    get(v.queue), get(v.start), op.i32Store(),
    i32(1), set(v.size),
    0x02, 0x40, 0x03, 0x40, // while (visited < size && size < maxSize)
    get(v.visited), get(v.size), op.i32GeS, 0x0d, 1,
    get(v.size), get(v.maxSize), op.i32GeS, 0x0d, 1,
    at(v.queue, v.visited), op.i32Load(), set(v.p),
    get(v.visited), i32(1), op.i32Add, set(v.visited),
    get(v.p), get(v.width), op.i32RemS, set(v.x),
    0x02, 0x40, // the neighbours, in skimage's order x+1, x-1, y+1, y-1
    neighbour([get(v.x), i32(1), op.i32Add, get(v.width), op.i32LtS], [get(v.p), i32(1), op.i32Add]),
    neighbour([get(v.x), i32(0), op.i32GtS], [get(v.p), i32(1), op.i32Sub]),
    neighbour([get(v.p), get(v.width), op.i32Add, get(v.n), op.i32LtS], [get(v.p), get(v.width), op.i32Add]),
    neighbour([get(v.p), get(v.width), op.i32Sub, i32(0), op.i32GeS], [get(v.p), get(v.width), op.i32Sub]),
    0x0b,
    0x0c, 0, 0x0b, 0x0b,
    get(v.size), get(v.adjacent),
  ];
}

// connect: the connectivity pass (enforceConnectivityJs), relabelling `final` in place; returns the count
const connect = frame(
  { width: I32, n: I32, segments: I32, final: I32, queue: I32, minSize: I32, maxSize: I32, startLabel: I32 },
  { start: I32, label: I32, size: I32, adjacent: I32, i: I32, f: I32, target: I32, maxLabel: I32 },
);
function connectCode(): Code {
  const v = connect.at;
  const at = (base: number, index: number) => pointer(get(base), get(index), 4);
  const component = [
    [v.start, v.label, v.width, v.n, v.segments, v.final, v.queue, v.maxSize].map(get), call('grow'), set(v.adjacent), set(v.size),
    ifThen([get(v.size), get(v.minSize), op.i32LtS], [
      // too small: the last labelled neighbour met, or the current label when there was none
      get(v.adjacent), get(v.label), get(v.adjacent), i32(0), op.i32GtS, op.select, set(v.target),
      forRange(v.i, i32(0), get(v.size), 1, [get(v.final), at(v.queue, v.i), op.i32Load(), i32(4), op.i32Mul, op.i32Add, get(v.target), op.i32Store()]),
    ], [get(v.label), i32(1), op.i32Add, set(v.label)]),
  ];
  return [
    i32(1), set(v.label),
    forRange(v.start, i32(0), get(v.n), 1, ifThen([at(v.final, v.start), op.i32Load(), op.i32Eqz], component)),
    // final label = stored label - 1 + startLabel; the count is the largest stored label
    i32(0), set(v.maxLabel),
    forRange(v.i, i32(0), get(v.n), 1, [
      at(v.final, v.i), op.i32Load(), set(v.f),
      at(v.final, v.i), get(v.f), i32(1), op.i32Sub, get(v.startLabel), op.i32Add, op.i32Store(),
      ifThen([get(v.f), get(v.maxLabel), op.i32GtS], [get(v.f), set(v.maxLabel)]),
    ]),
    get(v.maxLabel),
  ];
}

// cbrt: V8's Math.cbrt (base/ieee754.cc, FreeBSD's s_cbrt.c), operation for operation, for x > 0
// normal (the only inputs it gets here: labFeatures calls it above 0.008856), so the same bits.
const cbrt = frame({ x: F64 }, { t: F64, r: F64, s: F64, w: F64 });
function cbrtCode(): Code {
  const v = cbrt.at;
  const P = [1.87595182427177009643, -1.88497979543377169875, 1.621429720105354466140, -0.758397934778766047437, 0.145996192886612446982];
  const highWord = (x: Code) => [x, op.i64FromF64Bits, i64(32), op.i64ShrU, op.i32FromI64];
  return [
    // rough cbrt to 5 bits: t's high word = hx / 3 + B1 (B1 = (1023 - 1023/3 - 0.03306235651) * 2^20)
    highWord(get(v.x)), i32(0x7fffffff), op.i32And, i32(3), op.i32DivU, i32(715094163), op.i32Add,
    op.i64FromI32U, i64(32), op.i64Shl, op.f64FromI64Bits, set(v.t),
    // to 23 bits: t * P(r), r = t^3 / x
    get(v.t), get(v.t), op.f64Mul, get(v.t), get(v.x), op.f64Div, op.f64Mul, set(v.r),
    get(v.t),
    f64(P[0]!), get(v.r), f64(P[1]!), get(v.r), f64(P[2]!), op.f64Mul, op.f64Add, op.f64Mul, op.f64Add,
    get(v.r), get(v.r), op.f64Mul, get(v.r), op.f64Mul, f64(P[3]!), get(v.r), f64(P[4]!), op.f64Mul, op.f64Add, op.f64Mul,
    op.f64Add, op.f64Mul, set(v.t),
    // round t away from zero to 23 bits: (bits + 0x80000000) & 0xffffffffc0000000
    get(v.t), op.i64FromF64Bits, i64(0x80000000), op.i64Add, i64(-0x40000000), op.i64And, op.f64FromI64Bits, set(v.t),
    // one Newton step to 53 bits
    get(v.t), get(v.t), op.f64Mul, set(v.s),
    get(v.x), get(v.s), op.f64Div, set(v.r),
    get(v.t), get(v.t), op.f64Add, set(v.w),
    get(v.r), get(v.t), op.f64Sub, get(v.w), get(v.r), op.f64Add, op.f64Div, set(v.r),
    get(v.t), get(v.t), get(v.r), op.f64Mul, op.f64Add,
  ];
}

// labFeatures: labFeaturesJs for pixels [from, to)
const lab = frame(
  { data: I32, from: I32, to: I32, table: I32, ratio: F64, l: I32, a: I32, b: I32 },
  { p: I32, i: I32, R: F64, G: F64, B: F64, x: F64, y: F64, z: F64, t: F64 },
);
function labFeaturesCode(): Code {
  const v = lab.at;
  const channel = (c: number, local: number) => [get(v.table), get(v.data), get(v.i), op.i32Add, op.i32Load8U(c), i32(3), op.i32Shl, op.i32Add, op.f64Load(2048 * c), set(local)];
  // f(t) = t > 0.008856 ? cbrt(t) : 7.787 t + 16/116
  const f = (value: Code, local: number) => [value, tee(v.t), f64(0.008856), op.f64Gt, 0x04, F64, get(v.t), call('cbrt'), 0x05, f64(7.787), get(v.t), op.f64Mul, f64(16 / 116), op.f64Add, 0x0b, set(local)];
  const mix = (cr: number, cg: number, cb: number) => [f64(cr), get(v.R), op.f64Mul, f64(cg), get(v.G), op.f64Mul, op.f64Add, f64(cb), get(v.B), op.f64Mul, op.f64Add];
  const store = (plane: number, value: Code) => [pointer(get(plane), get(v.p), 8), value, get(v.ratio), op.f64Mul, op.f64Store()];
  return forRange(v.p, get(v.from), get(v.to), 1, [
    get(v.p), i32(3), op.i32Mul, set(v.i),
    channel(0, v.R), channel(1, v.G), channel(2, v.B),
    f([mix(0.412453, 0.35758, 0.180423), f64(0.95047), op.f64Div], v.x),
    f(mix(0.212671, 0.71516, 0.072169), v.y),
    f([mix(0.019334, 0.119193, 0.950227), f64(1.08883), op.f64Div], v.z),
    store(v.l, [f64(116), get(v.y), op.f64Mul, f64(16), op.f64Sub]),
    store(v.a, [f64(500), get(v.x), get(v.y), op.f64Sub, op.f64Mul]),
    store(v.b, [f64(200), get(v.y), get(v.z), op.f64Sub, op.f64Mul]),
  ]);
}

// bytesSeen: seen[c * 256 + byte] = 1 for every byte of channel c
const seen = frame({ data: I32, length: I32, seen: I32 }, { i: I32 });
function bytesSeenCode(): Code {
  const v = seen.at;
  const mark = (c: number) => [get(v.seen), get(v.data), get(v.i), op.i32Add, op.i32Load8U(c), op.i32Add, i32(1), op.i32Store8(256 * c)];
  return forRange(v.i, i32(0), get(v.length), 3, [mark(0), mark(1), mark(2)]);
}

/** The module's bytes. */
export function kernelBytes(): Uint8Array<ArrayBuffer> {
  const functions = {
    assignRow: { frame: row, results: [] as number[], code: assignRowCode() },
    startRow: { frame: start, results: [], code: startRowCode() },
    finishRow: { frame: finish, results: [I32], code: finishRowCode() },
    assignPass: { frame: pass, results: [I32], code: assignPassCode() },
    grow: { frame: grow, results: [I32, I32], code: growCode() },
    connect: { frame: connect, results: [I32], code: connectCode() },
    cbrt: { frame: cbrt, results: [F64], code: cbrtCode() },
    labFeatures: { frame: lab, results: [], code: labFeaturesCode() },
    bytesSeen: { frame: seen, results: [], code: bytesSeenCode() },
  } satisfies Record<(typeof FUNCTIONS)[number], unknown>;
  const list = FUNCTIONS.map((f) => functions[f]);
  const exported = ['assignPass', 'connect', 'labFeatures', 'bytesSeen', 'cbrt'] as const;
  const section = (id: number, entries: Code[]) => [id, vec([uleb(entries.length), entries])];
  return new Uint8Array(flat([
    [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
    section(1, list.map((f) => [0x60, vec(f.frame.params), vec(f.results)])), // type i = function i's
    section(2, [[name('env'), name('memory'), 0x02, 0x00, uleb(1)]]), // imported memory, >= 1 page
    section(3, list.map((_, i) => uleb(i))),
    section(7, exported.map((f) => [name(f), 0x00, uleb(FUNCTIONS.indexOf(f))])),
    section(10, list.map((f) => vec([f.frame.localsCode, f.code, 0x0b]))),
  ]));
}

