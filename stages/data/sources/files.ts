import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { createHash } from 'node:crypto';
import { BadInputError, throwIfAborted } from '../../../core/errors.js';

/**
 * A path that an annotation names (COCO `file_name`, VOC `<filename>`), checked before anything
 * touches the filesystem: it must stay inside the dataset folder. Absolute paths, '..' parts, NUL
 * and empty names are refused, so no file outside the root is ever read, and no error message can
 * tell whether such a file exists. `where` names the annotation file and member.
 */
export function assertRelativeMember(rel: string, where: string, rootLabel: string): void {
  const parts = rel.split(/[\\/]/);
  if (rel.trim() === '' || rel.includes('\0')) throw new BadInputError(`${JSON.stringify(rel)} is not a file name`, where);
  if (isAbsolute(rel) || /^[A-Za-z]:/.test(rel) || rel.startsWith('\\') || parts.includes('..')) {
    throw new BadInputError(`${JSON.stringify(rel.slice(0, 200))} leaves the dataset folder ${rootLabel} (absolute paths and '..' parts are refused)`, where);
  }
}

/** Whether `path` is `root` or inside it (both already resolved). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Where a symbolic link at `path` leads when that is outside `rootReal`, judged without touching
 * the target when it cannot be resolved (so a missing target outside the root reads the same as a
 * present one). Null when the path resolves inside the root.
 */
async function escapeOf(rootReal: string, path: string): Promise<string | null> {
  try {
    const real = await realpath(path);
    return isInside(rootReal, real) ? null : real;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ELOOP') throw err;
    // Unresolvable: judge the first link lexically.
    try {
      if ((await lstat(path)).isSymbolicLink()) {
        const target = resolve(dirname(path), await readlink(path));
        if (!isInside(rootReal, target)) return target;
        if (code === 'ELOOP') throw new BadInputError('symbolic link loop', path);
      }
    } catch (inner) {
      if (inner instanceof BadInputError) throw inner;
      /* the path itself is missing: the read will say so */
    }
    return null;
  }
}

/** The dataset folder with every link resolved (itself when it does not exist: the read will say so). */
function rootReal(root: string): Promise<string> {
  const abs = resolve(root);
  return realpath(abs).catch(() => abs);
}

/**
 * Read a local file, turning "not found" into a BadInputError that names the path. With `root`,
 * the file must resolve inside it: a symbolic link that leads out of the dataset folder is refused.
 */
export async function readLocalFile(path: string, what = 'file', root?: string): Promise<Uint8Array> {
  if (root !== undefined) {
    const outside = await escapeOf(await rootReal(root), resolve(path));
    if (outside !== null) throw new BadInputError(`${what} is a symbolic link that leads outside the dataset folder ${root}; copy the file in, or point the source at the folder that holds it`, path);
  }
  try {
    return await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BadInputError(`${what} not found`, path);
    if (code === 'EISDIR') throw new BadInputError(`${what} is a directory`, path);
    if (code === 'EACCES' || code === 'EPERM') throw new BadInputError(`${what} is not readable (${code})`, path);
    throw err;
  }
}

/**
 * Every file under `root` ('/'-separated, relative, sorted), without blocking the event loop.
 * Symbolic links are followed when they resolve inside `root` (a linked image is part of the
 * dataset and of its fingerprint); a link that leads outside, or nowhere, is bad input naming it.
 * `skipDir` leaves folders out by name (e.g. `__MACOSX`).
 */
export async function listFilesRecursive(root: string, options: { signal?: AbortSignal; skipDir?: (name: string) => boolean } = {}): Promise<string[]> {
  const top = resolve(root);
  const real = await rootReal(top);
  const out: string[] = [];
  const visited = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    throwIfAborted(options.signal);
    const here = await realpath(dir);
    if (visited.has(here)) return; // a linked folder seen before (links inside the root may form a cycle)
    visited.add(here);
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const outside = await escapeOf(real, full);
        if (outside !== null) throw new BadInputError(`symbolic link leads outside the dataset folder ${root}; copy the files in, or point the source at the folder that holds them`, full);
        let st;
        try {
          st = await stat(full);
        } catch {
          throw new BadInputError('broken symbolic link (its target does not exist)', full);
        }
        isDir = st.isDirectory();
        isFile = st.isFile();
      }
      if (isDir && !options.skipDir?.(e.name)) await walk(full);
      else if (isFile) out.push(relative(top, full).split(sep).join('/'));
    }
  };
  await walk(top);
  return out.sort();
}

// Content hashes keyed by (path, size, mtime): re-hashing is skipped for unchanged files within
// one process, while any edit (new size or mtime) is re-read and changes the fingerprint.
const contentHashCache = new Map<string, string>();

async function hashFile(full: string, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  const stream = createReadStream(full, { highWaterMark: 1 << 20 });
  try {
    for await (const chunk of stream) {
      throwIfAborted(signal);
      h.update(chunk as Buffer);
    }
  } finally {
    stream.destroy();
  }
  return h.digest('hex');
}

/**
 * A content fingerprint of local files: sha256 over every (relative path, sha256 of bytes). Files
 * are read streamed, one 1 MiB chunk at a time, so the event loop (heartbeats, cancellation) keeps
 * running; `signal` stops it between chunks. A symbolic link is hashed by its target's bytes.
 */
export async function fingerprintPaths(paths: readonly { root: string; file: string }[], signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  for (const { root, file } of paths) {
    throwIfAborted(signal);
    const full = join(root, file);
    let st;
    try {
      st = await stat(full);
    } catch {
      throw new BadInputError('file not found', full);
    }
    const cacheKey = `${full}\0${st.size}\0${st.mtimeMs}\0${st.ino}`;
    let fileHash = contentHashCache.get(cacheKey);
    if (!fileHash) {
      fileHash = await hashFile(full, signal);
      contentHashCache.set(cacheKey, fileHash);
    }
    h.update(`${file}\0${fileHash}\n`);
  }
  return h.digest('hex');
}

export async function assertDirectory(path: string, field: string): Promise<void> {
  let ok = false;
  try {
    ok = (await stat(path)).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new BadInputError(`directory ${JSON.stringify(path)} does not exist`, field);
}
