/**
 * A TensorBoard event-file reader for tests, written independently of core/tfevents.ts: TFRecord
 * framing checked with a bit-by-bit CRC-32C, `tensorflow.Event` decoded with protobufjs' wire reader.
 * It also reads what TensorFlow's own writer (`tf.node.summaryFileWriter`) produces (tested), so a
 * file it accepts is one TensorBoard reads.
 */
import protobuf from 'protobufjs';

function crc32cBitwise(bytes: Uint8Array): number {
  let crc = ~0 >>> 0;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0x82f63b78 & -(crc & 1));
  }
  return ~crc >>> 0;
}

function masked(bytes: Uint8Array): number {
  const c = crc32cBitwise(bytes);
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

export interface ParsedValue {
  tag: string;
  simpleValue?: number;
  /** A TensorProto (what TensorFlow's own writer emits for scalars) was present. */
  hasTensor: boolean;
}

export interface ParsedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  values: ParsedValue[];
}

function decodeValue(bytes: Uint8Array): ParsedValue {
  const r = protobuf.Reader.create(bytes);
  const v: ParsedValue = { tag: '', hasTensor: false };
  while (r.pos < r.len) {
    const key = r.uint32();
    const field = key >>> 3;
    if (field === 1) v.tag = r.string();
    else if (field === 2) v.simpleValue = r.float();
    else if (field === 8) {
      v.hasTensor = true;
      r.skipType(key & 7);
    } else r.skipType(key & 7);
  }
  return v;
}

function decodeEvent(bytes: Uint8Array): ParsedEvent {
  const r = protobuf.Reader.create(bytes);
  const e: ParsedEvent = { wallTime: 0, step: 0, values: [] };
  while (r.pos < r.len) {
    const key = r.uint32();
    const field = key >>> 3;
    if (field === 1) e.wallTime = r.double();
    else if (field === 2) e.step = Number(r.int64());
    else if (field === 3) e.fileVersion = r.string();
    else if (field === 5) {
      const summary = protobuf.Reader.create(r.bytes());
      while (summary.pos < summary.len) {
        const k = summary.uint32();
        if (k >>> 3 === 1) e.values.push(decodeValue(summary.bytes()));
        else summary.skipType(k & 7);
      }
    } else r.skipType(key & 7);
  }
  return e;
}

/** Every record of an event file; throws on a bad length, a bad CRC or trailing bytes. */
export function parseEventFile(bytes: Uint8Array): ParsedEvent[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const events: ParsedEvent[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 12 > bytes.length) throw new Error(`truncated record header at byte ${at}`);
    const length = Number(view.getBigUint64(at, true));
    if (view.getUint32(at + 8, true) !== masked(bytes.subarray(at, at + 8))) throw new Error(`bad length CRC at byte ${at}`);
    const data = bytes.subarray(at + 12, at + 12 + length);
    if (data.length !== length || at + 16 + length > bytes.length) throw new Error(`truncated record at byte ${at}`);
    if (view.getUint32(at + 12 + length, true) !== masked(data)) throw new Error(`bad data CRC at byte ${at}`);
    events.push(decodeEvent(data));
    at += 16 + length;
  }
  return events;
}

/** tag -> [[step, value], ...] over the scalar (simple_value) events, in file order. */
export function scalarSeries(events: ParsedEvent[]): Map<string, Array<[number, number]>> {
  const out = new Map<string, Array<[number, number]>>();
  for (const e of events) {
    for (const v of e.values) {
      if (v.simpleValue === undefined) continue;
      if (!out.has(v.tag)) out.set(v.tag, []);
      out.get(v.tag)!.push([e.step, v.simpleValue]);
    }
  }
  return out;
}
