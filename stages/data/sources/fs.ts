import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BadInputError } from '../../../core/errors.js';
import { ArtifactNotFoundError, joinKey, type ArtifactStore } from '../../../core/store/index.js';
import { assertRelativeMember, listFilesRecursive, readLocalFile } from './files.js';

/**
 * What a reader needs from where a dataset lives: a local folder, or a prefix in the run's
 * ArtifactStore (paths written `store:<key prefix>`). Paths are the reader's own strings; `label`
 * turns one into what error messages show (a local path, or the object's URL).
 */
export interface SourceFs {
  join(...parts: string[]): string;
  /**
   * `root` joined with `rel`, a name an annotation gave (`where` names the annotation file and member).
   * A name that would leave `root` (absolute, '..') is bad input, refused before anything is read.
   */
  member(root: string, rel: string, where: string): string;
  kind(path: string): Promise<'file' | 'dir' | 'missing'>;
  /**
   * Every file under `dir`, as paths relative to it ('/'-separated), sorted. Links are followed when
   * they stay inside `dir` and refused otherwise; folders named by `skipDir` are left out.
   */
  listRecursive(dir: string, skipDir?: (name: string) => boolean): Promise<string[]>;
  /** Immediate child names of `dir` (files and folders), sorted. */
  children(dir: string): Promise<string[]>;
  /** The bytes of `path`; with `root`, a path that resolves outside it (a symbolic link) is refused. */
  read(path: string, what: string, root?: string): Promise<Uint8Array>;
  label(path: string): string;
}

export const STORE_PREFIX = 'store:';
export const isStorePath = (path: string) => path.startsWith(STORE_PREFIX);

export const localFs: SourceFs = {
  join: (...parts) => join(...parts),
  member(root, rel, where) {
    assertRelativeMember(rel, where, root);
    return join(root, rel);
  },
  async kind(path) {
    try {
      return (await stat(path)).isDirectory() ? 'dir' : 'file';
    } catch {
      return 'missing';
    }
  },
  async listRecursive(dir, skipDir) {
    return listFilesRecursive(dir, { skipDir });
  },
  async children(dir) {
    return (await readdir(dir)).sort();
  },
  read: (path, what, root) => readLocalFile(path, what, root),
  label: (path) => path,
};

/** A dataset uploaded to the store: `store:datasets/coco/images` is every key under that prefix. */
export function storeFs(store: ArtifactStore): SourceFs {
  const key = (path: string) => joinKey(isStorePath(path) ? path.slice(STORE_PREFIX.length) : path);
  // One listing per prefix and run: readers ask about the same folders many times.
  const listings = new Map<string, Promise<string[]>>();
  const list = (dir: string) => {
    const prefix = key(dir);
    let p = listings.get(prefix);
    if (!p) {
      p = store.list(`${prefix}/`).then((keys) => keys.map((k) => k.slice(prefix.length + 1)).sort());
      listings.set(prefix, p);
    }
    return p;
  };
  const join = (...parts: string[]) => `${STORE_PREFIX}${joinKey(...parts.map((p) => (isStorePath(p) ? p.slice(STORE_PREFIX.length) : p)))}`;
  return {
    join,
    member(root, rel, where) {
      assertRelativeMember(rel, where, store.url(key(root)));
      if (rel.includes('\\') || /[\u0000-\u001f]/.test(rel)) throw new BadInputError(`${JSON.stringify(rel)} holds a backslash or control character, which store keys may not`, where);
      // Keys have no '.' parts and no empty parts: './a.png' and 'a//b.png' name 'a.png' and 'a/b.png'.
      return join(root, rel.split('/').filter((p) => p !== '' && p !== '.').join('/'));
    },
    async kind(path) {
      if (await store.exists(key(path))) return 'file';
      return (await list(path)).length > 0 ? 'dir' : 'missing';
    },
    async listRecursive(dir, skipDir) {
      const keys = await list(dir);
      return skipDir ? keys.filter((k) => !k.split('/').slice(0, -1).some(skipDir)) : keys;
    },
    async children(dir) {
      return [...new Set((await list(dir)).map((k) => k.split('/')[0]!))].sort();
    },
    async read(path, what) {
      try {
        return await store.get(key(path));
      } catch (err) {
        if (err instanceof ArtifactNotFoundError) throw new BadInputError(`${what} not found`, store.url(key(path)));
        throw err;
      }
    },
    label: (path) => store.url(key(path)),
  };
}
