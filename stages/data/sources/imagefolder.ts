import { BadInputError } from '../../../core/errors.js';
import type { SourceFs } from './fs.js';
import { sampleKeyFromPath, type DatasetSource, type SourceItem } from './types.js';

const IMAGE_EXT = /\.(png|jpe?g|webp)$/i;
const KNOWN_SPLITS = new Set(['train', 'val', 'test']);
/** What macOS adds when it zips a folder: resource-fork folders, and AppleDouble `._name` files beside each file. */
const MACOS_METADATA_DIR = '__MACOSX';
const isAppleDouble = (name: string) => name.startsWith('._');

/**
 * torchvision ImageFolder layout: <root>/<class>/<image>, or <root>/<split>/<class>/<image> when
 * the top-level folders are all train/val/test. Classes are the sorted folder names (as torchvision
 * does), so labels agree across splits; images get an image-level label and no objects.
 * `__MACOSX/` folders and AppleDouble `._*` files are macOS archive metadata, not images: they are
 * left out (they would otherwise become a phantom class, and keys beginning with `__` are skipped by
 * every WebDataset reader). Any other name whose key would begin with `__` is an error.
 */
export async function imageFolderSource(fs: SourceFs, root: string): Promise<DatasetSource> {
  if ((await fs.kind(root)) !== 'dir') throw new BadInputError(`directory ${JSON.stringify(fs.label(root))} does not exist`, 'source.root');
  const files = (await fs.listRecursive(root, (dir) => dir === MACOS_METADATA_DIR)).map((f) => f.split('/')).filter((p) => !isAppleDouble(p[p.length - 1]!));
  const topDirs = [...new Set(files.filter((p) => p.length > 1).map((p) => p[0]!))];
  const splitLayout = topDirs.length > 0 && topDirs.every((d) => KNOWN_SPLITS.has(d));
  // (split, class, file name) for every image; files at other depths are not part of the layout.
  const images = files
    .filter((p) => p.length === (splitLayout ? 3 : 2) && IMAGE_EXT.test(p[p.length - 1]!))
    .map((p) => (splitLayout ? { split: p[0]!, cls: p[1]!, name: p[2]! } : { split: 'train', cls: p[0]!, name: p[1]! }));
  const classes = [...new Set(images.map((i) => i.cls))].sort();
  const labelOf = new Map(classes.map((c, i) => [c, i]));
  const splits: Record<string, SourceItem[]> = {};
  for (const { split, cls, name } of images) {
    const path = splitLayout ? fs.join(root, split, cls, name) : fs.join(root, cls, name);
    (splits[split] ??= []).push({
      // The class folder is part of the key: the same file name may appear under two classes.
      key: sampleKeyFromPath(`${cls}/${name}`, fs.label(path)),
      origin: fs.label(path),
      async load() {
        return { encoded: await fs.read(path, 'image', root), objects: [], imageLabel: labelOf.get(cls)! };
      },
    });
  }
  return { description: `ImageFolder ${fs.label(root)}`, classes, splits, listingProblems: [] };
}
