/**
 * Regression tests of issue 17 in core/: checkpoints that survive two attempts writing the same
 * prefix, bad input classified non-retryable (tar, XML, keys, buckets, HTTP 403), credentials kept
 * out of messages and configs, no prototype pollution from `--set`, and schema upper bounds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { toFailure } from '../../activities/context.js';
import { assertNoForbiddenKeys, ConfigError, loadRunConfig, mergeDeep, parseOverrides, parseRunConfig } from '../../core/config.js';
import { BadInputError } from '../../core/errors.js';
import { redactUrl, scrubSecrets, urlSecrets } from '../../core/redact.js';
import { checkpointIO, localContext, runStage, type Stage } from '../../core/stage.js';
import { FileArtifactStore, S3ArtifactStore, getJson, openStore, type ArtifactStore } from '../../core/store/index.js';
import { readShard } from '../../core/webdataset.js';
import { parseVocXml } from '../../stages/data/index.js';
import { Rng } from '../../core/rng.js';
import { tarOf } from '../fixtures/malformed/build.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempStore = () => {
  const d = mkdtempSync(join(tmpdir(), 'dp-rel-'));
  dirs.push(d);
  return new FileArtifactStore(d);
};

/** A store whose every call first waits a random 0-3 ms: two attempts on it interleave at random points. */
function jittery(store: ArtifactStore, rng: Rng): ArtifactStore {
  const wait = () => new Promise((r) => setTimeout(r, Math.floor(rng.next() * 4)));
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function' || prop === 'url') return typeof v === 'function' ? v.bind(target) : v;
      return async (...args: unknown[]) => {
        await wait();
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

const nonRetryable = (err: unknown) => {
  const f = toFailure(err);
  return f instanceof ApplicationFailure && f.nonRetryable === true;
};

describe('checkpoints written by two attempts at once (issue 17)', () => {
  it('a slower attempt never deletes the checkpoint latest.json names', async () => {
    const store = tempStore();
    const prefix = 'checkpoints/x/h';
    const slow = checkpointIO(store, prefix);
    const fast = checkpointIO(store, prefix);
    await slow.save(3, { 'state.bin': new Uint8Array([3]) });
    // The retry (started from step 3) runs ahead and prunes as it goes.
    for (let step = 4; step <= 10; step++) await fast.save(step, { 'state.bin': new Uint8Array([step]) });
    // The first attempt, still running, saves its next checkpoint late.
    await slow.save(4, { 'state.bin': new Uint8Array([40]) });
    const latest = await checkpointIO(store, prefix).latest();
    expect(latest?.step).toBe(10);
    expect([...(await latest!.read('state.bin'))]).toEqual([10]);
    const pointer = await getJson<{ dir: string }>(store, `${prefix}/latest.json`);
    expect(await store.exists(`${prefix}/${pointer.dir}/state.bin`)).toBe(true);
  });

  it.each(Array.from({ length: 12 }, (_, i) => i))('leaves a readable latest checkpoint under random interleavings (seed %i)', async (seed) => {
    const base = tempStore();
    const prefix = 'checkpoints/race/h';
    const rng = Rng.fromSeed('checkpoint-race', seed);
    const a = checkpointIO(jittery(base, rng), prefix);
    const b = checkpointIO(jittery(base, rng), prefix);
    const reader = checkpointIO(base, prefix);
    const run = async (io: typeof a, steps: number[]) => {
      for (const step of steps) {
        await io.save(step, { 'state.bin': new Uint8Array([step]), 'extra.json': JSON.stringify({ step }) });
        const latest = await reader.latest();
        expect(latest).not.toBeNull();
        const bytes = await latest!.read('state.bin');
        expect([...bytes]).toEqual([latest!.step]);
      }
    };
    await Promise.all([run(a, [1, 2, 3, 4, 5, 6]), run(b, [3, 4, 5, 6, 7, 8, 9])]);
    const latest = await reader.latest();
    expect(latest!.step).toBe(9);
    expect([...(await latest!.read('state.bin'))]).toEqual([9]);
  });

  it('falls back to the newest complete checkpoint when latest.json dangles', async () => {
    const store = tempStore();
    const io = checkpointIO(store, 'checkpoints/d/h', 3);
    for (const step of [1, 2, 3]) await io.save(step, { 'state.bin': new Uint8Array([step]) });
    await store.delete('checkpoints/d/h/step-000000003/state.bin');
    const latest = await io.latest();
    expect(latest?.step).toBe(2);
    expect([...(await latest!.read('state.bin'))]).toEqual([2]);
  });
});

describe('stage keys that need IO (issue 17)', () => {
  it('awaits keyContent before the key, so the key follows the content and the event loop keeps running', async () => {
    let content = 'v1';
    let ticks = 0;
    const stage: Stage<Record<string, never>, { a: number }, { content: string }> = {
      name: 'io-key',
      version: '1',
      async keyContent() {
        const timer = setInterval(() => ticks++, 1);
        await new Promise((r) => setTimeout(r, 30));
        clearInterval(timer);
        return content;
      },
      async run() {
        return { content };
      },
    };
    const store = tempStore();
    const first = await runStage(stage, localContext(store), {}, { a: 1 });
    expect((await runStage(stage, localContext(store), {}, { a: 1 })).cached).toBe(true);
    content = 'v2';
    const second = await runStage(stage, localContext(store), {}, { a: 1 });
    expect(second.cached).toBe(false);
    expect(second.ref.hash).not.toBe(first.ref.hash);
    expect(ticks).toBeGreaterThan(0);
  });
});

describe('bad input is non-retryable (issue 17)', () => {
  it('a corrupt tar names the shard', async () => {
    const err = await (async () => {
      for await (const s of readShard(Buffer.alloc(2048, 0x41), 's3://bucket/shards/train-000000.tar')) void s;
    })().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BadInputError);
    expect((err as Error).message).toMatch(/^s3:\/\/bucket\/shards\/train-000000\.tar: malformed tar/);
    expect(nonRetryable(err)).toBe(true);
  });

  it('a sample whose members are split across the tar is refused, not read as two samples', async () => {
    const tar = await tarOf([{ name: 'a.json', body: '{}' }, { name: 'b.json', body: '{}' }, { name: 'a.png', body: 'x' }]);
    const err = await (async () => {
      for await (const s of readShard(tar, 'split.tar')) void s;
    })().then(() => null, (e: unknown) => e);
    expect((err as Error).message).toMatch(/split\.tar: member a\.png returns to key a after other keys/);
    expect(nonRetryable(err)).toBe(true);
  });

  it('an input stream that fails stays retryable', async () => {
    const { Readable } = await import('node:stream');
    const failing = new Readable({
      read() {
        this.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
      },
    });
    const err = await (async () => {
      for await (const s of readShard(failing, 's3://b/x.tar')) void s;
    })().then(() => null, (e: unknown) => e);
    expect((err as Error).message).toBe('socket hang up');
    expect(nonRetryable(err)).toBe(false);
  });

  it('an XML entity names the file', () => {
    const xxe = `<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><annotation><filename>&xxe;</filename></annotation>`;
    let err: unknown;
    try {
      parseVocXml(xxe, '/data/voc/Annotations/x.xml');
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).toMatch(/^\/data\/voc\/Annotations\/x\.xml: a DOCTYPE or ENTITY declaration is not allowed/);
    expect(nonRetryable(err)).toBe(true);
  });

  it.each(['../escape', '/abs', 'a//b', 'a/./b', 'a\\b', 'a\u0000b', 'x'.repeat(1025), ''])('an invalid store key %j', async (key) => {
    const err = await tempStore().put(key, 'x').then(() => null, (e: unknown) => e);
    expect((err as Error).message).toMatch(/store key: invalid artifact key/);
    expect(nonRetryable(err)).toBe(true);
  });

  it('a missing store with createBucket false', async () => {
    const err = await new FileArtifactStore(join(tmpdir(), 'dp-no-such-store-' + Date.now())).ensureReady({ create: false }).then(() => null, (e: unknown) => e);
    expect((err as Error).message).toMatch(/store\.createBucket: false: store folder .* does not exist/);
    expect(nonRetryable(err)).toBe(true);
  });

  describe('against an S3 endpoint that answers 403 or 404', () => {
    let server: Server;
    let endpoint: string;
    let mode: 403 | 404 = 403;
    beforeAll(async () => {
      server = createServer((req, res) => {
        req.resume();
        const body = mode === 403
          ? '<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
          : '<?xml version="1.0"?><Error><Code>NoSuchBucket</Code><Message>no bucket</Message></Error>';
        res.writeHead(mode, { 'content-type': 'application/xml' }).end(req.method === 'HEAD' ? undefined : body);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    });
    afterAll(() => new Promise((r) => server.close(r)));
    const s3 = () => new S3ArtifactStore({ bucket: 'bkt', endpoint, region: 'us-east-1', credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI-SECRET' } });

    it('HTTP 403 on the bucket and on objects', async () => {
      mode = 403;
      for (const call of [() => s3().ensureReady({ create: true }), () => s3().get('a/b.json'), () => s3().put('a/b.json', 'x')]) {
        const err = await call().then(() => null, (e: unknown) => e);
        expect((err as Error).message).toMatch(/access denied|HTTP 403/);
        expect((err as Error).message).not.toContain('wJalrXUtnFEMI-SECRET');
        expect(nonRetryable(err)).toBe(true);
      }
    });

    it('a missing bucket with createBucket false', async () => {
      mode = 404;
      const err = await s3().ensureReady({ create: false }).then(() => null, (e: unknown) => e);
      expect((err as Error).message).toMatch(/store\.createBucket: false: bucket 'bkt' does not exist/);
      expect(nonRetryable(err)).toBe(true);
    });
  });
});

describe('credentials never in messages or configs (issue 17)', () => {
  const secret = 'S3CR3T-pa55word';
  it('refuses a store.endpoint with credentials in the config, without repeating them', async () => {
    let err: unknown;
    try {
      parseRunConfig({ store: { uri: 's3://b/p', endpoint: `https://AKID:${secret}@s3.example.org` } }, 'run.yaml');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/run\.yaml: store\.endpoint: holds a user name or password/);
    expect((err as Error).message).not.toContain(secret);
  });

  it('refuses an endpoint with credentials from the environment, and unreachable-endpoint messages show no user, path or query', async () => {
    const saved = process.env.DENSEPIPE_S3_ENDPOINT;
    try {
      process.env.DENSEPIPE_S3_ENDPOINT = `http://AKID:${secret}@127.0.0.1:9`;
      let err: unknown;
      try {
        openStore('s3://bucket/prefix');
      } catch (e) {
        err = e;
      }
      expect((err as Error).message).toMatch(/store\.endpoint: the S3 endpoint http:\/\/127\.0\.0\.1:9 carries a user name or password/);
      expect((err as Error).message).not.toContain(secret);
      const store = new S3ArtifactStore({ bucket: 'b', endpoint: `http://127.0.0.1:9/?X-Amz-Signature=${secret}`, region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
      const unreachable = await store.ensureReady().then(() => null, (e: unknown) => e);
      expect((unreachable as Error).message).toMatch(/S3 is unreachable at http:\/\/127\.0\.0\.1:9\/…/);
      expect((unreachable as Error).message).not.toContain(secret);
    } finally {
      if (saved === undefined) delete process.env.DENSEPIPE_S3_ENDPOINT;
      else process.env.DENSEPIPE_S3_ENDPOINT = saved;
    }
  });

  it('redacts URLs and scrubs every form of a secret URL', () => {
    const url = 'https://hooks.example.org/services/T0/B0/XYZSECRET?token=abc123';
    expect(redactUrl(url)).toBe('https://hooks.example.org/…');
    expect(redactUrl(`https://u:${secret}@h.example.org:8443`)).toBe('https://h.example.org:8443');
    const text = `failed ${url} and ${encodeURIComponent(url)} and /services/T0/B0/XYZSECRET`;
    const scrubbed = scrubSecrets(text, urlSecrets(url));
    expect(scrubbed).not.toContain('XYZSECRET');
    expect(scrubbed).not.toContain('abc123');
  });
});

describe('prototype pollution (issue 17)', () => {
  it.each([['__proto__.polluted=1'], ['constructor.prototype.polluted=1'], ['pretrain.__proto__.polluted=1'], ['prototype=1']])('refuses --set %s and leaves Object.prototype alone', (pair) => {
    expect(() => parseOverrides([pair])).toThrow(ConfigError);
    expect(() => parseOverrides([pair])).toThrow(/--set: override .* is not a config field \(it names an object's prototype\)/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('refuses __proto__ inside a --set JSON value, in YAML and in merges', async () => {
    expect(() => parseOverrides(['pretrain={"__proto__":{"polluted":1}}'])).toThrow(/--set pretrain: __proto__: '__proto__' is not a config field/);
    const d = mkdtempSync(join(tmpdir(), 'dp-proto-'));
    dirs.push(d);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(d, 'p.yaml'), 'pretrain:\n  __proto__:\n    polluted: 1\n');
    await expect(loadRunConfig(join(d, 'p.yaml'))).rejects.toThrow(/p\.yaml: pretrain\.__proto__: '__proto__' is not a config field/);
    expect(() => mergeDeep({}, JSON.parse('{"__proto__": {"polluted": 1}}'))).toThrow(ConfigError);
    expect(() => assertNoForbiddenKeys([{ constructor: 1 }], 'x')).toThrow(/x: 0\.constructor/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('still applies ordinary overrides', () => {
    expect(parseOverrides(['pretrain.steps=7', 'pretrain.batchSize=8'])).toEqual({ pretrain: { steps: 7, batchSize: 8 } });
    expect(() => parseOverrides(['pretrain..steps=7'])).toThrow(/empty part/);
  });
});

describe('schema upper bounds say what they protect (issue 17)', () => {
  const issue = (raw: Record<string, unknown>) => {
    try {
      parseRunConfig(raw, 'b.yaml');
      return '';
    } catch (e) {
      return (e as Error).message;
    }
  };
  it.each([
    [{ pretrain: { batchSize: 1e8 } }, /pretrain\.batchSize: at most 4,096: every view of a batch and its activations are held in the worker's memory/],
    [{ pretrain: { imageSize: 1e6 } }, /pretrain\.imageSize: at most 1,024: activation memory grows with the square of the image side/],
    [{ pretrain: { steps: 1e12 } }, /pretrain\.steps: at most 10,000,000: /],
    [{ pretrain: { epochs: 1e9 } }, /pretrain\.epochs: at most 10,000: /],
    [{ pretrain: { method: 'densecl', args: { queueSize: 1e9 } } }, /pretrain\.args\.queueSize: at most 1,048,576: a queue of K keys × D floats/],
    [{ pretrain: { method: 'mocov2', args: { queueSize: 2 ** 21 } } }, /pretrain\.args\.queueSize: at most 1,048,576/],
    [{ data: { shardSamples: 1e12 } }, /data\.shardSamples: at most 100,000: a shard is assembled in the worker's memory/],
    [{ data: { shardBytes: 1e13 } }, /data\.shardBytes: at most 4,294,967,296: /],
    [{ data: { concurrency: 1000 } }, /data\.concurrency: at most 64: each item in flight holds its file and decoded pixels/],
    [{ data: { maxImagePixels: 1e12 } }, /data\.maxImagePixels: at most 268,402,689: the decoder's own ceiling/],
    [{ proposals: { resize: { width: 1e6, height: 10 } } }, /proposals\.resize\.width: at most 4,096: every image is resampled/],
    [{ proposals: { maxBoxes: 1e9 } }, /proposals\.maxBoxes: at most 100,000/],
    [{ evaluation: { knn: { k: 1e9 } } }, /evaluation\.knn\.k: at most 10,000/],
    [{ evaluation: { linear: { epochs: 1e9 } } }, /evaluation\.linear\.epochs: at most 1,000/],
  ])('refuses %j', (raw, message) => {
    expect(issue(raw)).toMatch(message);
  });
});
