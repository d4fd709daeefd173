import sharp from 'sharp';
import { BadInputError } from '../../core/errors.js';
import { resizeLinear8u } from './opencv-imgproc.js';
import type { RgbImage } from './raster.js';

export type { RgbImage } from './raster.js';

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
 * and R2O's 224x224 squash do). `kernel` picks the filter:
 * - 'linear': cv2.resize's default INTER_LINEAR, reproduced byte for byte (resizeLinear8u; the
 *   DETReg preset follows that call, and sharp's bilinear differs in most bytes);
 * - 'cubic': sharp's bicubic, for R2O's torchvision (PIL) resize.
 */
export async function resizeImage(image: RgbImage, width: number, height: number, kernel: 'linear' | 'cubic' = 'linear'): Promise<RgbImage> {
  if (image.width === width && image.height === height) return image;
  if (kernel === 'linear') return { width, height, channels: 3, data: resizeLinear8u(image.data, image.width, image.height, 3, width, height) };
  const { data, info } = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: 'cubic' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

export async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer();
}

/**
 * A label map as a 16-bit grayscale PNG (lossless, viewable, readable by PIL/OpenCV with
 * IMREAD_UNCHANGED). Labels must fit in 0..65535.
 */
export async function encodeLabelPng(seg: { width: number; height: number; labels: Int32Array }): Promise<Buffer> {
  const values = new Uint16Array(seg.labels.length);
  for (let i = 0; i < values.length; i++) {
    const l = seg.labels[i]!;
    if (l < 0 || l > 65535) throw new BadInputError(`label ${l} does not fit a 16-bit PNG`, 'segments');
    values[i] = l;
  }
  return sharp(values, { raw: { width: seg.width, height: seg.height, channels: 1 } }).toColourspace('grey16').png().toBuffer();
}

export async function decodeLabelPng(bytes: Uint8Array): Promise<{ width: number; height: number; labels: Int32Array }> {
  const { data, info } = await sharp(bytes).toColourspace('grey16').raw({ depth: 'ushort' }).toBuffer({ resolveWithObject: true });
  const values = new Uint16Array(data.buffer, data.byteOffset, data.length / 2);
  return { width: info.width, height: info.height, labels: Int32Array.from(values) };
}
