import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import type { Client } from '@temporalio/client';
import { toolPath, type LocalServices } from '../../cli/env.js';
import { connectClient } from '../../cli/client.js';
import { down, up } from '../../cli/services.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export function toolsInstalled(): boolean {
  return existsSync(toolPath('temporal')) && existsSync(toolPath('versitygw'));
}

/**
 * A private DENSEPIPE_HOME with its own ports, so integration tests never touch a user's
 * `densepipe up` services. Returns the env to give child processes and a cleanup.
 */
export async function isolatedHome(label: string): Promise<{ home: string; temporalPort: number; s3Port: number; cleanup: () => void }> {
  const home = mkdtempSync(join(tmpdir(), `densepipe-${label}-`));
  const temporalPort = await freePort();
  let s3Port = await freePort();
  while (s3Port === temporalPort || s3Port === temporalPort + 1000) s3Port = await freePort();
  return { home, temporalPort, s3Port, cleanup: () => rmSync(home, { recursive: true, force: true }) };
}

/** Poll `probe` until it returns something other than undefined (its errors count as "not yet"). */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export interface LocalStack {
  env: Awaited<ReturnType<typeof isolatedHome>>;
  services: LocalServices;
  client: Client;
  /** A new client connection (after the Temporal server was restarted). */
  reconnect(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * What `densepipe up` starts (dev server, versitygw, cpu and gpu worker processes) in a private
 * DENSEPIPE_HOME on free ports, with this test process pointed at the same S3 as the workers.
 */
export async function startLocalStack(label: string): Promise<LocalStack> {
  const savedEnv = { ...process.env };
  const env = await isolatedHome(label);
  process.env.DENSEPIPE_HOME = env.home;
  delete process.env.TEMPORAL_ADDRESS;
  delete process.env.DENSEPIPE_S3_ENDPOINT;
  const services = await up({ temporalPort: env.temporalPort, s3Port: env.s3Port });
  process.env.DENSEPIPE_S3_ENDPOINT = services.s3!.endpoint;
  process.env.AWS_ACCESS_KEY_ID = services.s3!.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = services.s3!.secretAccessKey;
  let connection = await connectClient();
  const stack: LocalStack = {
    env,
    services,
    client: connection.client,
    async reconnect() {
      await connection.close();
      connection = await connectClient();
      stack.client = connection.client;
    },
    async stop() {
      await connection.close();
      await down();
      process.env = savedEnv;
      env.cleanup();
    },
  };
  return stack;
}
