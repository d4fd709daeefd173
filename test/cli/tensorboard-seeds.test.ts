import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileArtifactStore } from '../../core/store/index.js';
import { syncTensorboard } from '../../cli/tensorboard.js';
import type { StageOutput } from '../../cli/history.js';

const dir = mkdtempSync(join(tmpdir(), 'tb-seeds-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('densepipe tensorboard on a repeated evaluation', () => {
  it('mirrors each seed\'s event files into its own sub-folder (a run of its own)', async () => {
    const store = new FileArtifactStore(join(dir, 'store'));
    // What stages/downstream/repeats.ts leaves under an evaluation with repeats: 2.
    await store.put('stages/evaluate/h/tensorboard/seed-0/events.out.tfevents.1.a', 'zero');
    await store.put('stages/evaluate/h/tensorboard/seed-1/events.out.tfevents.1.a', 'one');
    const output: StageOutput = { role: 'evaluate-baseline', label: 'evaluate (random init)', activity: 'evaluate', status: 'completed', stage: 'evaluate', hash: 'h', store: store.uri, uris: { tensorboard: store.url('stages/evaluate/h/tensorboard/') } };
    const synced = await syncTensorboard(store, [output], join(dir, 'logs'));
    expect(synced[0]!.files).toEqual(['seed-0/events.out.tfevents.1.a', 'seed-1/events.out.tfevents.1.a']);
    expect(readFileSync(join(dir, 'logs', 'evaluate-baseline', 'seed-1', 'events.out.tfevents.1.a'), 'utf8')).toBe('one');
    expect(existsSync(join(dir, 'logs', 'evaluate-baseline', 'seed-0', 'events.out.tfevents.1.a'))).toBe(true);
  });
});
