import { describe, expect, it } from 'vitest';
import { BadInputError } from '../../core/errors.js';
import { decodeImage, encodeGrayPng, decodeGrayPng, encodeImage, sniffImageFormat } from '../../stages/data/image.js';
import { generateSyntheticImage, SYNTHETIC_SPECS } from '../../stages/data/synthetic.js';

const scene = generateSyntheticImage(SYNTHETIC_SPECS.tiny, 0, 'train', 1).image;

describe('image codec (sharp)', () => {
  it('round-trips PNG losslessly and encodes deterministically', async () => {
    const a = await encodeImage(scene, 'png');
    expect(a.equals(await encodeImage(scene, 'png'))).toBe(true);
    expect(sniffImageFormat(a)).toBe('png');
    const back = await decodeImage(a);
    expect([back.width, back.height]).toEqual([64, 64]);
    expect(Buffer.from(back.data).equals(Buffer.from(scene.data))).toBe(true);
    const j = await encodeImage(scene, 'jpg');
    expect(sniffImageFormat(j)).toBe('jpg');
    const jback = await decodeImage(j);
    let err = 0;
    jback.data.forEach((v, i) => (err += Math.abs(v - scene.data[i]!)));
    expect(err / jback.data.length).toBeLessThan(6);
  });

  it('round-trips single-channel label maps', async () => {
    const map = Uint8Array.from({ length: 12 }, (_, i) => i % 9);
    const back = await decodeGrayPng(await encodeGrayPng(4, 3, map));
    expect(Array.from(back.data)).toEqual(Array.from(map));
  });

  it('rejects truncated, bit-flipped and non-image bytes with the file named', async () => {
    for (const format of ['png', 'jpg'] as const) {
      const bytes = await encodeImage(scene, format);
      await expect(decodeImage(bytes.subarray(0, Math.floor(bytes.length * 0.95)), `a.${format}`)).rejects.toThrow(new RegExp(`a\\.${format}: cannot decode image`));
    }
    // PNG chunks carry CRCs, so flipped bits are caught. (JPEG has no checksum: a flip inside its
    // entropy-coded data can decode to wrong pixels without any error, so no such check exists for it.)
    const png = await encodeImage(scene, 'png');
    const flipped = Buffer.from(png);
    flipped[flipped.length >> 1] ^= 0xff;
    await expect(decodeImage(flipped, 'b.png')).rejects.toThrow(BadInputError);
    await expect(decodeImage(Buffer.from('not an image at all'), 'c.png')).rejects.toThrow(/c\.png: cannot decode image/);
  });
});
