import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { assertDirectory, readLocalFile } from './files.js';
import { keyFromPath, type DatasetSource, type SourceItem } from './types.js';

const IMAGE_EXT = /\.(png|jpe?g|webp)$/i;
const KNOWN_SPLITS = new Set(['train', 'val', 'test']);

const subdirs = (dir: string) => readdirSync(dir).filter((d) => statSync(join(dir, d)).isDirectory()).sort();

/**
 * torchvision ImageFolder layout: <root>/<class>/<image>, or <root>/<split>/<class>/<image> when
 * the top-level folders are all train/val/test. Classes are the sorted folder names (as torchvision
 * does), so labels agree across splits; images get an image-level label and no objects.
 */
export async function imageFolderSource(root: string): Promise<DatasetSource> {
  assertDirectory(root, 'source.root');
  const top = subdirs(root);
  const splitDirs = top.length > 0 && top.every((d) => KNOWN_SPLITS.has(d)) ? top.map((s) => [s, join(root, s)] as const) : [['train', root] as const];
  const classes = [...new Set(splitDirs.flatMap(([, dir]) => subdirs(dir)))].sort();
  const labelOf = new Map(classes.map((c, i) => [c, i]));
  const splits: Record<string, SourceItem[]> = {};
  for (const [split, dir] of splitDirs) {
    const items: SourceItem[] = [];
    for (const cls of subdirs(dir)) {
      for (const f of readdirSync(join(dir, cls)).filter((f) => IMAGE_EXT.test(f)).sort()) {
        const path = join(dir, cls, f);
        items.push({
          // The class folder is part of the key: the same file name may appear under two classes.
          key: keyFromPath(`${cls}/${f}`),
          origin: path,
          async load() {
            return { encoded: await readLocalFile(path, 'image'), objects: [], imageLabel: labelOf.get(cls)! };
          },
        });
      }
    }
    splits[split] = items;
  }
  return { description: `ImageFolder ${root}`, classes, splits, listingProblems: [] };
}
