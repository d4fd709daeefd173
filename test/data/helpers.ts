import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { localContext, runStage, type StageContext } from '../../core/stage.js';
import { FileArtifactStore, type ArtifactStore } from '../../core/store/index.js';
import { shardStage, type ShardConfig } from '../../stages/data/index.js';

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

/**
 * For a test file's top level: temporary folders removed after each test, and a shard run of a source into a
 * fresh store (8 samples per shard unless the config says otherwise).
 */
export function tempWorkspace() {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });
  const dir = async (label: string) => {
    const t = await tempDir(label);
    cleanups.push(t.cleanup);
    return t.dir;
  };
  const shard = async (config: Partial<ShardConfig> & Pick<ShardConfig, 'source'>) => {
    const store = new FileArtifactStore(await dir('store'));
    const { ref } = await runStage(shardStage, quietContext(store), {}, { shardSamples: 8, ...config } as ShardConfig);
    return { store, result: ref.result };
  };
  return { dir, shard };
}
