import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeImage, type ImageFormat } from './image.js';
import { encodeRle } from './masks.js';
import { generateSyntheticImage, SYNTHETIC_CLASS_NAMES, SYNTHETIC_SPECS, SYNTHETIC_SPLITS, type SyntheticSize } from './synthetic.js';

/**
 * Write the built-in benchmark to disk exactly like a real COCO dataset:
 * `<root>/annotations/instances_<split>.json` and `<root>/images/<split>/<key>.<ext>`, masks as
 * compressed RLE, category ids 1..K, bbox as [x, y, w, h]. Returns the paths written.
 * Feeding this folder to the COCO reader must give the same samples as the synthetic source.
 */
export async function writeSyntheticCoco(root: string, size: SyntheticSize, seed: number, options: { format?: ImageFormat; limitPerSplit?: number } = {}): Promise<{ annotations: string; images: string }> {
  const spec = SYNTHETIC_SPECS[size];
  const format = options.format ?? 'png';
  const annotationsDir = join(root, 'annotations');
  const imagesDir = join(root, 'images');
  await mkdir(annotationsDir, { recursive: true });
  for (const split of SYNTHETIC_SPLITS) {
    await mkdir(join(imagesDir, split), { recursive: true });
    const images: unknown[] = [];
    const annotations: unknown[] = [];
    const count = Math.min(spec.images[split], options.limitPerSplit ?? Infinity);
    for (let index = 0; index < count; index++) {
      const img = generateSyntheticImage(spec, seed, split, index);
      const fileName = `${split}/${img.key}.${format}`;
      await writeFile(join(imagesDir, fileName), await encodeImage(img.image, format));
      const imageId = index + 1;
      images.push({ id: imageId, file_name: fileName, width: img.image.width, height: img.image.height });
      for (const o of img.objects) {
        const [x0, y0, x1, y1] = o.bbox;
        annotations.push({
          id: annotations.length + 1,
          image_id: imageId,
          category_id: o.label + 1,
          bbox: [x0, y0, x1 - x0, y1 - y0],
          area: o.area,
          iscrowd: 0,
          segmentation: encodeRle(o.mask, img.image.height, img.image.width),
          occlusion: Math.round(o.occlusion * 1e4) / 1e4,
        });
      }
    }
    const doc = {
      info: { description: `shapes-clutter ${size}, seed ${seed}, split ${split} (densepipe synthetic benchmark)` },
      images,
      annotations,
      categories: SYNTHETIC_CLASS_NAMES.map((name, i) => ({ id: i + 1, name, supercategory: 'shape' })),
    };
    await writeFile(join(annotationsDir, `instances_${split}.json`), JSON.stringify(doc));
  }
  return { annotations: annotationsDir, images: imagesDir };
}
