import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// docker/healthcheck.mjs is what the worker images run as HEALTHCHECK and Kubernetes readinessProbe.
const SCRIPT = fileURLToPath(new URL('../../docker/healthcheck.mjs', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function runHealthcheck(env: Record<string, string>): Promise<Result> {
  return new Promise((resolve) => {
    // Only the variables under test: the caller's TEMPORAL_ADDRESS etc. must not leak in.
    const childEnv = { PATH: process.env.PATH ?? '', DENSEPIPE_HEALTHCHECK_TIMEOUT_MS: '2000', ...env };
    execFile(process.execPath, [SCRIPT], { env: childEnv, timeout: 15_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function listen(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.end());
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port }));
  });
}

/** A port that was just free: connecting to it is refused. */
async function closedPort(): Promise<number> {
  const { server, port } = await listen();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('docker/healthcheck.mjs', () => {
  let temporal: { server: Server; port: number };
  let s3: { server: Server; port: number };

  beforeAll(async () => {
    temporal = await listen();
    s3 = await listen();
  });

  afterAll(async () => {
    await Promise.all([temporal, s3].map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))));
  });

  it('passes when Temporal and the S3 endpoint accept connections', async () => {
    const result = await runHealthcheck({
      TEMPORAL_ADDRESS: `127.0.0.1:${temporal.port}`,
      DENSEPIPE_S3_ENDPOINT: `http://127.0.0.1:${s3.port}`,
    });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Temporal 127.0.0.1:${temporal.port}`);
    expect(result.stdout).toContain(`S3 127.0.0.1:${s3.port}`);
  });

  it('checks only Temporal when no S3 endpoint is configured (AWS S3)', async () => {
    const result = await runHealthcheck({ TEMPORAL_ADDRESS: `127.0.0.1:${temporal.port}` });
    expect(result.code).toBe(0);
    expect(result.stdout).not.toContain('S3');
  });

  it('fails naming the variable when the S3 endpoint refuses connections', async () => {
    const port = await closedPort();
    const result = await runHealthcheck({
      TEMPORAL_ADDRESS: `127.0.0.1:${temporal.port}`,
      DENSEPIPE_S3_ENDPOINT: `http://127.0.0.1:${port}`,
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`S3 at 127.0.0.1:${port} (DENSEPIPE_S3_ENDPOINT) is unreachable: ECONNREFUSED`);
  });

  it('fails when Temporal refuses connections', async () => {
    const port = await closedPort();
    const result = await runHealthcheck({ TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('(TEMPORAL_ADDRESS) is unreachable');
  });

  it('exits 2 with the offending value for a malformed address or endpoint', async () => {
    const badAddress = await runHealthcheck({ TEMPORAL_ADDRESS: 'temporal' });
    expect(badAddress.code).toBe(2);
    expect(badAddress.stderr).toContain("TEMPORAL_ADDRESS='temporal' is not host:port");

    const badEndpoint = await runHealthcheck({
      TEMPORAL_ADDRESS: `127.0.0.1:${temporal.port}`,
      DENSEPIPE_S3_ENDPOINT: 's3:7070',
    });
    expect(badEndpoint.code).toBe(2);
    expect(badEndpoint.stderr).toContain("DENSEPIPE_S3_ENDPOINT='s3:7070' must start with http:// or https://");
  });
});
