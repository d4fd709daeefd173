import { readdirSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { createHash } from 'node:crypto';
import { BadInputError } from '../../../core/errors.js';

/** Read a local file, turning "not found" into a BadInputError that names the path. */
export async function readLocalFile(path: string, what = 'file'): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BadInputError(`${what} not found`, path);
    if (code === 'EISDIR') throw new BadInputError(`${what} is a directory`, path);
    throw err;
  }
}

export function listFilesRecursive(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.isFile()) out.push(relative(root, full).split(sep).join('/'));
    }
  };
  walk(root);
  return out.sort();
}

// Content hashes keyed by (path, size, mtime): re-hashing is skipped for unchanged files within
// one process, while any edit (new size or mtime) is re-read and changes the fingerprint.
const contentHashCache = new Map<string, string>();

/**
 * A content fingerprint of local files: sha256 over every (relative path, sha256 of bytes).
 * Synchronous because Stage.keyConfig is; it reads every byte once per process.
 */
export function fingerprintPaths(paths: readonly { root: string; file: string }[]): string {
  const h = createHash('sha256');
  for (const { root, file } of paths) {
    const full = join(root, file);
    let st;
    try {
      st = statSync(full);
    } catch {
      throw new BadInputError('file not found', full);
    }
    const cacheKey = `${full}\0${st.size}\0${st.mtimeMs}`;
    let fileHash = contentHashCache.get(cacheKey);
    if (!fileHash) {
      fileHash = createHash('sha256').update(readFileSync(full)).digest('hex');
      contentHashCache.set(cacheKey, fileHash);
    }
    h.update(`${file}\0${fileHash}\n`);
  }
  return h.digest('hex');
}

export function assertDirectory(path: string, field: string): void {
  let ok = false;
  try {
    ok = statSync(path).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new BadInputError(`directory ${JSON.stringify(path)} does not exist`, field);
}
