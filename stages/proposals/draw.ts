import sharp from 'sharp';
import type { Box } from './boxes.js';
import type { Segmentation } from './felzenszwalb.js';
import type { RgbImage } from './raster.js';

const PALETTE = ['#e6194b', '#3cb44b', '#ffe119', '#4363d8', '#f58231', '#911eb4', '#46f0f0', '#f032e6', '#bcf60c', '#fabebe'];

/** PNG of the image with the first `max` boxes outlined (an SVG overlay composited by sharp). */
export async function drawProposals(image: RgbImage, boxes: Box[], options: { max?: number; strokeWidth?: number } = {}): Promise<Buffer> {
  const shown = boxes.slice(0, options.max ?? 50);
  const stroke = options.strokeWidth ?? Math.max(1, Math.round(Math.min(image.width, image.height) / 200));
  const rects = shown
    .map((b, i) => {
      const w = Math.max(0, b[2] - b[0]);
      const h = Math.max(0, b[3] - b[1]);
      return `<rect x="${b[0]}" y="${b[1]}" width="${w}" height="${h}" fill="none" stroke="${PALETTE[i % PALETTE.length]}" stroke-width="${stroke}"/>`;
    })
    .join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${image.width}" height="${image.height}">${rects}</svg>`;
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .composite([{ input: Buffer.from(svg), top: 0, left: 0 }])
    .png()
    .toBuffer();
}

/** PNG of the image with segment boundaries painted white (the label map must match its size). */
export async function drawSegmentBoundaries(image: RgbImage, seg: Segmentation): Promise<Buffer> {
  if (seg.width !== image.width || seg.height !== image.height) {
    throw new Error(`label map is ${seg.width}x${seg.height}, image is ${image.width}x${image.height}; resize one to the other first`);
  }
  const data = Uint8Array.from(image.data);
  const { width, height, labels } = seg;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      if ((x + 1 < width && labels[p] !== labels[p + 1]) || (y + 1 < height && labels[p] !== labels[p + width])) data.fill(255, p * 3, p * 3 + 3);
    }
  }
  return sharp(data, { raw: { width, height, channels: 3 } }).png().toBuffer();
}
