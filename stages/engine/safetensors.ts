/**
 * The safetensors container (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * u64 header size N, N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__"?: {string: string}}, then the raw little-endian tensor bytes. Offsets are
 * relative to the end of the header. The JSON is space-padded to a multiple of 8 so buffers
 * stay aligned, as the reference writer does.
 */
import { IncompatibleArtifactError } from '../../core/errors.js';

export type SafeDtype = 'F32' | 'I32' | 'I64' | 'F64' | 'U8' | 'BOOL' | 'F16' | 'BF16' | 'I8' | 'I16' | 'U16' | 'U32' | 'U64';

export interface SafeTensor {
  dtype: SafeDtype;
  shape: number[];
  /** Little-endian bytes (a view; copy before keeping it past the source buffer's lifetime). */
  data: Uint8Array;
}

const ELEMENT_BYTES: Record<SafeDtype, number> = { F32: 4, I32: 4, I64: 8, F64: 8, U8: 1, BOOL: 1, F16: 2, BF16: 2, I8: 1, I16: 2, U16: 2, U32: 4, U64: 8 };

/** The largest header the reader accepts (the reference implementation's limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Typed arrays use the platform's byte order; every supported Node platform is little-endian.
  throw new Error('safetensors: big-endian platforms are not supported');
}

export function encodeSafetensors(tensors: Map<string, SafeTensor>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__') throw new Error("safetensors: '__metadata__' is reserved and cannot name a tensor");
    const expected = t.shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[t.dtype];
    if (t.data.byteLength !== expected) {
      throw new Error(`safetensors: tensor '${name}' has ${t.data.byteLength} bytes, ${t.dtype}[${t.shape}] needs ${expected}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    offset += expected;
  }
  let json = JSON.stringify(header);
  const jsonBytesLength = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (jsonBytesLength % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const t of tensors.values()) {
    out.set(t.data, pos);
    pos += t.data.byteLength;
  }
  return out;
}

export interface DecodedSafetensors {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

/**
 * Parse and validate a whole file. Truncation, overlapping or out-of-range offsets, unknown
 * dtypes and size/shape disagreements are IncompatibleArtifactErrors naming `source` and the tensor.
 */
export function decodeSafetensors(bytes: Uint8Array, source = 'safetensors file'): DecodedSafetensors {
  const fail = (msg: string): never => {
    throw new IncompatibleArtifactError(msg, source);
  };
  if (bytes.byteLength < 8) fail(`truncated: ${bytes.byteLength} bytes, not even the 8-byte header size`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) fail(`header size ${headerLength} is implausible (corrupt or not a safetensors file)`);
  if (8 + headerLength > bytes.byteLength) fail(`truncated: header says ${headerLength} bytes of JSON, file has ${bytes.byteLength - 8}`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)));
  } catch (err) {
    return fail(`header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) fail('header is not a JSON object');
  const dataStart = 8 + headerLength;
  const dataLength = bytes.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const rawMeta = header.__metadata__;
  if (rawMeta !== undefined) {
    if (!rawMeta || typeof rawMeta !== 'object') fail('__metadata__ must be an object of strings');
    for (const [k, v] of Object.entries(rawMeta as Record<string, unknown>)) {
      if (typeof v !== 'string') fail(`__metadata__.${k} must be a string`);
      metadata[k] = v as string;
    }
  }
  const entries: Array<[string, SafeTensor, number, number]> = [];
  for (const [name, rawEntry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const entry = rawEntry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = entry?.dtype as SafeDtype;
    if (typeof dtype !== 'string' || !(dtype in ELEMENT_BYTES)) fail(`tensor '${name}': unsupported dtype ${JSON.stringify(entry?.dtype)}`);
    const shape = entry.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) fail(`tensor '${name}': bad shape ${JSON.stringify(shape)}`);
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || offsets.some((o) => !Number.isInteger(o) || o < 0)) {
      fail(`tensor '${name}': bad data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = (shape as number[]).reduce((a, b) => a * b, 1) * ELEMENT_BYTES[dtype];
    if (end - begin !== expected) fail(`tensor '${name}': ${end - begin} bytes for ${dtype}[${shape}] (needs ${expected})`);
    if (end > dataLength) fail(`truncated: tensor '${name}' ends at byte ${end} of the data section, which has ${dataLength}`);
    entries.push([name, { dtype, shape: shape as number[], data: bytes.subarray(dataStart + begin, dataStart + end) }, begin, end]);
  }
  // The data section must be covered exactly once, without holes or overlaps (format rule).
  const sorted = [...entries].sort((a, b) => a[2] - b[2]);
  let cursor = 0;
  for (const [name, , begin, end] of sorted) {
    if (begin !== cursor) fail(`tensor '${name}' starts at ${begin}, expected ${cursor} (overlap or hole in the data section)`);
    cursor = end;
  }
  if (cursor !== dataLength) fail(`data section has ${dataLength} bytes but tensors cover ${cursor}`);
  const tensors = new Map<string, SafeTensor>();
  for (const [name, t] of entries) tensors.set(name, t);
  return { tensors, metadata };
}

/** Copy bytes into a fresh, aligned buffer and view them as the typed array of `dtype`. */
export function typedArrayOf(t: SafeTensor): Float32Array | Int32Array | BigInt64Array | Uint8Array | Float64Array {
  // A fresh ArrayBuffer at offset 0 guarantees alignment. (Not `.slice()`: on a Node Buffer,
  // which the stores return, slice is a view of the whole pooled buffer.)
  const copy = new Uint8Array(t.data.byteLength);
  copy.set(t.data);
  switch (t.dtype) {
    case 'F32':
      return new Float32Array(copy.buffer);
    case 'I32':
      return new Int32Array(copy.buffer);
    case 'I64':
      return new BigInt64Array(copy.buffer);
    case 'F64':
      return new Float64Array(copy.buffer);
    case 'U8':
    case 'BOOL':
      return copy;
    default:
      throw new Error(`safetensors: reading dtype ${t.dtype} is not supported`);
  }
}

export function bytesOf(array: Float32Array | Int32Array | BigInt64Array | Uint8Array | Float64Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}
