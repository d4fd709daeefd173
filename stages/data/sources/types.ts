import { BadInputError } from '../../../core/errors.js';
import type { RgbU8 } from '../image.js';
import type { SampleObject } from '../sample.js';

/** What one source item yields once loaded: pixels (or encoded bytes) plus its annotation. */
export interface LoadedItem {
  /** The file's own bytes when it is a PNG/JPEG (passed through unchanged if the format matches). */
  encoded?: Uint8Array;
  /** Already-decoded pixels (synthetic data); when absent, `encoded` is decoded to validate it. */
  pixels?: RgbU8;
  /** Width and height the annotation claims; checked against the decoded image. */
  declaredSize?: [number, number];
  /** Where the annotation claims it (file and member), for the error when the image disagrees. */
  declaredBy?: string;
  objects: SampleObject[];
  imageLabel?: number;
}

/** One image of a dataset, not yet read: the sharder loads items lazily, a few at a time. */
export interface SourceItem {
  /** WebDataset key: letters, digits, '_', '-' only (no dots). */
  key: string;
  /** Human-readable origin (file path or synthetic id) for error messages and skip reports. */
  origin: string;
  load(): Promise<LoadedItem>;
}

export interface DatasetSource {
  description: string;
  classes: string[];
  /** Split name to items, in the source's own stable order (the sharder shuffles). */
  splits: Record<string, SourceItem[]>;
  /** Problems found while listing (bad annotation entries, duplicate keys) with skipBad on. */
  listingProblems: { split: string; origin: string; reason: string }[];
}

/** Turn a file path into a WebDataset key: path separators and dots become '_', other odd characters '-'. */
export function keyFromPath(path: string): string {
  const noExt = path.replace(/\.[^./\\]+$/, '');
  return noExt.replace(/[\\/.]/g, '_').replace(/[^A-Za-z0-9_-]/g, '-');
}

/**
 * keyFromPath for a sample, refusing what would write a sample no reader returns: an empty key, or
 * one beginning with '__' (WebDataset readers take such members for metadata and skip them, so the
 * sample would vanish from every later stage). `where` names the file and member it came from.
 */
export function sampleKeyFromPath(path: string, where: string): string {
  // './a.png' and 'a//b.png' name the same files as 'a.png' and 'a/b.png', so they get the same keys.
  const key = keyFromPath(path.split('/').filter((p) => p !== '' && p !== '.').join('/'));
  if (key === '') throw new BadInputError(`${JSON.stringify(path)} gives an empty sample key`, where);
  if (key.startsWith('__')) {
    throw new BadInputError(`${JSON.stringify(path)} gives the sample key ${key}, which begins with '__': WebDataset readers take such members for metadata and skip them; rename the file`, where);
  }
  return key;
}
