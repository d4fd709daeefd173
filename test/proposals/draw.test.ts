import { describe, expect, it } from 'vitest';
import { decodeImage, drawProposals, drawSegmentBoundaries, imageFrom } from '../../stages/proposals/index.js';

describe('pictures', () => {
  const image = imageFrom(40, 30, () => [0, 0, 0]);
  const at = (data: Uint8Array, x: number, y: number) => Array.from(data.subarray((y * 40 + x) * 3, (y * 40 + x) * 3 + 3));

  it('outlines boxes and leaves their inside and the rest of the image alone', async () => {
    const png = await drawProposals(image, [[10, 5, 30, 25]], { strokeWidth: 2 });
    const drawn = await decodeImage(png);
    expect([drawn.width, drawn.height]).toEqual([40, 30]);
    expect(at(drawn.data, 10, 15).some((v) => v > 100)).toBe(true); // left edge
    expect(at(drawn.data, 20, 15)).toEqual([0, 0, 0]); // inside
    expect(at(drawn.data, 2, 2)).toEqual([0, 0, 0]); // outside
  });

  it('paints segment boundaries and refuses a label map of another size', async () => {
    const labels = Int32Array.from({ length: 40 * 30 }, (_, i) => (i % 40 < 20 ? 0 : 1));
    const drawn = await decodeImage(await drawSegmentBoundaries(image, { width: 40, height: 30, labels, count: 2 }));
    expect(at(drawn.data, 19, 10)).toEqual([255, 255, 255]);
    expect(at(drawn.data, 5, 10)).toEqual([0, 0, 0]);
    await expect(drawSegmentBoundaries(image, { width: 10, height: 10, labels: new Int32Array(100), count: 1 })).rejects.toThrow(/10x10/);
  });
});
