import { createReadStream } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile, copyFile } from 'node:fs/promises';
import { dirname, join, resolve, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { BadInputError } from '../errors.js';
import { ArtifactNotFoundError, assertSafeKey, type ArtifactStore, type PutResult } from './types.js';

/**
 * A folder laid out exactly like the S3 layout. Writes go to a temporary name first and are
 * renamed into place, so a reader never sees half an object (rename is atomic on one filesystem).
 */
export class FileArtifactStore implements ArtifactStore {
  readonly root: string;
  readonly uri: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.uri = pathToFileURL(this.root).href;
  }

  private path(key: string): string {
    assertSafeKey(key);
    return join(this.root, ...key.split('/'));
  }

  url(key: string): string {
    return `${this.uri}/${key}`;
  }

  async ensureReady(options: { create?: boolean } = {}): Promise<void> {
    try {
      await stat(this.root);
    } catch {
      if (options.create === false) throw new BadInputError(`store folder ${this.uri} does not exist, and creating it is not allowed`, 'store.createBucket: false');
      await mkdir(this.root, { recursive: true });
    }
  }

  async put(key: string, body: Uint8Array | string, _options?: { contentType?: string }): Promise<PutResult> {
    const target = this.path(key);
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    await mkdir(dirname(target), { recursive: true });
    const tmp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
    await writeFile(tmp, bytes);
    await rename(tmp, target);
    return { key, size: bytes.byteLength, sha256: createHash('sha256').update(bytes).digest('hex') };
  }

  async putFile(key: string, path: string): Promise<PutResult> {
    const target = this.path(key);
    await mkdir(dirname(target), { recursive: true });
    const tmp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
    await copyFile(path, tmp);
    await rename(tmp, target);
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of createReadStream(target)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { key, size, sha256: hash.digest('hex') };
  }

  async get(key: string): Promise<Uint8Array> {
    try {
      return await readFile(this.path(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ArtifactNotFoundError(this.url(key));
      throw err;
    }
  }

  async getStream(key: string): Promise<Readable> {
    if (!(await this.exists(key))) throw new ArtifactNotFoundError(this.url(key));
    return createReadStream(this.path(key));
  }

  async exists(key: string): Promise<boolean> {
    try {
      return (await stat(this.path(key))).isFile();
    } catch {
      return false;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const base = prefix ? this.path(prefix.replace(/\/+$/, '')) : this.root;
    const out: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const full = join(dir, e.name);
        if (e.isDirectory()) await walk(full);
        else if (e.isFile() && !e.name.includes('.tmp-')) out.push(relative(this.root, full).split(sep).join('/'));
      }
    };
    await walk(base);
    return out.sort();
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }
}
