import { basename } from 'node:path';
import { BadInputError } from '../../../core/errors.js';
import { decodeRle, encodeRle, maskArea, polygonsToMask, type CocoRle } from '../masks.js';
import type { SampleObject } from '../sample.js';
import type { SourceFs } from './fs.js';
import { sampleKeyFromPath, type DatasetSource, type SourceItem } from './types.js';

/** Boxes may poke this far (pixels) outside the image, as COCO's own float boxes do; beyond it is an error. */
export const BOX_TOLERANCE_PX = 1;

type Problem = DatasetSource['listingProblems'][number];

/** `instances_train2017.json` -> `train2017`; any other name -> `train`. */
export function splitFromAnnotationFile(file: string): string {
  const m = /^instances_([A-Za-z0-9_-]+)\.json$/.exec(basename(file));
  return m ? m[1]! : 'train';
}

/** The annotation files a COCO source names: one file, or every instances_*.json in a folder. */
export async function cocoAnnotationFilesIn(fs: SourceFs, annotations: string): Promise<string[]> {
  const kind = await fs.kind(annotations);
  if (kind === 'missing') throw new BadInputError('annotation file or folder not found', fs.label(annotations));
  if (kind === 'file') return [annotations];
  const files = (await fs.children(annotations)).filter((f) => /^instances_.+\.json$/.test(f));
  if (files.length === 0) throw new BadInputError('folder holds no instances_*.json file', fs.label(annotations));
  return files.map((f) => fs.join(annotations, f));
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Clip a box to the image when it overshoots by at most BOX_TOLERANCE_PX; otherwise say where and by how much. */
export function checkBox(box: [number, number, number, number], width: number, height: number, where: string): [number, number, number, number] {
  const [x0, y0, x1, y1] = box;
  if (!(x1 > x0 && y1 > y0)) throw new BadInputError(`box ${JSON.stringify(box)} is empty or inverted`, where);
  const t = BOX_TOLERANCE_PX;
  if (x0 < -t || y0 < -t || x1 > width + t || y1 > height + t) {
    throw new BadInputError(`box ${JSON.stringify(box)} lies outside the ${width}x${height} image`, where);
  }
  return [Math.max(0, x0), Math.max(0, y0), Math.min(width, x1), Math.min(height, y1)];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPositiveInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/**
 * COCO instances JSON. Categories are sorted by id and renumbered 0..K-1 (the manifest keeps the
 * names); boxes go from COCO's [x, y, w, h] to xyxy; polygons are rasterised to RLE so every
 * object in a shard has the same mask representation.
 *
 * The structure is checked before any image is read, because a structural fault changes labels
 * without failing later: a repeated image id would give one image the other's boxes, a repeated
 * category id a phantom class, an annotation of an image that is not listed would vanish. Each is
 * an error naming the file and member; `file_name` must stay inside `imagesRoot`.
 */
export async function cocoSource(fs: SourceFs, annotations: string, imagesRoot: string, skipBad: boolean): Promise<DatasetSource> {
  const files = await cocoAnnotationFilesIn(fs, annotations);
  const splits: Record<string, SourceItem[]> = {};
  const problems: Problem[] = [];
  let classes: string[] | null = null;
  for (const path of files) {
    const file = fs.label(path);
    const split = splitFromAnnotationFile(path);
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(await fs.read(path, 'annotation file')).toString('utf8'));
    } catch (err) {
      if (err instanceof BadInputError) throw err;
      throw new BadInputError(`malformed JSON (${(err as Error).message})`, file);
    }
    if (!isObject(parsed)) throw new BadInputError(`must hold a JSON object with "images", "annotations" and "categories", got ${JSON.stringify(parsed)?.slice(0, 60) ?? 'nothing'}`, file);
    const doc = parsed;
    for (const field of ['images', 'annotations', 'categories'] as const) {
      if (!Array.isArray(doc[field])) throw new BadInputError(`field "${field}" must be an array, got ${JSON.stringify(doc[field])?.slice(0, 60)}`, file);
    }
    if ((doc.images as unknown[]).length === 0) throw new BadInputError('"images" is empty: the split would have no samples', `${file}: images`);

    const categoryIndex = new Map<number, number>();
    const categoryNames = new Map<string, number>();
    const categories = (doc.categories as unknown[]).map((c, i) => {
      if (!isObject(c) || !Number.isInteger(c.id) || typeof c.name !== 'string' || c.name.trim() === '') {
        throw new BadInputError(`needs an integer id and a non-empty string name, got ${JSON.stringify(c)?.slice(0, 120)}`, `${file}: categories[${i}]`);
      }
      const id = c.id as number;
      if (categoryIndex.has(id)) throw new BadInputError(`category id ${id} repeats categories[${categoryIndex.get(id)}].id: boxes of that id would get an arbitrary class`, `${file}: categories[${i}].id`);
      if (categoryNames.has(c.name)) throw new BadInputError(`category name ${JSON.stringify(c.name)} repeats categories[${categoryNames.get(c.name)}].name: two classes would share one name`, `${file}: categories[${i}].name`);
      categoryIndex.set(id, i);
      categoryNames.set(c.name, i);
      return { id, name: c.name };
    });
    categories.sort((a, b) => a.id - b.id);
    const names = categories.map((c) => c.name);
    if (classes && classes.join('\n') !== names.join('\n')) throw new BadInputError(`categories differ from ${fs.label(files[0]!)}'s`, file);
    classes = names;
    const labelOf = new Map(categories.map((c, i) => [c.id, i]));

    // Image ids first: an annotation may only point at a listed image, and only at one.
    const imageIndex = new Map<number, number>();
    (doc.images as unknown[]).forEach((img, i) => {
      if (!isObject(img) || !Number.isInteger(img.id)) return; // reported with the image's other fields below
      const id = img.id as number;
      if (imageIndex.has(id)) {
        throw new BadInputError(`image id ${id} repeats images[${imageIndex.get(id)}].id: the annotations of one would be given to both`, `${file}: images[${i}].id`);
      }
      imageIndex.set(id, i);
    });

    const byImage = new Map<number, Record<string, unknown>[]>();
    (doc.annotations as unknown[]).forEach((a, i) => {
      const where = `${file}: annotations[${i}]`;
      if (!isObject(a)) throw new BadInputError(`must be an object, got ${JSON.stringify(a)?.slice(0, 60)}`, where);
      if (!Number.isInteger(a.image_id)) throw new BadInputError(`image_id must be an integer, got ${JSON.stringify(a.image_id)}`, `${where}.image_id`);
      const imageId = a.image_id as number;
      if (!imageIndex.has(imageId)) {
        const reason = `image_id ${imageId} is not the id of any entry of "images": the annotation belongs to no image`;
        if (!skipBad) throw new BadInputError(reason, `${where}.image_id`);
        problems.push({ split, origin: where, reason });
        return;
      }
      const list = byImage.get(imageId) ?? [];
      list.push({ ...a, __index: i });
      byImage.set(imageId, list);
    });

    const items: SourceItem[] = [];
    const seenKeys = new Map<string, string>();
    (doc.images as unknown[]).forEach((img, i) => {
      const where = `${file}: images[${i}]`;
      const skip = (reason: string | BadInputError, member = where) => {
        if (!skipBad) throw typeof reason === 'string' ? new BadInputError(reason, member) : reason;
        problems.push({ split, origin: member, reason: typeof reason === 'string' ? reason : reason.message });
      };
      if (!isObject(img) || !Number.isInteger(img.id) || typeof img.file_name !== 'string' || !isPositiveInt(img.width) || !isPositiveInt(img.height)) {
        return skip(`needs an integer id, positive integer width and height and a string file_name, got ${JSON.stringify(img)?.slice(0, 120)}`);
      }
      const fileName = img.file_name;
      let key: string;
      let imagePath: string;
      try {
        imagePath = fs.member(imagesRoot, fileName, `${where}.file_name`);
        key = sampleKeyFromPath(fileName, `${where}.file_name`);
      } catch (err) {
        if (!(err instanceof BadInputError)) throw err;
        return skip(err, `${where}.file_name`);
      }
      const previous = seenKeys.get(key);
      if (previous !== undefined) return skip(`duplicate sample key ${key} (also used by ${previous})`, `${where}.file_name`);
      seenKeys.set(key, fileName);
      const width = img.width, height = img.height;
      const anns = byImage.get(img.id as number) ?? [];
      items.push({
        key,
        origin: fs.label(imagePath),
        async load() {
          const objects = anns.map((a) => cocoObject(a, labelOf, width, height, `${file}: annotations[${a.__index as number}]`));
          const encoded = await fs.read(imagePath, 'image', imagesRoot);
          return { encoded, declaredSize: [width, height], declaredBy: `${where} (width, height)`, objects };
        },
      });
    });
    splits[split] = items;
  }
  return { description: `COCO ${files.map((f) => fs.label(f)).join(', ')}`, classes: classes ?? [], splits, listingProblems: problems };
}

function cocoObject(a: Record<string, unknown>, labelOf: Map<number, number>, width: number, height: number, where: string): SampleObject {
  const label = isNum(a.category_id) ? labelOf.get(a.category_id) : undefined;
  if (label === undefined) throw new BadInputError(`category_id ${JSON.stringify(a.category_id)} is not in categories`, `${where}.category_id`);
  const b = a.bbox;
  if (!Array.isArray(b) || b.length !== 4 || !b.every(isNum)) throw new BadInputError(`bbox must be [x, y, w, h] numbers, got ${JSON.stringify(b)}`, `${where}.bbox`);
  const bbox = checkBox([b[0], b[1], b[0] + b[2], b[1] + b[3]], width, height, `${where}.bbox`);
  const object: SampleObject = { label, bbox, area: isNum(a.area) ? a.area : (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) };
  if (a.iscrowd === 1 || a.iscrowd === true) object.iscrowd = true;
  // Not a COCO field: the synthetic benchmark's COCO export carries it, and the reader keeps it.
  if (isNum(a.occlusion) && a.occlusion >= 0 && a.occlusion <= 1) object.occlusion = a.occlusion;
  const seg = a.segmentation;
  if (seg === undefined || (Array.isArray(seg) && seg.length === 0)) return object;
  let mask: Uint8Array;
  if (Array.isArray(seg)) {
    if (!seg.every((p) => Array.isArray(p) && p.length >= 6 && p.length % 2 === 0 && p.every(isNum))) {
      throw new BadInputError('segmentation polygons must be arrays of at least 3 (x, y) number pairs', `${where}.segmentation`);
    }
    mask = polygonsToMask(seg as number[][], height, width);
  } else if (seg && typeof seg === 'object' && 'counts' in seg && 'size' in seg) {
    const rle = seg as CocoRle;
    if (!Array.isArray(rle.size) || rle.size[0] !== height || rle.size[1] !== width) {
      throw new BadInputError(`RLE size ${JSON.stringify(rle.size)} does not match the ${width}x${height} image (size is [height, width])`, `${where}.segmentation.size`);
    }
    try {
      mask = decodeRle(rle);
    } catch (err) {
      throw new BadInputError(`invalid RLE (${(err as Error).message})`, `${where}.segmentation.counts`);
    }
  } else {
    throw new BadInputError(`segmentation must be polygons or an RLE object, got ${JSON.stringify(seg).slice(0, 80)}`, `${where}.segmentation`);
  }
  object.mask = encodeRle(mask, height, width) as { size: [number, number]; counts: string };
  if (!isNum(a.area)) object.area = maskArea(mask);
  return object;
}
