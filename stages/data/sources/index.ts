import type { SourceConfig } from '../config.js';
import { cocoAnnotationFiles, cocoSource } from './coco.js';
import { assertDirectory, fingerprintPaths, listFilesRecursive } from './files.js';
import { imageFolderSource } from './imagefolder.js';
import { syntheticSource } from './synthetic.js';
import { vocSource } from './voc.js';
import type { DatasetSource } from './types.js';

export * from './types.js';
export { syntheticSource, syntheticObjects } from './synthetic.js';
export { cocoSource } from './coco.js';
export { vocSource, parseVocXml } from './voc.js';
export { imageFolderSource } from './imagefolder.js';

export async function openSource(source: SourceConfig, skipBad: boolean): Promise<DatasetSource> {
  switch (source.kind) {
    case 'synthetic':
      return syntheticSource(source.size, source.seed);
    case 'coco':
      return cocoSource(source.annotations, source.images, skipBad);
    case 'voc':
      return vocSource(source.root, skipBad);
    case 'imagefolder':
      return imageFolderSource(source.root);
  }
}

/**
 * A content fingerprint of every local file a source may read, so editing an image or an
 * annotation gives the stage a new cache key. Synthetic sources are fully described by
 * their config and need none.
 */
export function sourceFingerprint(source: SourceConfig): string | null {
  switch (source.kind) {
    case 'synthetic':
      return null;
    case 'coco': {
      const annotationFiles = cocoAnnotationFiles(source.annotations).map((file) => ({ root: '', file }));
      assertDirectory(source.images, 'source.images');
      const images = listFilesRecursive(source.images).map((file) => ({ root: source.images, file }));
      return fingerprintPaths([...annotationFiles, ...images]);
    }
    case 'voc':
    case 'imagefolder':
      assertDirectory(source.root, 'source.root');
      return fingerprintPaths(listFilesRecursive(source.root).map((file) => ({ root: source.root, file })));
  }
}

