/**
 * TensorBoard event files (`events.out.tfevents.*`), written straight into the artifact store so a
 * run's curves are live in S3 (or the file store) while it trains, on any tensor backend.
 *
 * Format (TensorFlow's TFRecord framing around `tensorflow.Event` protos, as TensorBoard reads them):
 *
 *   record = u64 LE length · u32 LE masked_crc32c(length bytes) · data · u32 LE masked_crc32c(data)
 *   masked_crc32c(x) = ((crc >>> 15) | (crc << 17)) + 0xa282ead8   (CRC-32C, Castagnoli)
 *
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; }
 *
 * The first record of a file is `file_version: "brain.Event:2"`. Scalars use `simple_value`, which
 * every TensorBoard version shows on its Scalars dashboard.
 *
 * Why not `tf.node.summaryFileWriter`: it needs the native backend to be the active one, writes to a
 * local directory (which a worker would then have to mirror into S3), and keeps one open writer per
 * directory for the life of the process. This writer is ~100 lines, backend-free, and puts bytes in
 * the store directly.
 */
import { joinKey, type ArtifactStore } from './store/index.js';

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli), as TFRecord uses: crc32c("123456789") = 0xe3069283. */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = crc32c(bytes);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length, its CRC, the payload, the payload's CRC. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

// Protobuf wire format, just the pieces an Event needs.
function varint(value: bigint | number): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

function lengthDelimited(field: number, bytes: Uint8Array | number[]): number[] {
  return [...varint((field << 3) | 2), ...varint(bytes.length), ...bytes];
}

function eventHeader(wallTime: number, step: number): number[] {
  const time = new Uint8Array(8);
  new DataView(time.buffer).setFloat64(0, wallTime, true);
  return [(1 << 3) | 1, ...time, ...(step !== 0 ? [(2 << 3) | 0, ...varint(step)] : [])];
}

/** The `file_version` event every event file starts with. */
export function fileVersionEvent(wallTime: number): Uint8Array {
  return Uint8Array.from([...eventHeader(wallTime, 0), ...lengthDelimited(3, new TextEncoder().encode('brain.Event:2'))]);
}

/** An Event carrying scalars (one Summary.Value per tag) at `step`. */
export function scalarsEvent(values: Array<[tag: string, value: number]>, step: number, wallTime: number): Uint8Array {
  const summary: number[] = [];
  for (const [tag, value] of values) {
    const v = new Uint8Array(4);
    new DataView(v.buffer).setFloat32(0, value, true);
    summary.push(...lengthDelimited(1, [...lengthDelimited(1, new TextEncoder().encode(tag)), (2 << 3) | 5, ...v]));
  }
  return Uint8Array.from([...eventHeader(wallTime, step), ...lengthDelimited(5, summary)]);
}

export interface EventWriterOptions {
  /** Part of the file name, so that a retried attempt writes a file of its own. */
  attempt?: number;
  /** Upload at most this often from `flush()` (a forced flush always uploads). */
  flushSeconds?: number;
  /** Start a new file once the current one passes this many bytes (only new bytes are uploaded then). */
  maxFileBytes?: number;
  /** Seconds since the epoch; tests pin it. */
  now?: () => number;
}

/**
 * Scalars for TensorBoard, kept in memory and uploaded to `<prefix>/events.out.tfevents.<t>.densepipe.a<attempt>.<n>`
 * on `flush()`. Each upload rewrites the current file whole (a PUT is atomic, so a reader sees a
 * complete prefix of the records); past `maxFileBytes` the writer moves on to the next file, so a long
 * run uploads only its recent events.
 */
export class StoreEventWriter {
  private readonly now: () => number;
  private readonly started: number;
  private readonly attempt: number;
  private readonly flushSeconds: number;
  private readonly maxFileBytes: number;
  private chunks: Uint8Array[] = [];
  private bytes = 0;
  private index = 0;
  private dirty = false;
  private lastUpload = -Infinity;
  private readonly written = new Set<string>();
  private pending: Promise<void> = Promise.resolve();

  constructor(
    readonly store: ArtifactStore,
    readonly prefix: string,
    options: EventWriterOptions = {},
  ) {
    this.now = options.now ?? (() => Date.now() / 1000);
    this.started = Math.floor(this.now());
    this.attempt = options.attempt ?? 1;
    this.flushSeconds = options.flushSeconds ?? 10;
    this.maxFileBytes = options.maxFileBytes ?? 1 << 20;
    this.startFile();
  }

  /** The key of the file being written now. */
  get key(): string {
    return joinKey(this.prefix, `events.out.tfevents.${String(this.started).padStart(10, '0')}.densepipe.a${this.attempt}.${String(this.index).padStart(4, '0')}`);
  }

  private startFile(): void {
    this.chunks = [tfRecord(fileVersionEvent(this.now()))];
    this.bytes = this.chunks[0]!.length;
  }

  /** Scalars at one step; non-finite values are skipped (TensorBoard would draw them as gaps anyway). */
  scalars(values: Record<string, number>, step: number, wallTime = this.now()): void {
    const finite = Object.entries(values).filter(([, v]) => Number.isFinite(v));
    if (finite.length === 0) return;
    const record = tfRecord(scalarsEvent(finite, step, wallTime));
    this.chunks.push(record);
    this.bytes += record.length;
    this.dirty = true;
  }

  /**
   * Upload when something changed and `flushSeconds` have passed since the last upload (or `force`).
   * Calls are serialised, so a flush that was not awaited cannot race the next one.
   */
  flush(force = false): Promise<void> {
    const next = this.pending.then(() => this.upload(force));
    this.pending = next.catch(() => undefined);
    return next;
  }

  private async upload(force: boolean): Promise<void> {
    if (!this.dirty) return;
    if (!force && this.now() - this.lastUpload < this.flushSeconds) return;
    const body = new Uint8Array(this.bytes);
    let at = 0;
    for (const c of this.chunks) {
      body.set(c, at);
      at += c.length;
    }
    const key = this.key;
    await this.store.put(key, body, { contentType: 'application/octet-stream' });
    this.written.add(key);
    this.lastUpload = this.now();
    this.dirty = false;
    if (this.bytes >= this.maxFileBytes) {
      this.index += 1;
      this.startFile();
    }
  }

  /** Delete event files under the prefix that this writer did not write (an earlier attempt's, replayed by the caller). */
  async removeOthers(): Promise<number> {
    const keys = (await this.store.list(`${this.prefix}/`)).filter((k) => k.includes('tfevents') && !this.written.has(k) && k !== this.key);
    for (const k of keys) await this.store.delete(k);
    return keys.length;
  }

  async close(): Promise<void> {
    await this.flush(true);
  }
}

/** Where a stage output keeps its TensorBoard files. */
export function tensorboardPrefix(outputPrefix: string): string {
  return joinKey(outputPrefix, 'tensorboard');
}
