import { BadInputError } from '../../core/errors.js';

/**
 * An 8-bit RGB image, interleaved, row-major. Every algorithm in this folder works on this one
 * shape so that decoding, colour handling and the bad-input policy live in one place
 * (image-io.ts). This module has no native dependency, so worker threads can load it cheaply.
 */
export interface RgbImage {
  width: number;
  height: number;
  /** Interleaved R, G, B bytes. */
  data: Uint8Array;
  channels: 3;
}

export function assertRgbImage(image: RgbImage, where = 'image'): void {
  const { width, height, data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new BadInputError(`width and height must be positive integers (got ${width}x${height})`, where);
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
    throw new BadInputError(`expected ${width * height * 3} bytes for ${width}x${height} RGB, got ${data?.length}`, where);
  }
}

/** Build an image from a per-pixel function; used by tests, benches and the fixture generator. */
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
