import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FileArtifactStore, S3ArtifactStore, openStore, ArtifactNotFoundError, type ArtifactStore } from '../../core/store/index.js';
import { LOCAL_S3_CREDENTIALS } from '../../cli/env.js';
import { startS3 } from '../../cli/services.js';
import { isolatedHome, toolsInstalled } from '../helpers/servers.js';
import type { LocalServices } from '../../cli/env.js';

async function exerciseStore(store: ArtifactStore, scratch: string): Promise<void> {
  await store.ensureReady({ create: true });
  await store.put('a/b/c.json', '{"x":1}');
  expect(Buffer.from(await store.get('a/b/c.json')).toString()).toBe('{"x":1}');
  expect(await store.exists('a/b/c.json')).toBe(true);
  expect(await store.exists('a/b/missing.json')).toBe(false);
  await expect(store.get('a/b/missing.json')).rejects.toBeInstanceOf(ArtifactNotFoundError);

  // A streamed upload (file body): with the SDK's default checksums this is sent aws-chunked with a
  // trailing CRC32, which s3rver stored verbatim (corrupt). The bytes must round-trip exactly.
  const small = randomBytes(70_001);
  writeFileSync(join(scratch, 'small.bin'), small);
  const put = await store.putFile('a/small.bin', join(scratch, 'small.bin'));
  expect(put.size).toBe(small.length);
  expect(Buffer.compare(Buffer.from(await store.get('a/small.bin')), small)).toBe(0);

  // Large enough for a multipart upload.
  const big = randomBytes(17 * 1024 * 1024 + 5);
  writeFileSync(join(scratch, 'big.bin'), big);
  await store.putFile('a/big.bin', join(scratch, 'big.bin'));
  expect(Buffer.compare(Buffer.from(await store.get('a/big.bin')), big)).toBe(0);

  const chunks: Buffer[] = [];
  for await (const c of await store.getStream('a/small.bin')) chunks.push(c as Buffer);
  expect(Buffer.compare(Buffer.concat(chunks), small)).toBe(0);

  expect(await store.list('a')).toEqual(['a/b/c.json', 'a/big.bin', 'a/small.bin']);
  expect(await store.list('a/b/')).toEqual(['a/b/c.json']);
  await store.delete('a/big.bin');
  expect(await store.exists('a/big.bin')).toBe(false);
  expect(() => store.url('x')).not.toThrow();
  await expect(store.put('../escape', 'x')).rejects.toThrow(/invalid artifact key/);
}

describe('FileArtifactStore', () => {
  it('stores, lists, streams and refuses unsafe keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dp-file-'));
    try {
      await exerciseStore(new FileArtifactStore(join(dir, 'root')), dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is what openStore returns for file:// URIs and plain paths', () => {
    expect(openStore('file:///tmp/x')).toBeInstanceOf(FileArtifactStore);
    expect(openStore('relative/dir')).toBeInstanceOf(FileArtifactStore);
    expect(() => openStore('gs://bucket/x')).toThrow(/unsupported store URI scheme/);
  });
});

describe.skipIf(!toolsInstalled())('S3ArtifactStore against versitygw', () => {
  let env: Awaited<ReturnType<typeof isolatedHome>>;
  const services: LocalServices = {};
  beforeAll(async () => {
    env = await isolatedHome('s3');
    await startS3(services, env.home, env.s3Port);
  });
  afterAll(async () => {
    if (services.s3) process.kill(services.s3.pid, 'SIGTERM');
    env.cleanup();
  });

  it('round-trips bytes exactly, including streamed and multipart uploads', async () => {
    const store = new S3ArtifactStore({ bucket: 'densepipe-test', prefix: 'some/prefix', endpoint: services.s3!.endpoint, credentials: LOCAL_S3_CREDENTIALS });
    await exerciseStore(store, env.home);
  });

  it('names the endpoint when S3 is unreachable', async () => {
    const store = new S3ArtifactStore({ bucket: 'densepipe-test', endpoint: 'http://127.0.0.1:9', credentials: LOCAL_S3_CREDENTIALS });
    await expect(store.ensureReady()).rejects.toThrow(/S3 is unreachable at http:\/\/127\.0\.0\.1:9.*densepipe up/s);
  });

  it('refuses to create a missing bucket when not allowed', async () => {
    const store = new S3ArtifactStore({ bucket: 'no-such-bucket', endpoint: services.s3!.endpoint, credentials: LOCAL_S3_CREDENTIALS });
    await expect(store.ensureReady({ create: false })).rejects.toThrow(/bucket 'no-such-bucket' does not exist/);
  });
});

