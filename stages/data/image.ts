import sharp from 'sharp';
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

/**
 * Decode PNG/JPEG/WebP bytes to RGB (alpha dropped, grey expanded). Sharp is told to fail on any
 * warning, so a truncated or corrupt file is an error here rather than a half-grey image later.
 */
export async function decodeImage(bytes: Uint8Array, where = 'image'): Promise<RgbU8> {
  try {
    const { data, info } = await sharp(bytes, { failOn: 'warning' })
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
