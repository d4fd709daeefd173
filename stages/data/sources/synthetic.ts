import { encodeRle } from '../masks.js';
import type { SampleObject } from '../sample.js';
import { generateSyntheticImage, SYNTHETIC_CLASS_NAMES, SYNTHETIC_SPECS, SYNTHETIC_SPLITS, type SyntheticImage, type SyntheticSize } from '../synthetic.js';
import type { DatasetSource, SourceItem } from './types.js';

export function syntheticObjects(img: SyntheticImage): SampleObject[] {
  const { width, height } = img.image;
  return img.objects.map((o) => ({
    label: o.label,
    bbox: o.bbox,
    area: o.area,
    mask: encodeRle(o.mask, height, width) as { size: [number, number]; counts: string },
    occlusion: Math.round(o.occlusion * 1e4) / 1e4,
  }));
}

/** The built-in benchmark as a source: items render on demand, so nothing is held in memory. */
export function syntheticSource(size: SyntheticSize, seed: number): DatasetSource {
  const spec = SYNTHETIC_SPECS[size];
  const splits: Record<string, SourceItem[]> = {};
  for (const split of SYNTHETIC_SPLITS) {
    splits[split] = Array.from({ length: spec.images[split] }, (_, index) => ({
      key: `${split}_${String(index).padStart(6, '0')}`,
      origin: `synthetic:${size}:${seed}:${split}:${index}`,
      async load() {
        const img = generateSyntheticImage(spec, seed, split, index);
        return { pixels: img.image, objects: syntheticObjects(img) };
      },
    }));
  }
  return {
    description: `shapes-clutter ${size} (seed ${seed}, ${spec.imageSize}x${spec.imageSize})`,
    classes: [...SYNTHETIC_CLASS_NAMES],
    splits,
    listingProblems: [],
  };
}
