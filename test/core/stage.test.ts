import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileArtifactStore } from '../../core/store/index.js';
import { checkpointIO, localContext, manifestKeyOf, runStage, stageHash, type Stage } from '../../core/stage.js';
import { canonicalJson, digest } from '../../core/hash.js';
import { Rng } from '../../core/rng.js';

function tempStore() {
  return new FileArtifactStore(mkdtempSync(join(tmpdir(), 'dp-stage-')));
}

/** A stage that counts its executions and can be told to fail after writing an object. */
function countingStage(calls: { n: number }, failAfterWrite = false): Stage<{ upstream?: unknown }, { a: number; b?: string; noise?: number }, { key: string }> {
  return {
    name: 'count',
    version: '1',
    keyConfig: ({ a, b }) => ({ a, b }), // `noise` does not matter to the output
    async run(ctx, _inputs, config) {
      calls.n += 1;
      const key = `${ctx.outputPrefix}/value.json`;
      await ctx.store.put(key, JSON.stringify(config.a * 2));
      if (failAfterWrite) throw new Error('boom after write');
      return { key };
    },
  };
}

describe('canonical hashing', () => {
  it('ignores key order and undefined fields, and refuses NaN', () => {
    expect(canonicalJson({ b: 1, a: { d: 2, c: 3 } })).toBe('{"a":{"c":3,"d":2},"b":1}');
    expect(digest({ x: 1, y: undefined })).toBe(digest({ x: 1 }));
    expect(() => digest({ x: NaN })).toThrow(/non-finite/);
  });
});

describe('runStage', () => {
  it('runs once, then reuses the output by content address', async () => {
    const store = tempStore();
    const calls = { n: 0 };
    const stage = countingStage(calls);
    const first = await runStage(stage, localContext(store), {}, { a: 2, b: 'x' });
    const second = await runStage(stage, localContext(store), {}, { b: 'x', a: 2, noise: 7 });
    expect(calls.n).toBe(1);
    expect(first.cached).toBe(false);
    expect(second.cached).toBe(true);
    expect(second.ref).toEqual(first.ref);
    expect(JSON.parse(Buffer.from(await store.get(first.ref.result.key)).toString())).toBe(4);
    // A config field that matters gives a new address.
    const third = await runStage(stage, localContext(store), {}, { a: 3, b: 'x' });
    expect(third.cached).toBe(false);
    expect(third.ref.hash).not.toBe(first.ref.hash);
  });

  it('keys on the identity of upstream refs, not their payload', () => {
    const stage = countingStage({ n: 0 });
    const ref = { stage: 'up', hash: 'abc', manifestKey: 'stages/up/abc/manifest.json', result: { big: [1, 2, 3] } };
    const sameRefOtherPayload = { ...ref, result: { big: [] } };
    expect(stageHash(stage, { upstream: ref }, { a: 1 })).toBe(stageHash(stage, { upstream: sameRefOtherPayload }, { a: 1 }));
    expect(stageHash(stage, { upstream: { ...ref, hash: 'abd' } }, { a: 1 })).not.toBe(stageHash(stage, { upstream: ref }, { a: 1 }));
  });

  it('writes the manifest last: a failed run leaves no manifest and is redone', async () => {
    const store = tempStore();
    const calls = { n: 0 };
    await expect(runStage(countingStage(calls, true), localContext(store), {}, { a: 1 })).rejects.toThrow(/boom/);
    const hash = stageHash(countingStage(calls), {}, { a: 1 });
    expect(await store.exists(manifestKeyOf('count', hash))).toBe(false);
    const ok = await runStage(countingStage(calls), localContext(store), {}, { a: 1 });
    expect(ok.cached).toBe(false);
    expect(calls.n).toBe(2);
    expect(await store.exists(ok.ref.manifestKey)).toBe(true);
  });

  it('does not start when already aborted', async () => {
    const ac = new AbortController();
    ac.abort('user cancelled');
    await expect(runStage(countingStage({ n: 0 }), localContext(tempStore(), { signal: ac.signal }), {}, { a: 1 })).rejects.toThrow(/cancelled/);
  });
});

describe('checkpointIO', () => {
  it('returns the newest complete checkpoint and keeps only the last two', async () => {
    const store = tempStore();
    const io = checkpointIO(store, 'checkpoints/x/h');
    expect(await io.latest()).toBeNull();
    for (const step of [10, 20, 30]) await io.save(step, { 'state.bin': new Uint8Array([step]) }, { epoch: step / 10 });
    const latest = await io.latest();
    expect(latest?.step).toBe(30);
    expect(latest?.meta).toEqual({ epoch: 3 });
    expect([...(await latest!.read('state.bin'))]).toEqual([30]);
    const dirs = new Set((await store.list('checkpoints/x/h/')).map((k) => k.split('/')[3]));
    expect([...dirs].sort()).toEqual(['latest.json', 'step-000000020', 'step-000000030']);
  });
});

describe('Rng', () => {
  it('is reproducible from its state, and forks independent streams', () => {
    const a = Rng.fromSeed(1, 'epoch', 0);
    a.next();
    const b = new Rng(a.state);
    expect([a.next(), a.next()]).toEqual([b.next(), b.next()]);
    expect(Rng.fromSeed(1, 0).next()).not.toBe(Rng.fromSeed(1, 1).next());
    const xs = Array.from({ length: 2000 }, () => a.next());
    expect(Math.abs(xs.reduce((s, x) => s + x, 0) / xs.length - 0.5)).toBeLessThan(0.03);
  });
});
