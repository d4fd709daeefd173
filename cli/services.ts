import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { LOCAL_S3_CREDENTIALS, projectRoot, readServices, stateDir, toolPath, type LocalServices } from './env.js';
import { SEARCH_ATTRIBUTES } from '../workflows/types.js';

const CLI_ENTRY = resolve(projectRoot(), 'bin', 'densepipe.js');

export function isAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function portOpen(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolveOpen) => {
    const socket = createConnection({ port, host });
    const done = (open: boolean) => {
      socket.destroy();
      resolveOpen(open);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile: string, pid: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    if (!isAlive(pid)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '(no log)';
  throw new Error(`${what} did not become ready${isAlive(pid) ? ` within ${timeoutMs / 1000}s` : ' (the process exited)'}; log ${logFile}:\n${tail}`);
}

function spawnDetached(command: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): number {
  mkdirSync(dirname(logFile), { recursive: true });
  const out = openSync(logFile, 'a');
  const child = spawn(command, args, { detached: true, stdio: ['ignore', out, out], env });
  child.unref();
  if (!child.pid) throw new Error(`could not start ${command}`);
  return child.pid;
}

function saveServices(services: LocalServices, dir = stateDir()): void {
  writeFileSync(join(dir, 'services.json'), JSON.stringify(services, null, 2));
}

function requireTool(name: 'temporal' | 'versitygw'): string {
  const path = toolPath(name);
  if (!existsSync(path)) throw new Error(`${name} is not installed at ${path}; run 'npm run setup' (it builds it with go install)`);
  return path;
}

export interface UpOptions {
  temporalPort?: number;
  uiPort?: number;
  s3Port?: number;
  /** Start cpu and gpu workers too (default true). */
  workers?: boolean;
  s3?: boolean;
  log?: (line: string) => void;
}

export async function startTemporal(services: LocalServices, dir: string, port: number, uiPort: number): Promise<void> {
  if (services.temporal && isAlive(services.temporal.pid) && (await portOpen(services.temporal.port))) return;
  if (await portOpen(port)) throw new Error(`port ${port} is already in use by another program; pass --temporal-port or stop it`);
  const dbFile = join(dir, 'temporal.sqlite');
  const logFile = join(dir, 'logs', 'temporal.log');
  const args = ['server', 'start-dev', '--db-filename', dbFile, '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort), '--log-level', 'warn'];
  for (const name of Object.values(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=Keyword`);
  const pid = spawnDetached(requireTool('temporal'), args, logFile);
  services.temporal = { address: `127.0.0.1:${port}`, uiUrl: `http://localhost:${uiPort}`, pid, dbFile, port, uiPort };
  await waitFor('the Temporal dev server', () => portOpen(port), 60_000, logFile, pid);
}

export async function startS3(services: LocalServices, dir: string, port: number): Promise<void> {
  if (services.s3 && isAlive(services.s3.pid) && (await portOpen(services.s3.port))) return;
  if (await portOpen(port)) throw new Error(`port ${port} is already in use by another program; pass --s3-port or stop it`);
  const root = join(dir, 's3');
  mkdirSync(root, { recursive: true });
  const logFile = join(dir, 'logs', 's3.log');
  const pid = spawnDetached(requireTool('versitygw'), ['--port', `127.0.0.1:${port}`, '--quiet', 'posix', root], logFile, {
    ...process.env,
    ROOT_ACCESS_KEY: LOCAL_S3_CREDENTIALS.accessKeyId,
    ROOT_SECRET_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
  });
  services.s3 = { endpoint: `http://127.0.0.1:${port}`, pid, root, port, ...LOCAL_S3_CREDENTIALS };
  await waitFor('the versitygw S3 server', () => portOpen(port), 30_000, logFile, pid);
}

export function workerEnv(services: LocalServices): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DENSEPIPE_HOME: stateDir() };
  if (services.temporal) env.TEMPORAL_ADDRESS = services.temporal.address;
  if (services.s3 && !process.env.DENSEPIPE_S3_ENDPOINT) {
    env.DENSEPIPE_S3_ENDPOINT = services.s3.endpoint;
    env.AWS_ACCESS_KEY_ID = services.s3.accessKeyId;
    env.AWS_SECRET_ACCESS_KEY = services.s3.secretAccessKey;
    env.AWS_REGION ??= 'us-east-1';
  }
  return env;
}

/** Start one worker process for a queue; it writes "worker ready" to its log once it polls. */
export async function startWorker(services: LocalServices, dir: string, queue: 'cpu' | 'gpu'): Promise<number> {
  const logFile = join(dir, 'logs', `worker-${queue}.log`);
  const mark = existsSync(logFile) ? readFileSync(logFile, 'utf8').length : 0;
  const pid = spawnDetached(process.execPath, [CLI_ENTRY, 'worker', '--queue', queue], logFile, workerEnv(services));
  services.workers = [...(services.workers ?? []).filter((w) => w.queue !== queue || isAlive(w.pid)), { queue, pid, log: logFile }];
  await waitFor(`the ${queue} worker`, async () => readFileSync(logFile, 'utf8').slice(mark).includes('worker ready'), 90_000, logFile, pid);
  return pid;
}

export async function up(options: UpOptions = {}): Promise<LocalServices> {
  const dir = stateDir();
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const services = readServices(dir);
  const log = options.log ?? (() => {});
  const temporalPort = options.temporalPort ?? Number(process.env.DENSEPIPE_TEMPORAL_PORT ?? 7233);
  await startTemporal(services, dir, temporalPort, options.uiPort ?? temporalPort + 1000);
  saveServices(services, dir);
  log(`temporal   ${services.temporal!.address}  (UI ${services.temporal!.uiUrl}, history in ${services.temporal!.dbFile})`);
  if (options.s3 !== false) {
    await startS3(services, dir, options.s3Port ?? Number(process.env.DENSEPIPE_S3_PORT ?? 7070));
    saveServices(services, dir);
    log(`s3         ${services.s3!.endpoint}  (versitygw, data in ${services.s3!.root})`);
  }
  if (options.workers !== false) {
    for (const queue of ['cpu', 'gpu'] as const) {
      const running = services.workers?.find((w) => w.queue === queue && isAlive(w.pid));
      if (!running) await startWorker(services, dir, queue);
      saveServices(services, dir);
      const w = services.workers!.find((x) => x.queue === queue && isAlive(x.pid))!;
      log(`worker     ${queue} (pid ${w.pid}, log ${w.log})`);
    }
  }
  return services;
}

async function stopPid(pid: number, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(-pid, 'SIGTERM'); // the whole process group: the server and anything it spawned
  } catch {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (isAlive(pid)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

export async function down(options: { log?: (line: string) => void } = {}): Promise<void> {
  const dir = stateDir();
  const services = readServices(dir);
  const log = options.log ?? (() => {});
  for (const w of services.workers ?? []) {
    await stopPid(w.pid, 30_000);
    log(`stopped ${w.queue} worker (pid ${w.pid})`);
  }
  if (services.s3) {
    await stopPid(services.s3.pid);
    log(`stopped s3 (pid ${services.s3.pid}); data kept in ${services.s3.root}`);
  }
  if (services.temporal) {
    await stopPid(services.temporal.pid);
    log(`stopped temporal (pid ${services.temporal.pid}); history kept in ${services.temporal.dbFile}`);
  }
  saveServices({}, dir);
}
