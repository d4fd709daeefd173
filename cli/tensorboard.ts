/**
 * `densepipe tensorboard RUN`: copy the run's TensorBoard event files from the store into one local
 * folder per role (pretrain/, pretrain-supervised/, evaluate/, evaluate-baseline/, ...), so a single
 * `tensorboard --logdir DIR` shows the pretraining and supervised curves side by side and the three
 * evaluations' metrics as three runs. While the run is going, the copy is refreshed every few seconds
 * (the stages upload their events every ~10 s), so TensorBoard follows it live.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import type { ArtifactStore } from '../core/store/index.js';
import { tensorboardPrefix } from '../core/tfevents.js';
import { stagePrefix } from '../core/stage.js';
import type { StageOutput } from './history.js';

export interface SyncedRun {
  /** Local folder name: the role, with the part for fanned-out steps. */
  name: string;
  source: string;
  files: string[];
}

/** Folder name of a stage output in the TensorBoard log dir. */
export function tensorboardRunName(o: Pick<StageOutput, 'role' | 'part'>): string {
  return `${o.role}${o.part ? `-${o.part.replace(/[^A-Za-z0-9._-]+/g, '_')}` : ''}`;
}

/**
 * Mirror every stage output's `tensorboard/` folder into `dir/<role>/`: new and grown files are
 * downloaded (a finished file of a rolled-over series is not fetched again), files the store no
 * longer has (an earlier attempt's, replaced on resume) are removed.
 */
export async function syncTensorboard(store: ArtifactStore, outputs: StageOutput[], dir: string): Promise<SyncedRun[]> {
  const synced: SyncedRun[] = [];
  for (const o of outputs) {
    if (!o.stage || !o.hash || !o.uris.tensorboard) continue;
    const prefix = tensorboardPrefix(stagePrefix(o.stage, o.hash));
    const keys = (await store.list(`${prefix}/`)).filter((k) => k.includes('tfevents'));
    if (keys.length === 0) continue;
    const name = tensorboardRunName(o);
    const local = join(dir, name);
    mkdirSync(local, { recursive: true });
    const names = keys.map((k) => k.slice(prefix.length + 1));
    for (const [i, key] of keys.entries()) {
      const path = join(local, names[i]!);
      // Only the newest file of a series still grows; older ones are complete once written.
      if (i < keys.length - 1 && existsSync(path) && statSync(path).size > 0) continue;
      // A repeated evaluation keeps each seed's events in a sub-folder (seed-<s>/), a run of its own.
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, await store.get(key));
    }
    for (const stale of readdirSync(local).filter((f) => f.includes('tfevents') && !names.includes(f))) rmSync(join(local, stale));
    synced.push({ name, source: store.url(`${prefix}/`), files: names });
  }
  return synced;
}

/** The `tensorboard` program on PATH, if any. */
export function findTensorboard(env: NodeJS.ProcessEnv = process.env): string | null {
  for (const d of (env.PATH ?? '').split(delimiter)) {
    const candidate = join(d, 'tensorboard');
    if (d && existsSync(candidate)) return candidate;
  }
  return null;
}
