import type { Readable } from 'node:stream';
import { BadInputError } from '../errors.js';

/** What a write returns: enough to verify the bytes later and to show them to a user. */
export interface PutResult {
  key: string;
  size: number;
  sha256: string;
}

/**
 * The one interface every stage reads and writes artifacts through. Keys are relative to the
 * store's root (an S3 bucket plus prefix, or a local folder) and always use '/'.
 * Implementations: S3ArtifactStore (any S3-compatible endpoint) and FileArtifactStore (file://).
 */
export interface ArtifactStore {
  /** The root as a URI: `s3://bucket/prefix` or `file:///abs/path`. */
  readonly uri: string;
  put(key: string, body: Uint8Array | string, options?: { contentType?: string }): Promise<PutResult>;
  /** Upload a local file, streaming (multipart on S3 for large files). */
  putFile(key: string, path: string, options?: { contentType?: string }): Promise<PutResult>;
  /** Throws ArtifactNotFoundError when absent. */
  get(key: string): Promise<Uint8Array>;
  getStream(key: string): Promise<Readable>;
  exists(key: string): Promise<boolean>;
  /** All keys under a prefix, sorted. */
  list(prefix: string): Promise<string[]>;
  delete(key: string): Promise<void>;
  /** The full URI of a key, for people and for other tools. */
  url(key: string): string;
  /** Check the store answers and its bucket or folder exists (creating it when allowed). */
  ensureReady(options?: { create?: boolean }): Promise<void>;
}

export class ArtifactNotFoundError extends Error {
  override readonly name = 'ArtifactNotFoundError';
  constructor(readonly url: string) {
    super(`artifact not found: ${url}`);
  }
}

export class StoreUnreachableError extends Error {
  override readonly name = 'StoreUnreachableError';
}

export function joinKey(...parts: string[]): string {
  return parts
    .filter((p) => p.length > 0)
    .map((p) => p.replace(/^\/+|\/+$/g, ''))
    .filter((p) => p.length > 0)
    .join('/');
}

/** A key that could name something outside the store's root, or nothing: bad input, never retried. */
export function assertSafeKey(key: string): void {
  if (key.length === 0 || key.length > 1024 || key.startsWith('/') || key.includes('\\') || /[\u0000-\u001f]/.test(key) || key.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new BadInputError(
      `invalid artifact key ${JSON.stringify(key.slice(0, 200))}: keys are relative, '/'-separated, at most 1024 characters, without '.' or '..' parts, backslashes or control characters`,
      'store key',
    );
  }
}
