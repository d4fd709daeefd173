import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';

const workflowsPath = fileURLToPath(new URL('../../workflows/index.ts', import.meta.url));
const dir = fileURLToPath(new URL('../fixtures/histories/', import.meta.url));

/**
 * Recorded histories (test/fixtures/histories, written by the workflow tests with
 * DENSEPIPE_RECORD_HISTORIES=1) must replay against today's workflow code: a change that would
 * break running workflows fails here. Such a change needs `patched()` or a new workflow type.
 */
describe('workflow determinism', () => {
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

  it('has recorded histories to replay', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  it.each(files)('replays %s', async (file) => {
    Runtime.install({ logger: new DefaultLogger('WARN') });
    // The SDK accepts the JSON form (as `temporal workflow show --output json` writes it) directly.
    const history: unknown = JSON.parse(readFileSync(`${dir}${file}`, 'utf8'));
    // Files are named <label>--<workflow id>.json: the id matters, child workflow ids derive from it.
    const workflowId = file.replace(/\.json$/, '').split('--')[1] ?? file;
    await expect(Worker.runReplayHistory({ workflowsPath }, history, workflowId)).resolves.toBeUndefined();
  });
});
