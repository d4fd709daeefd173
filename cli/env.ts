import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root, found from this file whether it runs from cli/ (tests) or dist/cli/ (built). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'densepipe') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the densepipe package root');
    dir = parent;
  }
}

/** Where the local services keep their data, pids and logs: $DENSEPIPE_HOME or ./.densepipe. */
export function stateDir(): string {
  return resolve(process.env.DENSEPIPE_HOME ?? '.densepipe');
}

/** Binaries installed by scripts/setup.sh (go install into the cache). */
export function toolPath(name: 'temporal' | 'versitygw'): string {
  const cache = process.env.DENSEPIPE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'densepipe');
  return join(cache, 'bin', name);
}

export interface LocalServices {
  temporal?: { address: string; uiUrl: string; pid: number; dbFile: string; port: number; uiPort: number };
  s3?: { endpoint: string; pid: number; root: string; accessKeyId: string; secretAccessKey: string; port: number };
  workers?: Array<{ queue: string; pid: number; log: string }>;
}

export function readServices(dir = stateDir()): LocalServices {
  const file = join(dir, 'services.json');
  if (!existsSync(file)) return {};
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as LocalServices;
  } catch {
    return {};
  }
}

/** Local-only credentials for the embedded S3 server; never used against a real endpoint. */
export const LOCAL_S3_CREDENTIALS = { accessKeyId: 'densepipe', secretAccessKey: 'densepipe-local-only' };

export interface Connection {
  temporalAddress: string;
  namespace: string;
  uiUrl: string;
  /** Where the address came from, for error messages. */
  source: string;
}

export function temporalConnection(): Connection {
  const services = readServices();
  const namespace = process.env.TEMPORAL_NAMESPACE ?? 'default';
  if (process.env.TEMPORAL_ADDRESS) {
    return { temporalAddress: process.env.TEMPORAL_ADDRESS, namespace, uiUrl: process.env.DENSEPIPE_TEMPORAL_UI ?? 'http://localhost:8233', source: 'TEMPORAL_ADDRESS' };
  }
  if (services.temporal) {
    return { temporalAddress: services.temporal.address, namespace, uiUrl: services.temporal.uiUrl, source: `${join(stateDir(), 'services.json')} (densepipe up)` };
  }
  return { temporalAddress: '127.0.0.1:7233', namespace, uiUrl: 'http://localhost:8233', source: 'the default 127.0.0.1:7233' };
}

/**
 * Make the local S3 server the default endpoint for this process (and the workers it spawns)
 * unless the user pointed somewhere else. Real AWS users set neither and use their usual chain.
 */
export function applyLocalS3Defaults(env: NodeJS.ProcessEnv = process.env): void {
  const s3 = readServices().s3;
  if (!s3 || env.DENSEPIPE_S3_ENDPOINT) return;
  env.DENSEPIPE_S3_ENDPOINT = s3.endpoint;
  if (!env.AWS_ACCESS_KEY_ID) {
    env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  }
  env.AWS_REGION ??= 'us-east-1';
}

export function temporalUiLink(uiUrl: string, namespace: string, workflowId: string): string {
  return `${uiUrl}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}
