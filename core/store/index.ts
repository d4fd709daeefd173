import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { FileArtifactStore } from './file.js';
import { S3ArtifactStore } from './s3.js';
import type { ArtifactStore } from './types.js';
import { BadInputError } from '../errors.js';

export * from './types.js';
export { FileArtifactStore } from './file.js';
export { S3ArtifactStore } from './s3.js';

export interface StoreSpec {
  /** `s3://bucket/prefix`, `file:///abs/path`, or a plain local path. */
  uri: string;
  /** For s3:// URIs: an S3-compatible endpoint; falls back to DENSEPIPE_S3_ENDPOINT, then AWS. */
  endpoint?: string;
  region?: string;
  createBucket?: boolean;
}

/** Open a store from its URI. Workers and the CLI call this with the same spec, so both see the same bytes. */
export function openStore(spec: StoreSpec | string): ArtifactStore {
  const s: StoreSpec = typeof spec === 'string' ? { uri: spec } : spec;
  if (s.uri.startsWith('s3://')) {
    const rest = s.uri.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    const prefix = slash < 0 ? '' : rest.slice(slash + 1);
    if (!bucket) throw new BadInputError(`store URI ${s.uri} names no bucket (expected s3://bucket/prefix)`, 'store.uri');
    return new S3ArtifactStore({
      bucket,
      prefix,
      endpoint: s.endpoint ?? process.env.DENSEPIPE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL,
      region: s.region,
    });
  }
  if (s.uri.startsWith('file://')) return new FileArtifactStore(fileURLToPath(s.uri));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s.uri)) throw new BadInputError(`unsupported store URI scheme in ${s.uri} (use s3:// or file://)`, 'store.uri');
  return new FileArtifactStore(resolve(s.uri));
}

export async function getJson<T>(store: ArtifactStore, key: string): Promise<T> {
  const bytes = await store.get(key);
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as T;
  } catch (err) {
    // The bytes are what they are: a retry reads the same corrupt object.
    throw new BadInputError(`not valid JSON: ${(err as Error).message}`, store.url(key));
  }
}

export async function putJson(store: ArtifactStore, key: string, value: unknown): Promise<void> {
  await store.put(key, JSON.stringify(value, null, 2), { contentType: 'application/json' });
}
