import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { toolPath } from '../../cli/env.js';

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
