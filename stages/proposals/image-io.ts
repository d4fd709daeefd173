import sharp from 'sharp';
import { BadInputError } from '../../core/errors.js';

/**
 * An 8-bit image held as interleaved channels in row-major order. Every algorithm in this folder
 * works on this one shape so that decoding, colour handling and bad-input policy live in one place.
 */
export interface RgbImage {
  width: number;
  height: number;
  /** Interleaved, `channels` bytes per pixel. */
  data: Uint8Array;
  channels: 3;
}

export function assertRgbImage(image: RgbImage, where = 'image'): void {
  const { width, height, data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new BadInputError(`width and height must be positive integers (got ${width}x${height})`, where);
  }
  if (data.length !== width * height * 3) {
    throw new BadInputError(`expected ${width * height * 3} bytes for ${width}x${height} RGB, got ${data.length}`, where);
  }
}

/**
 * Decode PNG/JPEG/WebP/TIFF bytes into 8-bit RGB. Grayscale is replicated to three channels (what
 * R-CNN's MATLAB wrapper does, and the only form OpenCV's selective search accepts); an alpha
 * channel is dropped with the colour values kept (what cv2.imread does); 16-bit images are reduced
 * to 8 bits by the 8-bit raw output.
 */
export async function decodeImage(bytes: Uint8Array, where = 'image'): Promise<RgbImage> {
  let decoded: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    decoded = await sharp(bytes, { failOn: 'error' })
      .rotate() // honour EXIF orientation: boxes must be in the pixel grid people see
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new BadInputError(`cannot decode image (${(err as Error).message})`, where);
  }
  const { width, height, channels } = decoded.info;
  const src = decoded.data;
  if (channels === 3) return { width, height, channels: 3, data: new Uint8Array(src.buffer, src.byteOffset, src.length) };
  // sharp can still hand back 1 or 2 channels for some grayscale inputs; widen here.
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    const v = src[i * channels]!;
    data[i * 3] = v;
    data[i * 3 + 1] = v;
    data[i * 3 + 2] = v;
  }
  return { width, height, channels: 3, data };
}

/**
 * Resize to exactly width x height (aspect ratio NOT kept, as DETReg's `cv2.resize(img, (128,128))`
 * and R2O's 224x224 squash do). `kernel` picks the filter: OpenCV's default for cv2.resize is
 * bilinear, R2O's torchvision resize is bicubic.
 */
export async function resizeImage(image: RgbImage, width: number, height: number, kernel: 'linear' | 'cubic' = 'linear'): Promise<RgbImage> {
  if (image.width === width && image.height === height) return image;
  const { data, info } = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: kernel === 'linear' ? 'linear' : 'cubic' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** Build an image from a per-pixel function; used by tests and the fixture generator. */
export function imageFrom(width: number, height: number, colourAt: (x: number, y: number) => [number, number, number]): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = colourAt(x, y);
      const o = (y * width + x) * 3;
      data[o] = r;
      data[o + 1] = g;
      data[o + 2] = b;
    }
  }
  return { width, height, channels: 3, data };
}

export async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer();
}
