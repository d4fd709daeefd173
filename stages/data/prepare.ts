import { BadInputError } from '../../core/errors.js';
import { assertValidSampleKey, type WdsSample } from '../../core/webdataset.js';
import { assertImagePixels, decodeCostBytes, decodeImage, encodeImage, processDecodeBudget, readImageHeader, sniffImageFormat, type DecodeBudget, type ImageFormat } from './image.js';
import type { SampleAnnotation, SampleObject } from './sample.js';
import type { SourceItem } from './sources/types.js';

export interface PreparedSample {
  sample: WdsSample;
  width: number;
  height: number;
  objects: SampleObject[];
  imageLabel?: number;
}

/** Source image formats (by content, not file name) the shard stage reads. */
const ACCEPTED_FORMATS = new Set(['png', 'jpeg', 'webp']);

export interface PrepareOptions {
  format: ImageFormat;
  jpegQuality: number;
  /** Largest image accepted (width × height), checked from the header before decoding. */
  maxPixels: number;
  /** The worker's decode memory budget (default: the process-wide one). */
  budget?: DecodeBudget;
}

/**
 * Load one source item and turn it into shard members: the image in the configured format and
 * its annotation JSON. Every image is fully decoded here, so a truncated or corrupt file fails
 * now (naming its path) instead of in the middle of training. The header is read first: an image
 * over `maxPixels` is refused undecoded, and the decode waits for its share of the memory budget.
 */
export async function prepareSample(item: SourceItem, classes: readonly string[], options: PrepareOptions): Promise<PreparedSample> {
  const { format, jpegQuality } = options;
  assertValidSampleKey(item.key, `${item.origin} (sample key)`);
  const loaded = await item.load();
  let bytes: Uint8Array;
  let width: number;
  let height: number;
  if (loaded.pixels) {
    ({ width, height } = loaded.pixels);
    bytes = await encodeImage(loaded.pixels, format, { jpegQuality });
  } else if (loaded.encoded) {
    const encoded = loaded.encoded;
    const header = await readImageHeader(encoded, item.origin);
    // Only raster formats that hold pixels alone: SVG and PDF can name other files (and the decoder would fetch them).
    if (!ACCEPTED_FORMATS.has(header.format)) throw new BadInputError(`image format ${header.format} is not accepted (PNG, JPEG or WebP)`, item.origin);
    assertImagePixels(header, options.maxPixels, item.origin);
    if (loaded.declaredSize && (loaded.declaredSize[0] !== header.width || loaded.declaredSize[1] !== header.height)) {
      throw new BadInputError(`image is ${header.width}x${header.height} but ${loaded.declaredBy ?? 'its annotation'} says ${loaded.declaredSize[0]}x${loaded.declaredSize[1]}`, item.origin);
    }
    const budget = options.budget ?? processDecodeBudget();
    ({ bytes, width, height } = await budget.run(decodeCostBytes(header, encoded.byteLength), async () => {
      const decoded = await decodeImage(encoded, item.origin, { maxPixels: options.maxPixels });
      // Pass the file through untouched when it is already in the target format: no second JPEG loss.
      const out = sniffImageFormat(encoded) === format ? encoded : await encodeImage(decoded, format, { jpegQuality });
      return { bytes: out, width: decoded.width, height: decoded.height };
    }));
    if (loaded.declaredSize && (loaded.declaredSize[0] !== width || loaded.declaredSize[1] !== height)) {
      throw new BadInputError(`image is ${width}x${height} but ${loaded.declaredBy ?? 'its annotation'} says ${loaded.declaredSize[0]}x${loaded.declaredSize[1]}`, item.origin);
    }
  } else {
    throw new BadInputError('source item produced neither pixels nor encoded bytes', item.origin);
  }
  loaded.objects.forEach((o, i) => {
    const where = `${item.origin}: object ${i}`;
    if (o.label < 0 || o.label >= classes.length) throw new BadInputError(`label ${o.label} is not a class index (0..${classes.length - 1})`, where);
    const [x0, y0, x1, y1] = o.bbox;
    if (!(x0 >= 0 && y0 >= 0 && x1 <= width && y1 <= height && x1 > x0 && y1 > y0)) {
      throw new BadInputError(`box ${JSON.stringify(o.bbox)} is empty or outside the ${width}x${height} image`, where);
    }
    if (o.mask && (o.mask.size[0] !== height || o.mask.size[1] !== width)) {
      throw new BadInputError(`mask size ${JSON.stringify(o.mask.size)} is not [${height}, ${width}]`, where);
    }
  });
  const annotation: SampleAnnotation = {
    schema: 'densepipe.sample/v1',
    key: item.key,
    source: item.origin,
    width,
    height,
    objects: loaded.objects,
    ...(loaded.imageLabel !== undefined ? { imageLabel: loaded.imageLabel } : {}),
  };
  return {
    sample: { key: item.key, files: { [format]: bytes, json: Buffer.from(JSON.stringify(annotation)) } },
    width,
    height,
    objects: loaded.objects,
    ...(loaded.imageLabel !== undefined ? { imageLabel: loaded.imageLabel } : {}),
  };
}

/** Bytes a sample adds to a tar built by packShard: a 512-byte header per member plus data padded to 512. */
export function tarBytesOf(sample: WdsSample): number {
  let n = 0;
  for (const body of Object.values(sample.files)) n += 512 + Math.ceil(body.byteLength / 512) * 512;
  return n;
}

/** The two zero blocks that end every tar. */
export const TAR_END_BYTES = 1024;

/**
 * Run `fn` over items with up to `concurrency` in flight, yielding outcomes in input order.
 * Failures are yielded as values, so one bad item neither crashes the run nor leaves an
 * unhandled rejection behind.
 */
export async function* mapOrdered<T, R>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<R>): AsyncGenerator<{ item: T; ok: true; value: R } | { item: T; ok: false; error: unknown }> {
  const start = (item: T) =>
    fn(item).then(
      (value) => ({ item, ok: true as const, value }),
      (error: unknown) => ({ item, ok: false as const, error }),
    );
  const window: ReturnType<typeof start>[] = [];
  let next = 0;
  while (next < items.length && window.length < concurrency) window.push(start(items[next++]!));
  while (window.length > 0) {
    const outcome = await window.shift()!;
    if (next < items.length) window.push(start(items[next++]!));
    yield outcome;
  }
}
