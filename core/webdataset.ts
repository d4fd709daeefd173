import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import type { ArtifactStore } from './store/index.js';
import { BadInputError } from './errors.js';

/** One WebDataset sample: the members of a tar that share a key (`<key>.<ext>`). */
export interface WdsSample {
  key: string;
  /** Extension (lower-cased, everything after the first dot of the basename) to bytes. */
  files: Record<string, Uint8Array>;
}

/** WebDataset's key rule: the key is the path up to the first dot of the basename. */
export function splitMemberName(name: string): { key: string; ext: string } | null {
  const slash = name.lastIndexOf('/');
  const dot = name.indexOf('.', slash + 1);
  if (dot <= slash + 1 || dot === name.length - 1) return null;
  return { key: name.slice(0, dot), ext: name.slice(dot + 1).toLowerCase() };
}

/**
 * A key a writer may use. Besides the character rule, no path segment may begin with `__`:
 * WebDataset readers (this one included) treat such members as metadata and skip them, so a sample
 * written under one would vanish on read.
 */
export function assertValidSampleKey(key: string, where = 'WebDataset key'): void {
  if (!/^[A-Za-z0-9_\-/]+$/.test(key) || key.startsWith('/') || key.split('/').includes('..')) {
    throw new BadInputError(`invalid WebDataset key ${JSON.stringify(key.slice(0, 200))}: use letters, digits, '_', '-' and '/' (no dots, no absolute or '..' paths)`, where);
  }
  if (key.split('/').some((part) => part.startsWith('__'))) {
    throw new BadInputError(`WebDataset key ${JSON.stringify(key)} has a part beginning with '__', which readers treat as metadata and skip; rename the file`, where);
  }
}

/**
 * Pack samples into one tar in memory, members in sorted extension order per sample, with a
 * fixed mtime and mode so the same samples always give the same bytes (and the same sha256).
 */
export async function packShard(samples: WdsSample[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (c: unknown) => chunks.push(c as Buffer));
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  const seen = new Set<string>();
  for (const sample of samples) {
    assertValidSampleKey(sample.key);
    if (seen.has(sample.key)) throw new BadInputError(`duplicate WebDataset key ${sample.key} in one shard`, 'WebDataset key');
    seen.add(sample.key);
    for (const ext of Object.keys(sample.files).sort()) {
      const body = Buffer.from(sample.files[ext]!);
      await new Promise<void>((resolve, reject) =>
        pack.entry({ name: `${sample.key}.${ext}`, size: body.length, mode: 0o444, mtime: new Date(0), uname: 'densepipe', gname: 'densepipe' }, body, (err) =>
          err ? reject(err) : resolve(),
        ),
      );
    }
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/**
 * Stream the samples of a tar. Members must be contiguous per key (WebDataset's rule); a
 * member with an absolute or '..' path, or a repeated extension within a key, is an error. Every
 * error about the tar's own bytes is a BadInputError naming `label` (the shard's URL): a retry reads
 * the same bytes. An error of the input stream (a dropped connection) is passed on unchanged, so it
 * stays retryable.
 */
export async function* readShard(source: Readable | Uint8Array, label = 'shard'): AsyncGenerator<WdsSample> {
  const extract = tarStream.extract();
  const input = source instanceof Readable ? source : Readable.from([Buffer.from(source)]);
  let inputError: unknown = null;
  input.on('error', (err) => {
    inputError = err;
    extract.destroy(err);
  });
  input.pipe(extract);
  let current: WdsSample | null = null;
  let member = '(before the first member)';
  const finished = new Set<string>();
  try {
    for await (const entry of extract) {
      const name = entry.header.name;
      member = name;
      if (entry.header.type !== 'file') {
        entry.resume();
        continue;
      }
      if (name.startsWith('/') || name.split('/').includes('..')) {
        throw new BadInputError(`tar member ${JSON.stringify(name)} has an absolute or '..' path`, label);
      }
      const parts = splitMemberName(name);
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      if (!parts || parts.key.split('/').pop()!.startsWith('__')) continue;
      if (current && current.key !== parts.key) {
        yield current;
        current = null;
      }
      if (!current && finished.has(parts.key)) {
        throw new BadInputError(`member ${name} returns to key ${parts.key} after other keys: a sample's members must be contiguous, or it would be read as two samples`, label);
      }
      if (!current) finished.add(parts.key);
      current ??= { key: parts.key, files: {} };
      if (parts.ext in current.files) throw new BadInputError(`duplicate member ${name} (key ${parts.key} already has .${parts.ext})`, label);
      current.files[parts.ext] = Buffer.concat(chunks);
    }
  } catch (err) {
    if (err instanceof BadInputError || (inputError !== null && err === inputError)) throw err;
    throw new BadInputError(`malformed tar near member ${JSON.stringify(member)}: ${(err as Error).message}`, label);
  }
  if (current) yield current;
}

export async function* readShardFromStore(store: ArtifactStore, key: string): AsyncGenerator<WdsSample> {
  yield* readShard(await store.getStream(key), store.url(key));
}
