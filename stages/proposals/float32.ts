/**
 * Single-precision arithmetic as OpenCV's C++ does it, for the pieces of selective search that
 * have to agree with OpenCV bit for bit (ties in sorted edge weights and similarities decide
 * which regions merge). One float32 operation on float32 operands equals `Math.fround` of the
 * same operation in float64 (+, -, *, /, sqrt: the double rounding is innocuous), so plain
 * `fround(a op b)` is exact; a fused multiply-add needs `fmaF32`.
 */
export const f32 = Math.fround;

const scratch = new DataView(new ArrayBuffer(8));

export function float32Bits(v: number): number {
  scratch.setFloat32(0, v);
  return scratch.getUint32(0);
}

export function float32FromBits(bits: number): number {
  scratch.setUint32(0, bits >>> 0);
  return scratch.getFloat32(0);
}

export function float64FromBits(hi: number, lo: number): number {
  scratch.setUint32(0, hi >>> 0);
  scratch.setUint32(4, lo >>> 0);
  return scratch.getFloat64(0);
}

/** The two 32-bit words [high, low] of a float64. */
export function float64Words(v: number): [number, number] {
  scratch.setFloat64(0, v);
  return [scratch.getUint32(0), scratch.getUint32(4)];
}

/** cvRound: round half to even (SSE cvtsd2si / softfloat round_near_even). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

/**
 * fma(a, b, c) rounded once to float32 (FMA3 `vfmadd`, softfloat `mulAdd`), for float32 a, b, c.
 * a*b is exact in float64 (48 significant bits); the sum is formed exactly as s + err (TwoSum),
 * and the one case where rounding s to float32 could go the wrong way (s exactly halfway between
 * two float32 values while err is not 0) is settled by err's sign.
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = Math.fround(s);
  if (r === s) return r;
  // s is a tie iff the float32 on its other side is r + 2(s - r) (s - r is exact: Sterbenz)
  const other = r + 2 * (s - r);
  if (Math.fround(other) !== other || !Number.isFinite(s)) return r;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  if (err === 0) return r; // an exact tie: fround already rounded it to even
  return (err > 0) === (other > r) ? other : r;
}
