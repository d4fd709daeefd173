import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { FileArtifactStore } from '../../core/store/index.js';
import { imageFrom, type RgbImage } from '../../stages/proposals/index.js';

export async function tempStore(): Promise<FileArtifactStore> {
  return new FileArtifactStore(await mkdtemp(join(tmpdir(), 'densepipe-proposals-')));
}

/** A small scene: a gradient background and `objects` flat rectangles of distinct colours. */
export function scene(width: number, height: number, seed: number, objects = 3): RgbImage {
  const rects: Array<[number, number, number, number, [number, number, number]]> = [];
  let s = seed * 7919 + 17;
  const rand = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let i = 0; i < objects; i++) {
    const w = Math.floor(width * (0.15 + 0.25 * rand()));
    const h = Math.floor(height * (0.15 + 0.25 * rand()));
    const x = Math.floor((width - w) * rand());
    const y = Math.floor((height - h) * rand());
    rects.push([x, y, x + w, y + h, [Math.floor(255 * rand()), Math.floor(255 * rand()), Math.floor(255 * rand())]]);
  }
  return imageFrom(width, height, (x, y) => {
    for (let i = rects.length - 1; i >= 0; i--) {
      const [x1, y1, x2, y2, c] = rects[i]!;
      if (x >= x1 && x < x2 && y >= y1 && y < y2) return c;
    }
    return [Math.floor((x / width) * 80) + 40, Math.floor((y / height) * 80) + 60, 90];
  });
}

export async function pngOf(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer();
}
