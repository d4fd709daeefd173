/**
 * The malformed-input corpus of issue 17 (test/fixtures/malformed/corpus.ts): for every case, a
 * clear error naming the file and the field or member, marked non-retryable, and nothing written
 * that a later run could take for a finished output; or a documented acceptance whose labels are
 * checked. Never a crash (an error that is not bad input), a hang (each case has a deadline), a
 * read outside the dataset root (no object written holds the bytes of the file placed outside),
 * or a credential repeated in a message.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { toFailure } from '../../activities/context.js';
import { BadInputError } from '../../core/errors.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { CLASSES, CORPUS, corpusTotals, type CaseContext } from '../fixtures/malformed/corpus.js';
import { solidImage, writeFiles } from '../fixtures/malformed/build.js';

const CASE_DEADLINE_MS = 20_000;
const base = await mkdtemp(join(tmpdir(), 'densepipe-malformed-'));
afterAll(() => rm(base, { recursive: true, force: true }));

async function context(id: string): Promise<CaseContext> {
  const dir = join(base, id.replace(/\//g, '--'));
  await writeFiles(dir, { 'outside/secret.png': await solidImage(8, 8, 'png', { r: 1, g: 2, b: 3 }) });
  return { dir, store: new FileArtifactStore(join(dir, 'store')), secret: await readFile(join(dir, 'outside', 'secret.png')) };
}

async function withDeadline<T>(p: Promise<T>, id: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`HANG: case ${id} did not finish within ${CASE_DEADLINE_MS / 1000} s`)), CASE_DEADLINE_MS);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Stage outputs and checkpoints: what a later run could reuse, and where an outside file could end up. */
async function written(ctx: CaseContext): Promise<string[]> {
  const keys = await ctx.store.list('').catch(() => [] as string[]);
  return keys.filter((k) => k.startsWith('stages/') || k.startsWith('checkpoints/'));
}

describe('malformed-input corpus (issue 17)', () => {
  it('has at least 100 cases over every class, with unique ids', () => {
    expect(CORPUS.length).toBeGreaterThanOrEqual(100);
    expect(new Set(CORPUS.map((c) => c.id)).size).toBe(CORPUS.length);
    const totals = corpusTotals();
    for (const cls of CLASSES) expect(totals[cls].errors + totals[cls].acceptances, cls).toBeGreaterThan(0);
  });

  it.each(CORPUS.map((c) => [c.id, c] as const))('%s', async (id, c) => {
    const ctx = await context(id);
    const outcome = await withDeadline(
      c.run(ctx).then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error }),
      ),
      id,
    );
    if (c.expect.kind === 'error') {
      expect(outcome.ok, `${id}: expected an error, the input was accepted`).toBe(false);
      const error = (outcome as { error: unknown }).error;
      // Bad input, not a crash: a BadInputError (or subclass), which activities fail without retrying.
      expect(error, `${id}: ${String(error)}`).toBeInstanceOf(BadInputError);
      const failure = toFailure(error);
      expect(failure).toBeInstanceOf(ApplicationFailure);
      expect((failure as ApplicationFailure).nonRetryable).toBe(true);
      const message = (error as Error).message;
      for (const name of c.expect.names(ctx)) {
        if (typeof name === 'string') expect(message, `${id} must name ${name}`).toContain(name);
        else expect(message, `${id} must match ${name}`).toMatch(name);
      }
      for (const secret of c.expect.secrets ?? []) expect(message).not.toContain(secret);
      // Nothing a later run could take for a finished output.
      const keys = await written(ctx);
      expect(keys.filter((k) => k.endsWith('/manifest.json') || k.endsWith('/dataset.json'))).toEqual([]);
    } else {
      if (!outcome.ok) throw new Error(`${id}: expected a documented acceptance (${c.expect.why}), got ${String((outcome as { error: unknown }).error)}`);
      await c.expect.check(outcome.value, ctx);
    }
    // Never a read outside the root: no object written holds the outside file's bytes.
    for (const key of await written(ctx)) expect(Buffer.from(await ctx.store.get(key)).includes(ctx.secret), `${key} holds bytes of outside/secret.png`).toBe(false);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
