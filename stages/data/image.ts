import sharp from 'sharp';
import { MAX_IMAGE_PIXELS_CEILING } from '../../core/bounds.js';
import { BadInputError } from '../../core/errors.js';

/**
 * A decoded image: interleaved RGB, row-major, height x width x 3 (HWC). Uint8 images hold 0..255;
 * Float32 images hold 0..1 (what the augmentations produce and what becomes a tensor).
 */
export interface RgbImage<T extends Uint8Array | Float32Array = Uint8Array | Float32Array> {
  width: number;
  height: number;
  data: T;
}
export type RgbU8 = RgbImage<Uint8Array>;
export type RgbF32 = RgbImage<Float32Array>;

export type ImageFormat = 'png' | 'jpg';

/** What an image file's header declares, read without decoding a pixel. */
export interface ImageHeader {
  width: number;
  height: number;
  format: string;
}

/** Width, height and format from the header alone (a decompression bomb is caught here, before it is decoded). */
export async function readImageHeader(bytes: Uint8Array, where = 'image'): Promise<ImageHeader> {
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>['metadata']>>;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new BadInputError(`cannot read image header (${(err as Error).message})`, where);
  }
  if (!meta.width || !meta.height || !meta.format) throw new BadInputError('image header declares no width, height or format', where);
  return { width: meta.width, height: meta.height, format: meta.format };
}

/** Refuse an image whose header declares more than `maxPixels` pixels, naming its size and the limit. */
export function assertImagePixels(header: Pick<ImageHeader, 'width' | 'height'>, maxPixels: number, where: string): void {
  const pixels = header.width * header.height;
  if (pixels > maxPixels) {
    throw new BadInputError(
      `image declares ${header.width}x${header.height} = ${pixels.toLocaleString('en-US')} pixels, more than the limit of ${maxPixels.toLocaleString('en-US')} (data.maxImagePixels); ` +
        `decoded it would take ${Math.round((pixels * 3) / 1024 ** 2)} MB`,
      where,
    );
  }
}

/**
 * Decode PNG/JPEG/WebP bytes to RGB (alpha dropped, grey expanded). Sharp is told to fail on any
 * warning, so a truncated or corrupt file is an error here rather than a half-grey image later.
 * With `maxPixels` the header is checked first, so an oversized image is refused before decoding.
 */
export async function decodeImage(bytes: Uint8Array, where = 'image', options: { maxPixels?: number } = {}): Promise<RgbU8> {
  if (options.maxPixels !== undefined) assertImagePixels(await readImageHeader(bytes, where), options.maxPixels, where);
  try {
    const { data, info } = await sharp(bytes, { failOn: 'warning', limitInputPixels: options.maxPixels ?? MAX_IMAGE_PIXELS_CEILING })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (err) {
    throw new BadInputError(`cannot decode image (${(err as Error).message})`, where);
  }
}

/** Bytes one decode may hold at its peak: the file, libvips' working copy and the RGB output (estimate). */
export function decodeCostBytes(header: Pick<ImageHeader, 'width' | 'height'>, encodedBytes: number): number {
  return header.width * header.height * 8 + encodedBytes;
}

/**
 * A worker-wide memory budget for decoding: every decode reserves its estimated peak
 * (decodeCostBytes) and waits while the reservations of the others would pass the budget. With
 * `concurrency` 64 and a handful of 60-megapixel images, this is what keeps the worker from being
 * killed for memory; small images still run `concurrency` at a time. An image larger than the whole
 * budget runs alone. Waiters are served in order, so a large image is not starved by small ones.
 */
export class DecodeBudget {
  private used = 0;
  private readonly waiting: { cost: number; wake: () => void }[] = [];
  constructor(readonly capacityBytes: number) {}

  get inUse(): number {
    return this.used;
  }

  async run<T>(costBytes: number, fn: () => Promise<T>): Promise<T> {
    const cost = Math.min(Math.max(0, costBytes), this.capacityBytes);
    if (this.waiting.length > 0 || this.used + cost > this.capacityBytes) await new Promise<void>((wake) => this.waiting.push({ cost, wake }));
    else this.used += cost;
    try {
      return await fn();
    } finally {
      this.used -= cost;
      this.admit();
    }
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.cost <= this.capacityBytes) {
      const next = this.waiting.shift()!;
      this.used += next.cost;
      next.wake();
    }
  }
}

/** Default decode budget of one worker process (DENSEPIPE_DECODE_BUDGET_MB overrides it). */
export const DEFAULT_DECODE_BUDGET_MB = 1024;
let processBudget: DecodeBudget | null = null;

/** The worker process's one decode budget: every shard stage running in this process shares it. */
export function processDecodeBudget(): DecodeBudget {
  if (!processBudget) {
    const raw = process.env.DENSEPIPE_DECODE_BUDGET_MB;
    const mb = raw === undefined || raw === '' ? DEFAULT_DECODE_BUDGET_MB : Number(raw);
    // The worker's setting, not the run's input: not a BadInputError (a skipBad run must not skip every image for it).
    if (!Number.isFinite(mb) || mb < 64) throw new Error(`DENSEPIPE_DECODE_BUDGET_MB must be a number of megabytes of at least 64, got ${JSON.stringify(raw)} (fix the worker's environment)`);
    processBudget = new DecodeBudget(mb * 1024 ** 2);
  }
  return processBudget;
}

/** Decode a single-channel (grey or palette) PNG, e.g. a semantic or instance label map. */
export async function decodeGrayPng(bytes: Uint8Array, where = 'label map'): Promise<{ width: number; height: number; data: Uint8Array }> {
  try {
    const { data, info } = await sharp(bytes, { failOn: 'warning' }).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (err) {
    throw new BadInputError(`cannot decode label map (${(err as Error).message})`, where);
  }
}

/** Which container a byte string holds, by magic number (null when neither PNG nor JPEG). */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | null {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'png';
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpg';
  return null;
}

/**
 * Encode RGB to PNG or JPEG. Options are fixed (no timestamps, fixed zlib level, fixed JPEG
 * quality without progressive scans) so the same pixels always give the same bytes, which is what
 * makes shard sha256s reproducible.
 */
export async function encodeImage(image: RgbU8, format: ImageFormat, options: { jpegQuality?: number } = {}): Promise<Buffer> {
  const s = sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
    raw: { width: image.width, height: image.height, channels: 3 },
  });
  return format === 'png'
    ? s.png({ compressionLevel: 6, adaptiveFiltering: false, palette: false }).toBuffer()
    : s.jpeg({ quality: options.jpegQuality ?? 92, chromaSubsampling: '4:4:4', mozjpeg: false, progressive: false }).toBuffer();
}

/** Encode a single-channel 8-bit map (class ids) as a grey PNG: lossless, tiny for flat label maps. */
export async function encodeGrayPng(width: number, height: number, data: Uint8Array): Promise<Buffer> {
  return sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), { raw: { width, height, channels: 1 } })
    .png({ compressionLevel: 9, adaptiveFiltering: false, palette: false })
    .toBuffer();
}

export function toFloat01(image: RgbU8): RgbF32 {
  const out = new Float32Array(image.data.length);
  const src = image.data;
  for (let i = 0; i < src.length; i++) out[i] = src[i]! / 255;
  return { width: image.width, height: image.height, data: out };
}

export function toUint8(image: RgbF32): RgbU8 {
  const out = new Uint8Array(image.data.length);
  const src = image.data;
  for (let i = 0; i < src.length; i++) {
    const v = src[i]! * 255 + 0.5;
    out[i] = v <= 0 ? 0 : v >= 255 ? 255 : v;
  }
  return { width: image.width, height: image.height, data: out };
}
