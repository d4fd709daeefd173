import { BadInputError } from '../../../core/errors.js';
import type { ArtifactStore } from '../../../core/store/index.js';
import type { SourceConfig } from '../config.js';
import { cocoAnnotationFilesIn, cocoSource } from './coco.js';
import { assertDirectory, fingerprintPaths, listFilesRecursive } from './files.js';
import { isStorePath, localFs, storeFs, type SourceFs } from './fs.js';
import { imageFolderSource } from './imagefolder.js';
import { syntheticSource } from './synthetic.js';
import { vocSource } from './voc.js';
import type { DatasetSource } from './types.js';

export * from './types.js';
export { syntheticSource, syntheticObjects } from './synthetic.js';
export { cocoSource } from './coco.js';
export { vocSource, parseVocXml } from './voc.js';
export { imageFolderSource } from './imagefolder.js';
export { localFs, storeFs, isStorePath, STORE_PREFIX, type SourceFs } from './fs.js';

/** The paths a source config names, by field. */
function sourcePaths(source: SourceConfig): Record<string, string> {
  switch (source.kind) {
    case 'synthetic':
      return {};
    case 'coco':
      return { 'source.annotations': source.annotations, 'source.images': source.images };
    case 'voc':
    case 'imagefolder':
      return { 'source.root': source.root };
  }
}

/** Local folders, or the run's store for `store:` paths; one source may not mix the two. */
function fsFor(source: SourceConfig, store: ArtifactStore | undefined): SourceFs {
  const paths = Object.entries(sourcePaths(source));
  const inStore = paths.filter(([, p]) => isStorePath(p));
  if (inStore.length === 0) return localFs;
  if (inStore.length !== paths.length) throw new BadInputError('either every path of a source is a store: path or none is', paths.map(([f]) => f).join(', '));
  if (!store) throw new BadInputError('store: paths need the run\'s ArtifactStore', inStore[0]![0]);
  return storeFs(store);
}

export async function openSource(source: SourceConfig, skipBad: boolean, store?: ArtifactStore): Promise<DatasetSource> {
  const fs = fsFor(source, store);
  switch (source.kind) {
    case 'synthetic':
      return syntheticSource(source.size, source.seed);
    case 'coco':
      return cocoSource(fs, source.annotations, source.images, skipBad);
    case 'voc':
      return vocSource(fs, source.root, skipBad);
    case 'imagefolder':
      return imageFolderSource(fs, source.root);
  }
}

/**
 * A content fingerprint of every local file a source may read, so editing an image or an
 * annotation gives the stage a new cache key. Files are listed and read asynchronously (streamed,
 * yielding to the event loop between chunks), so a large dataset does not stop heartbeats or
 * cancellation; symbolic links inside the dataset folder count by their target's bytes. Synthetic
 * sources are fully described by their config. Sources in the store (`store:` paths) are keyed by
 * their key prefixes only (reading every object back would cost a download of the dataset), so a
 * dataset in the store must be treated as immutable (upload a new version under a new prefix).
 */
export async function sourceFingerprint(source: SourceConfig, signal?: AbortSignal): Promise<string | null> {
  if (Object.values(sourcePaths(source)).some(isStorePath)) return null;
  switch (source.kind) {
    case 'synthetic':
      return null;
    case 'coco': {
      const annotationFiles = (await cocoAnnotationFilesIn(localFs, source.annotations)).map((file) => ({ root: '', file }));
      await assertDirectory(source.images, 'source.images');
      const images = (await listFilesRecursive(source.images, { signal })).map((file) => ({ root: source.images, file }));
      return fingerprintPaths([...annotationFiles, ...images], signal);
    }
    case 'voc':
    case 'imagefolder': {
      await assertDirectory(source.root, 'source.root');
      const skipDir = source.kind === 'imagefolder' ? (name: string) => name === '__MACOSX' : undefined;
      return fingerprintPaths((await listFilesRecursive(source.root, { signal, skipDir })).map((file) => ({ root: source.root, file })), signal);
    }
  }
}
