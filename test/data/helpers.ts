import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localContext, type StageContext } from '../../core/stage.js';
import { FileArtifactStore, type ArtifactStore } from '../../core/store/index.js';

export async function tempDir(label: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `densepipe-data-${label}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A FileArtifactStore that counts puts per key, to prove reruns rewrite nothing. */
export class CountingStore extends FileArtifactStore {
  readonly puts: string[] = [];
  override async put(key: string, body: Uint8Array | string, options?: { contentType?: string }) {
    this.puts.push(key);
    return super.put(key, body, options);
  }
}

export function quietContext(store: ArtifactStore, signal?: AbortSignal, onProgress?: StageContext['progress']): StageContext {
  return localContext(store, { signal, onProgress });
}
