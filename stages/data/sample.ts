import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { WdsSample } from '../../core/webdataset.js';
import { decodeImage, type RgbU8 } from './image.js';
import { decodeRle, encodeRle, type CocoRle } from './masks.js';

/**
 * The `<key>.json` member of every shard sample. Boxes are [x0, y0, x1, y1] in pixel-edge
 * coordinates of the stored image (x1, y1 exclusive: a box covering pixel columns 3..5 is
 * [3, *, 6, *]). Labels are 0-based indices into the dataset manifest's `classes`.
 */
export const sampleAnnotationSchema = z.object({
  schema: z.literal('densepipe.sample/v1'),
  key: z.string(),
  /** Where the sample came from (file name or synthetic id), for error messages and reports. */
  source: z.string(),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  objects: z.array(
    z.object({
      label: z.number().int().nonnegative(),
      bbox: z.tuple([z.number(), z.number(), z.number(), z.number()]),
      area: z.number().nonnegative(),
      mask: z.object({ size: z.tuple([z.number().int(), z.number().int()]), counts: z.union([z.string(), z.array(z.number().int())]) }).optional(),
      iscrowd: z.boolean().optional(),
      /** Pascal VOC's "difficult" flag (kept so evaluation can ignore these objects, as VOC does). */
      difficult: z.boolean().optional(),
      /** Fraction of the object hidden by others (synthetic data only). */
      occlusion: z.number().min(0).max(1).optional(),
    }),
  ),
  /** Image-level label (ImageFolder), when the source has one. */
  imageLabel: z.number().int().nonnegative().optional(),
});
export type SampleAnnotation = z.infer<typeof sampleAnnotationSchema>;
export type SampleObject = SampleAnnotation['objects'][number];

/** A sample as training code wants it: decoded pixels and dense targets. */
export interface DecodedSample {
  key: string;
  image: RgbU8;
  /** N x 4, xyxy pixel-edge coordinates. */
  boxes: Float32Array;
  labels: Int32Array;
  /** One row-major height*width 0/1 mask per object; null for objects without a mask. */
  masks: (Uint8Array | null)[];
  /** height*width; 0 = background, c + 1 = class c; null when no object has a mask. */
  semantic: Uint8Array | null;
  imageLabel?: number;
  annotation: SampleAnnotation;
}

/** An annotation object with its mask stored as COCO RLE (used by code that builds samples by hand). */
export function objectWithMask(label: number, mask: Uint8Array, width: number, height: number, bbox: [number, number, number, number], area: number, extra: Partial<SampleObject> = {}): SampleObject {
  return { label, bbox, area, mask: encodeRle(mask, height, width) as { size: [number, number]; counts: string }, ...extra };
}

export function parseAnnotation(bytes: Uint8Array, where: string): SampleAnnotation {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new BadInputError(`malformed JSON (${(err as Error).message})`, where);
  }
  const parsed = sampleAnnotationSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new BadInputError(`field ${issue.path.join('.') || '(root)'}: ${issue.message}`, where);
  }
  return parsed.data;
}

/** Paint the semantic map from masks in annotation order (later objects on top, as they were drawn). */
export function paintSemantic(width: number, height: number, labels: Int32Array, masks: (Uint8Array | null)[]): Uint8Array | null {
  if (!masks.some((m) => m)) return null;
  const map = new Uint8Array(width * height);
  masks.forEach((m, i) => {
    if (!m) return;
    const value = labels[i]! + 1;
    for (let p = 0; p < map.length; p++) if (m[p]) map[p] = value;
  });
  return map;
}

/** Decode one shard sample (`<key>.png|jpg` + `<key>.json`) into pixels, boxes, labels and masks. */
export async function decodeSample(sample: WdsSample, where = sample.key): Promise<DecodedSample> {
  const imageBytes = sample.files.png ?? sample.files.jpg ?? sample.files.jpeg;
  if (!imageBytes) throw new BadInputError('sample has no .png or .jpg member', where);
  const jsonBytes = sample.files.json;
  if (!jsonBytes) throw new BadInputError('sample has no .json member', where);
  const annotation = parseAnnotation(jsonBytes, `${where}.json`);
  const image = await decodeImage(imageBytes, where);
  if (image.width !== annotation.width || image.height !== annotation.height) {
    throw new BadInputError(`image is ${image.width}x${image.height} but the annotation says ${annotation.width}x${annotation.height}`, where);
  }
  const n = annotation.objects.length;
  const boxes = new Float32Array(n * 4);
  const labels = new Int32Array(n);
  const masks: (Uint8Array | null)[] = [];
  annotation.objects.forEach((o, i) => {
    boxes.set(o.bbox, i * 4);
    labels[i] = o.label;
    if (!o.mask) return void masks.push(null);
    const member = `${where}.json: objects[${i}].mask`;
    if (o.mask.size[0] !== image.height || o.mask.size[1] !== image.width) {
      throw new BadInputError(`mask size ${JSON.stringify(o.mask.size)} is not the image's [${image.height}, ${image.width}]`, member);
    }
    try {
      masks.push(decodeRle(o.mask as CocoRle));
    } catch (err) {
      throw new BadInputError(`invalid RLE (${(err as Error).message})`, member);
    }
  });
  return {
    key: sample.key,
    image,
    boxes,
    labels,
    masks,
    semantic: paintSemantic(image.width, image.height, labels, masks),
    ...(annotation.imageLabel !== undefined ? { imageLabel: annotation.imageLabel } : {}),
    annotation,
  };
}
