/**
 * A reproduction with containerized workers, beside the same program run as processes.
 *
 *   npm run bench -- containers [--config configs/demo.yaml] [--no-build] [--no-sigterm] [--no-process]
 *                               [--gpu-image localhost/densepipe-gpu-worker:0.1.0]
 *
 * --gpu-image runs the gpu queue's containers on that image (the CUDA build of libtensorflow, on the CPU
 * when there is no GPU) and writes bench/results/containers-gpu-image.json instead.
 *
 * 1. Images: `bash scripts/images.sh` (cached; the first-build times come from its record), sizes.
 * 2. Hygiene of the cpu image, statically: numeric non-root user, health check, stop signal, no
 *    credential in its config or history, and no secret in any of its layers (each layer's files are
 *    grepped: the host's secret-looking environment values, the build's CA secret, private keys, AWS
 *    access key ids, credential files).
 * 3. Temporal (dev server) and versitygw on the host, as `densepipe up --no-workers` starts them.
 * 4. Process-based run: a cpu and a gpu worker process run the image's own /app (mounted with
 *    `podman image mount`) with the host's Node, so both runs execute the same files; the demo config
 *    runs to completion under a fresh store prefix.
 * 5. Containerized run: the cpu worker and the gpu worker as containers of the cpu image (read-only
 *    root file system, tmpfs /tmp, all capabilities dropped, no-new-privileges, host network), the
 *    same config under another fresh prefix. The gpu queue runs on the cpu image on this CPU-only
 *    machine until the registry-only GPU image lands.
 * 6. Every artifact of the two runs is compared: key sets, then bytes; where bytes differ the JSON
 *    fields or the file kind that differ are named.
 * 7. SIGTERM: a short run; while the gpu container is pretraining, `podman stop` (SIGTERM, then
 *    SIGKILL after the grace time); a new gpu container starts; the run must complete with the
 *    pretraining activity either finished within the drain or retried, never lost.
 * The machine is shared: the 1-minute load average is sampled through each phase and reported.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, homedir, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { Client } from '@temporalio/client';
import { parse, stringify } from 'yaml';
import { openStore } from '../core/store/index.js';
import { connectClient } from '../cli/client.js';
import { projectRoot } from '../cli/env.js';
import { historyEvents } from '../cli/history.js';
import { describeRun } from '../cli/runs.js';
import { down, up } from '../cli/services.js';
import { isolatedHome } from '../test/helpers/servers.js';
import { say } from './_stage-runs.js';
import type { BenchResult } from './_run.js';

const ROOT = projectRoot();
const CACHE = process.env.DENSEPIPE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'densepipe');
const IMAGES_STATE = join(CACHE, 'images', 'images.json');
const PODMAN_ENV = { ...process.env, CONTAINERS_CONF: process.env.CONTAINERS_CONF ?? join(CACHE, 'images', 'containers.conf') };
const PODMAN = ['--runtime', 'runc', '--cgroup-manager', 'cgroupfs'];

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; allowFail?: boolean } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { env: options.env ?? process.env, timeout: options.timeoutMs ?? 0, maxBuffer: 256 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : -1) : 0;
      if (code !== 0 && !options.allowFail) reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}`));
      else resolve({ code, stdout, stderr });
    });
  });
}
const podman = (args: string[], options: { timeoutMs?: number; allowFail?: boolean; env?: NodeJS.ProcessEnv } = {}) =>
  run('podman', [...PODMAN, ...args], { ...options, env: { ...PODMAN_ENV, ...(options.env ?? {}) } });

/** The 1-minute load average, sampled every 5 s while a phase runs. */
class LoadSampler {
  private samples: number[] = [];
  private timer = setInterval(() => this.samples.push(loadavg()[0]!), 5000);
  constructor() {
    this.samples.push(loadavg()[0]!);
  }
  stop(): { mean: number; max: number; samples: number } {
    clearInterval(this.timer);
    this.samples.push(loadavg()[0]!);
    const mean = this.samples.reduce((a, b) => a + b, 0) / this.samples.length;
    return { mean: Number(mean.toFixed(2)), max: Number(Math.max(...this.samples).toFixed(2)), samples: this.samples.length };
  }
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}`);
}

// --- images ---------------------------------------------------------------------------------------

interface BuildRecord {
  seconds: number;
  at: string;
}
interface ImagesState {
  /** scripts/images.sh's record: `cold` = the last --no-cache build, `built` = the last that changed the image, `cached` = the last that only confirmed it. */
  builds?: Record<string, { cold?: BuildRecord; built?: BuildRecord; cached?: BuildRecord }>;
  images?: Record<string, { bytes: number; id: string }>;
}

async function buildImages(skip: boolean): Promise<{ seconds: number | null; state: ImagesState }> {
  let seconds: number | null = null;
  if (!skip) {
    const t0 = performance.now();
    const res = await run('bash', [join(ROOT, 'scripts', 'images.sh'), 'all'], { allowFail: true });
    seconds = (performance.now() - t0) / 1000;
    process.stderr.write(res.stderr);
    if (res.code !== 0) throw new Error(`scripts/images.sh failed (exit ${res.code}); its message is above`);
  }
  const state = JSON.parse(readFileSync(IMAGES_STATE, 'utf8')) as ImagesState;
  return { seconds, state };
}

// --- hygiene: image config and layers ---------------------------------------------------------------

interface ImageInspect {
  Id: string;
  Healthcheck?: { Test?: string[] };
  Config: { User?: string; Env?: string[]; Labels?: Record<string, string>; StopSignal?: string; Healthcheck?: { Test?: string[] } };
  GraphDriver: { Name: string; Data: { LowerDir?: string; UpperDir?: string } };
  RootFS: { Layers: string[] };
}

/** Values from this machine's environment that look like secrets: never allowed in an image. */
function hostSecretValues(): Array<{ name: string; value: string }> {
  return Object.entries(process.env)
    .filter(([name, value]) => /SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|_KEY($|_)|AUTH/i.test(name) && typeof value === 'string' && value.length >= 8 && !value.startsWith('/'))
    .map(([name, value]) => ({ name, value: value! }));
}

/** PEM certificates in the build's CA secret that Node does not ship itself (the proxy's own CA). */
function buildCaMarkers(): Array<{ name: string; value: string }> {
  const file = process.env.DENSEPIPE_BUILD_CA ?? process.env.NODE_EXTRA_CA_CERTS;
  if (!file || !existsSync(file)) return [];
  const bundled = new Set(tls.rootCertificates.map((pem) => pem.replace(/\s+/g, '')));
  const pems = readFileSync(file, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return pems
    .filter((pem) => !bundled.has(pem.replace(/\s+/g, '')))
    .map((pem, i) => ({ name: `build CA secret certificate #${i + 1}`, value: pem.split('\n')[2]!.trim() })) // one 64-character base64 line of its body
    .filter((m) => m.value.length >= 40);
}

// Perl-compatible, matched over whole files (grep -z -P), so a key must come with its body: the bare
// header strings inside TLS libraries (libgnutls parses PEM) and Unicode character names that happen
// to spell AKIA.../ASIA... inside a longer word (libunistring) do not count.
const SECRET_PATTERNS: Array<{ name: string; regex: string }> = [
  { name: 'private key', regex: '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----\\r?\\n[A-Za-z0-9+/]{40}' },
  { name: 'AWS access key id', regex: '(?<![A-Z0-9])(AKIA|ASIA)[A-Z2-7]{16}(?![A-Z0-9])' },
  { name: 'npm auth token', regex: '_authToken=[^\\s$]' },
];
// Credential files by name, wherever they are.
const SECRET_FILES = /(^|\/)(\.npmrc|\.env(\..+)?|\.git-credentials|credentials|id_rsa|id_ed25519|\.netrc|\.pypirc)$/;
// Known public, non-secret files in third-party packages, each pinned by its sha256 and named with why
// it is harmless (a changed file is reported again).
const ALLOWED: Array<{ path: string; sha256: string; why: string }> = [
  {
    path: '/app/node_modules/agent-base/test/ssl-cert-snakeoil.key',
    sha256: '6b090cd2565a5e2c11a672e73c87ce40c7c9fe2a57413397f9fe46bcc9e783da', // agent-base 4.3.0
    why: "the public 'snakeoil' test key the npm package agent-base ships in its test/ folder",
  },
];

/** Every layer's files, searched in one pass per kind: fixed strings, then the patterns, then file names. */
async function grepLayers(dirs: string[], fixed: Array<{ name: string; value: string }>, allowedFound: Array<{ file: string; why: string }>, debianFiles: Map<string, { pkg: string; md5: string }>): Promise<Array<{ what: string; layer: string; file: string }>> {
  const findings: Array<{ what: string; layer: string; file: string }> = [];
  const scratch = join(tmpdir(), `densepipe-layer-grep-${process.pid}`);
  mkdirSync(scratch, { recursive: true });
  const fixedFile = join(scratch, 'fixed.txt');
  writeFileSync(fixedFile, fixed.map((f) => f.value).join('\n') + '\n');
  // grep -P takes one pattern: the alternatives joined.
  const combined = SECRET_PATTERNS.map((p) => `(?:${p.regex})`).join('|');
  const matchedFiles = async (dir: string, mode: string[]) =>
    (await run('grep', ['-r', '-l', '-a', ...mode, '--', dir], { allowFail: true })).stdout.split('\n').filter(Boolean);
  const matches = async (file: string, mode: string[]) =>
    [...new Set((await run('grep', ['-o', '-a', ...mode, '--', file], { allowFail: true })).stdout.split(/\n|\0/).filter(Boolean))];
  const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
  for (const dir of dirs) {
    const layer = dir.split('/').slice(-2, -1)[0]!.slice(0, 12);
    if (fixed.length > 0) {
      for (const file of await matchedFiles(dir, ['-F', '-f', fixedFile])) {
        for (const m of await matches(file, ['-F', '-f', fixedFile])) findings.push({ what: fixed.find((f) => f.value === m)?.name ?? 'fixed string', layer, file: file.slice(dir.length) });
      }
    }
    for (const file of await matchedFiles(dir, ['-z', '-P', '-e', combined])) {
      const rel = file.slice(dir.length);
      const allowed = ALLOWED.find((a) => a.path === rel);
      if (allowed && allowed.sha256 === sha256(file)) {
        allowedFound.push({ file: rel, why: allowed.why });
        continue;
      }
      const debian = debianFiles.get(rel);
      if (debian && debian.md5 === createHash('md5').update(readFileSync(file)).digest('hex')) {
        allowedFound.push({ file: rel, why: `unchanged file of the Debian package ${debian.pkg} (dpkg's md5sum matches): its own built-in test vectors, public` });
        continue;
      }
      for (const m of await matches(file, ['-z', '-P', '-e', combined])) {
        if (m === 'AKIAIOSFODNN7EXAMPLE') continue; // AWS's documented example key id
        const pattern = SECRET_PATTERNS.find((p) => new RegExp(p.regex.replace('(?<![A-Z0-9])', '')).test(m));
        findings.push({ what: `${pattern?.name ?? 'secret pattern'} (${m.slice(0, 28).replace(/\s+/g, ' ')}...)`, layer, file: rel });
      }
    }
    const files = await run('find', [dir, '-type', 'f'], { allowFail: true });
    for (const file of files.stdout.split('\n').filter(Boolean)) {
      const rel = file.slice(dir.length);
      if (SECRET_FILES.test(rel)) findings.push({ what: 'credential file by name', layer, file: rel });
    }
  }
  return findings;
}

/** Every file the image's Debian packages installed, with dpkg's md5sum of it (from /var/lib/dpkg/info/*.md5sums). */
async function debianPackageFiles(image: string): Promise<Map<string, { pkg: string; md5: string }>> {
  const root = (await podman(['image', 'mount', image])).stdout.trim();
  const info = join(root, 'var', 'lib', 'dpkg', 'info');
  const files = new Map<string, { pkg: string; md5: string }>();
  for (const name of existsSync(info) ? readdirSync(info).filter((n) => n.endsWith('.md5sums')) : []) {
    const pkg = name.replace(/(:[a-z0-9]+)?\.md5sums$/, '');
    for (const line of readFileSync(join(info, name), 'utf8').split('\n')) {
      const m = /^([0-9a-f]{32}) {2}(.+)$/.exec(line);
      if (m) files.set(`/${m[2]}`, { pkg, md5: m[1]! });
    }
  }
  return files;
}

async function hygiene(image: string) {
  const [inspect] = JSON.parse((await podman(['image', 'inspect', image])).stdout) as ImageInspect[];
  const history = (await podman(['history', '--no-trunc', '--format', '{{.CreatedBy}}', image])).stdout;
  const dirs = [inspect!.GraphDriver.Data.UpperDir, ...(inspect!.GraphDriver.Data.LowerDir ?? '').split(':')].filter((d): d is string => !!d && existsSync(d));
  const fixed = [...hostSecretValues(), ...buildCaMarkers()];
  const configText = JSON.stringify(inspect!.Config) + history;
  const configFindings = fixed.filter(({ value }) => configText.includes(value)).map(({ name }) => name);
  const envNames = (inspect!.Config.Env ?? []).map((e) => e.split('=')[0]!).filter((n) => /SECRET|PASSWORD|TOKEN|AWS_ACCESS_KEY_ID/i.test(n));
  const t0 = performance.now();
  const allowedFound: Array<{ file: string; why: string }> = [];
  const layerFindings = await grepLayers(dirs, fixed, allowedFound, await debianPackageFiles(image));
  return {
    user: inspect!.Config.User ?? '',
    nonRootNumericUser: /^[1-9]\d*(:\d+)?$/.test(inspect!.Config.User ?? ''),
    healthcheck: inspect!.Healthcheck?.Test ?? inspect!.Config.Healthcheck?.Test ?? null,
    stopSignal: inspect!.Config.StopSignal ?? 'SIGTERM (default)',
    layers: inspect!.RootFS.Layers.length,
    layerDirsGrepped: dirs.length,
    secretsLookedFor: fixed.map((f) => f.name).concat(SECRET_PATTERNS.map((p) => p.name), ['credential files by name']),
    secretEnvNamesInConfig: envNames,
    secretValuesInConfigOrHistory: configFindings,
    secretsInLayers: layerFindings,
    publicTestKeysAllowed: allowedFound,
    grepSeconds: (performance.now() - t0) / 1000,
  };
}

// --- workers -------------------------------------------------------------------------------------

interface StackEnv {
  temporalAddress: string;
  s3Endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
}

function workerEnvironment(stack: StackEnv, home: string): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: stack.temporalAddress,
    TEMPORAL_NAMESPACE: 'default',
    DENSEPIPE_S3_ENDPOINT: stack.s3Endpoint,
    AWS_ACCESS_KEY_ID: stack.accessKeyId,
    AWS_SECRET_ACCESS_KEY: stack.secretAccessKey,
    AWS_REGION: 'us-east-1',
    DENSEPIPE_BACKEND: 'tensorflow',
    DENSEPIPE_HOME: home,
    NODE_ENV: 'production',
  };
}

interface ProcessWorker {
  queue: 'cpu' | 'gpu';
  child: ChildProcess;
  log: string;
  readySeconds: number;
}

async function startProcessWorker(appDir: string, queue: 'cpu' | 'gpu', env: Record<string, string>, logDir: string): Promise<ProcessWorker> {
  const log = join(logDir, `process-${queue}.log`);
  const out = openSync(log, 'a');
  const t0 = performance.now();
  // PATH etc. from this process; everything densepipe reads is set explicitly.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TEMPORAL_|DENSEPIPE_|AWS_)/.test(k)));
  const child = spawn(process.execPath, [join(appDir, 'bin', 'densepipe.js'), 'worker', '--queue', queue], { cwd: appDir, env: { ...base, ...env }, stdio: ['ignore', out, out] });
  await waitFor(`the ${queue} worker process`, async () => {
    if (child.exitCode !== null) throw new Error(`the ${queue} worker process exited ${child.exitCode}; log ${log}`);
    return readFileSync(log, 'utf8').includes('worker ready') ? true : undefined;
  }, 180_000, 100).catch((err) => {
    if (child.exitCode !== null) throw new Error(`the ${queue} worker process exited ${child.exitCode}:\n${readFileSync(log, 'utf8').slice(-3000)}`);
    throw err;
  });
  return { queue, child, log, readySeconds: (performance.now() - t0) / 1000 };
}

async function stopProcessWorker(w: ProcessWorker): Promise<void> {
  if (w.child.exitCode !== null) return;
  const exited = new Promise((r) => w.child.once('exit', r));
  w.child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 40_000))]);
  if (w.child.exitCode === null) w.child.kill('SIGKILL');
}

interface ContainerWorker {
  queue: 'cpu' | 'gpu';
  name: string;
  readySeconds: number;
}

/** `podman run` of the image as one worker; ready = its "worker ready" line. Secrets go in by name (-e NAME), never on the command line. */
async function startContainerWorker(image: string, queue: 'cpu' | 'gpu', name: string, env: Record<string, string>): Promise<ContainerWorker> {
  const t0 = performance.now();
  const args = ['run', '-d', '--name', name, '--network', 'host', '--read-only', '--tmpfs', '/tmp:rw,size=4g', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', '--stop-timeout', '40'];
  for (const key of Object.keys(env)) args.push('-e', key);
  args.push(image, 'worker', '--queue', queue);
  await podman(args, { env: { ...env, DENSEPIPE_HOME: '/tmp/densepipe' } });
  await waitFor(`the ${queue} worker container`, async () => {
    const logs = await podman(['logs', name], { allowFail: true });
    if (`${logs.stdout}${logs.stderr}`.includes('worker ready')) return true;
    const state = (await podman(['inspect', '--format', '{{.State.Status}}', name], { allowFail: true })).stdout.trim();
    if (state === 'exited') throw new Error(`container ${name} exited:\n${(logs.stdout + logs.stderr).slice(-3000)}`);
    return undefined;
  }, 180_000, 100);
  return { queue, name, readySeconds: (performance.now() - t0) / 1000 };
}

async function containerLogs(name: string): Promise<string> {
  const logs = await podman(['logs', name], { allowFail: true });
  return `${logs.stdout}${logs.stderr}`;
}

// --- runs ----------------------------------------------------------------------------------------

/**
 * Start a run with the image's own CLI (`densepipe run CONFIG --set store.uri=... --id ID --detach`,
 * from the mounted /app, so the config is parsed by the code the workers run) and wait for it here.
 */
async function startWithImageCli(appDir: string, configFile: string, storeUri: string, workflowId: string, env: Record<string, string>): Promise<void> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TEMPORAL_|DENSEPIPE_|AWS_)/.test(k)));
  await run(process.execPath, [join(appDir, 'bin', 'densepipe.js'), 'run', configFile, '--set', `store.uri=${storeUri}`, '--id', workflowId, '--detach'], { env: { ...base, ...env } });
  say(`run ${workflowId} started (store ${storeUri})`);
}

async function waitClosed(client: Client, workflowId: string, timeoutMs: number) {
  return waitFor(`run ${workflowId}`, async () => {
    const s = await describeRun(client, workflowId);
    return s.status === 'RUNNING' ? undefined : s;
  }, timeoutMs, 2000);
}

async function runToCompletion(client: Client, appDir: string, configFile: string, storeUri: string, workflowId: string, env: Record<string, string>, timeoutMs: number): Promise<{ workflowId: string; wallSeconds: number; historyWallSeconds: number }> {
  const t0 = performance.now();
  await startWithImageCli(appDir, configFile, storeUri, workflowId, env);
  const status = await waitClosed(client, workflowId, timeoutMs);
  const wallSeconds = (performance.now() - t0) / 1000;
  if (status.status !== 'COMPLETED') throw new Error(`run ${workflowId} ${status.status}: ${status.failure ?? ''}`);
  const historyWallSeconds = (status.closeTime!.getTime() - status.startTime!.getTime()) / 1000;
  say(`run ${workflowId} completed in ${historyWallSeconds.toFixed(1)} s`);
  return { workflowId, wallSeconds, historyWallSeconds };
}

// --- artifacts -----------------------------------------------------------------------------------

/** Leaf paths where two JSON values differ (at most `limit`). */
function jsonDiff(a: unknown, b: unknown, path = '', out: string[] = [], limit = 12): string[] {
  if (out.length >= limit) return out;
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
    for (const k of keys) jsonDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], Array.isArray(a) ? `${path}[${k}]` : path ? `${path}.${k}` : k, out, limit);
  } else if (JSON.stringify(a) !== JSON.stringify(b)) out.push(path || '(root)');
  return out;
}

/** Where two safetensors files differ: their header's fields (metadata included) and which tensors' bytes. */
function safetensorsDiff(x: Uint8Array, y: Uint8Array): string[] {
  const read = (b: Uint8Array) => {
    const n = Number(Buffer.from(b.buffer, b.byteOffset, 8).readBigUInt64LE(0));
    return { header: JSON.parse(Buffer.from(b.subarray(8, 8 + n)).toString('utf8')) as Record<string, { data_offsets?: [number, number] }>, body: b.subarray(8 + n) };
  };
  const a = read(x);
  const b = read(y);
  const out: string[] = [];
  const metaA = a.header.__metadata__;
  const metaB = b.header.__metadata__;
  for (const field of jsonDiff(metaA ?? {}, metaB ?? {})) out.push(`__metadata__.${field}`);
  for (const name of Object.keys(a.header)) {
    if (name === '__metadata__') continue;
    const ra = a.header[name]?.data_offsets;
    const rb = b.header[name]?.data_offsets;
    if (!ra || !rb) out.push(`${name} (only in one)`);
    else if (Buffer.compare(a.body.subarray(ra[0], ra[1]), b.body.subarray(rb[0], rb[1])) !== 0) out.push(`tensor ${name}`);
  }
  return out.length > 12 ? [...out.slice(0, 12), `... ${out.length - 12} more`] : out;
}

/** stages/<stage>/<hash>/... and checkpoints/<stage>/<hash>/... → the stage; runs/<id>/... → "run". */
function stageOf(key: string): string {
  const [top, stage] = key.split('/');
  return top === 'stages' || top === 'checkpoints' ? `${top === 'checkpoints' ? 'checkpoint:' : ''}${stage}` : top === 'runs' ? 'run report' : top!;
}

async function compareArtifacts(uriA: string, uriB: string, runA: string, runB: string) {
  const a = openStore(uriA);
  const b = openStore(uriB);
  // Run reports live under runs/<workflow-id>/: compare them with the run id mapped.
  const norm = (key: string, runId: string) => key.replace(`runs/${runId}/`, 'runs/<run>/');
  const keysA = new Map((await a.list('')).map((k) => [norm(k, runA), k]));
  const keysB = new Map((await b.list('')).map((k) => [norm(k, runB), k]));
  const onlyA = [...keysA.keys()].filter((k) => !keysB.has(k));
  const onlyB = [...keysB.keys()].filter((k) => !keysA.has(k));
  const common = [...keysA.keys()].filter((k) => keysB.has(k)).sort();
  const identical: string[] = [];
  const differing: Array<{ key: string; stage: string; kind: string; bytes: [number, number]; fields?: string[] }> = [];
  for (const key of common) {
    const [x, y] = await Promise.all([a.get(keysA.get(key)!), b.get(keysB.get(key)!)]);
    const hx = createHash('sha256').update(x).digest('hex');
    const hy = createHash('sha256').update(y).digest('hex');
    if (hx === hy) {
      identical.push(key);
      continue;
    }
    const entry: (typeof differing)[number] = { key, stage: stageOf(key), kind: key.split('.').pop()!, bytes: [x.length, y.length] };
    if (key.endsWith('.safetensors')) {
      try {
        entry.fields = safetensorsDiff(x, y);
      } catch {
        /* not a safetensors file after all */
      }
    } else if (key.endsWith('.json')) {
      try {
        const textA = Buffer.from(x).toString('utf8').replaceAll(runA, '<run>');
        const textB = Buffer.from(y).toString('utf8').replaceAll(runB, '<run>');
        entry.fields = textA === textB ? ['(only the run id)'] : jsonDiff(JSON.parse(textA), JSON.parse(textB));
      } catch {
        /* not JSON after all */
      }
    }
    differing.push(entry);
  }
  const byStage: Record<string, { identical: number; differing: number }> = {};
  for (const key of identical) (byStage[stageOf(key)] ??= { identical: 0, differing: 0 }).identical++;
  for (const d of differing) (byStage[d.stage] ??= { identical: 0, differing: 0 }).differing++;
  return { files: common.length, identical: identical.length, differing, onlyInProcessRun: onlyA, onlyInContainerRun: onlyB, byStage };
}

// --- SIGTERM -------------------------------------------------------------------------------------

/** Long enough pretraining to be stopped in the middle; checkpoints every 20 steps. */
const SIGTERM_CONFIG = {
  name: 'containers-sigterm',
  data: { source: { kind: 'synthetic', size: 'tiny', seed: 0 }, shardSamples: 32 },
  proposals: { preset: 'updetr-random' },
  pretrain: { method: 'densecl', backbone: { arch: 'resnet-tiny' }, batchSize: 16, steps: 400, imageSize: 32, args: { queueSize: 64 }, checkpointEvery: { steps: 20 } },
  evaluation: { tasks: ['knn'], imageSize: 32 },
  baselines: { supervised: false },
  orchestration: { heartbeatTimeoutSeconds: 10 },
};

async function sigtermCheck(client: Client, appDir: string, image: string, env: Record<string, string>, cliEnv: Record<string, string>, gpuName: string, prefix: string, logDir: string) {
  const configFile = join(logDir, 'sigterm.yaml');
  writeFileSync(configFile, stringify(SIGTERM_CONFIG));
  const handle = { workflowId: `containers-sigterm-${randomBytes(3).toString('hex')}` };
  await startWithImageCli(appDir, configFile, prefix, handle.workflowId, cliEnv);
  say(`SIGTERM check: run ${handle.workflowId}; waiting for the gpu container to be pretraining past a checkpoint`);
  const before = await waitFor('pretraining to be under way', async () => {
    const s = await describeRun(client, handle.workflowId);
    if (s.status !== 'RUNNING') throw new Error(`run ended early: ${s.status} ${s.failure ?? ''}`);
    const p = s.pending.find((x) => x.activityType === 'pretrain');
    const step = (p?.heartbeat as { step?: number } | undefined)?.step;
    return p && typeof step === 'number' && step >= 40 ? { step, attempt: p.attempt } : undefined;
  }, 600_000, 1000);
  say(`pretraining at step ${before.step}: podman stop ${gpuName} (SIGTERM; SIGKILL after 40 s)`);
  const t0 = performance.now();
  await podman(['stop', '-t', '40', gpuName]);
  const stopSeconds = (performance.now() - t0) / 1000;
  const exitCode = Number((await podman(['inspect', '--format', '{{.State.ExitCode}}', gpuName])).stdout.trim());
  const logs = await containerLogs(gpuName);
  const shutdownLines = logs.split('\n').filter((l) => /state changed|shutdown|DRAINING|STOPPED|Worker state/i.test(l)).map((l) => {
    try {
      const j = JSON.parse(l) as { message?: string; state?: string };
      return `${j.message ?? ''}${j.state ? ` ${j.state}` : ''}`;
    } catch {
      return l.slice(0, 200);
    }
  });
  await podman(['rm', '-f', gpuName], { allowFail: true });
  const replacement = await startContainerWorker(image, 'gpu', `${gpuName}-2`, env);
  const resumedAt = await waitFor('the new gpu worker to take the pretraining', async () => {
    const m = /resumed at step (\d+)/.exec(await containerLogs(replacement.name));
    return m ? Number(m[1]) : undefined;
  }, 180_000, 1000).catch(() => null);
  const t1 = performance.now();
  const status = await waitClosed(client, handle.workflowId, 900_000);
  const history = await client.workflow.getHandle(handle.workflowId).fetchHistory();
  const events = historyEvents(history);
  const pretrainStarted = events.filter((e) => e.kind === 'started' && e.activity === 'pretrain');
  const pretrainCompleted = events.some((e) => e.kind === 'completed' && e.activity === 'pretrain');
  const attempt = pretrainStarted.at(-1)?.attempt ?? 0;
  await podman(['rm', '-f', replacement.name], { allowFail: true });
  return {
    workflowId: handle.workflowId,
    stepWhenStopped: before.step,
    resumedAtStep: resumedAt,
    stopSeconds,
    exitCode,
    workerShutdownLog: shutdownLines.slice(0, 8),
    runStatus: status.status,
    pretrainCompleted,
    pretrainFinalAttempt: attempt,
    pretrainRanOn: pretrainStarted.at(-1)?.worker ?? null,
    outcome: status.status === 'COMPLETED' && pretrainCompleted ? (attempt >= 2 ? 'retried on the new worker and finished' : 'finished within the drain') : 'LOST',
    secondsToCompletionAfterRestart: (performance.now() - t1) / 1000,
  };
}

// --- main ----------------------------------------------------------------------------------------

export async function main(args: string[]): Promise<BenchResult> {
  const flag = (name: string) => args.includes(name);
  const tag = process.env.DENSEPIPE_IMAGE_TAG ?? (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const image = `${process.env.DENSEPIPE_REGISTRY ?? 'localhost'}/densepipe-cpu-worker:${tag}`;
  const gpuImage = flag('--gpu-image') ? args[args.indexOf('--gpu-image') + 1]! : image;
  const stamp = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(2).toString('hex')}`;
  const bucket = 's3://densepipe-bench';
  const prefix = `${bucket}/containers-${stamp}`;
  const logDir = join(tmpdir(), `densepipe-containers-${stamp}`);
  mkdirSync(logDir, { recursive: true });
  const notes: string[] = [];
  const loads: Record<string, { mean: number; max: number; samples: number }> = {};

  say('images: bash scripts/images.sh all');
  let sampler = new LoadSampler();
  const images = await buildImages(flag('--no-build'));
  loads.images = sampler.stop();

  say(`hygiene: config and layers of ${image}`);
  sampler = new LoadSampler();
  const hygieneResult = await hygiene(image);
  const gpuHygiene = gpuImage !== image ? await hygiene(gpuImage) : null;
  loads.hygiene = sampler.stop();

  const env = await isolatedHome('containers');
  const savedEnv = { ...process.env };
  process.env.DENSEPIPE_HOME = env.home;
  delete process.env.TEMPORAL_ADDRESS;
  delete process.env.DENSEPIPE_S3_ENDPOINT;
  const containers: string[] = [];
  let mounted = false;
  const processWorkers: ProcessWorker[] = [];
  try {
    const services = await up({ temporalPort: env.temporalPort, s3Port: env.s3Port, workers: false });
    process.env.DENSEPIPE_S3_ENDPOINT = services.s3!.endpoint;
    process.env.AWS_ACCESS_KEY_ID = services.s3!.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = services.s3!.secretAccessKey;
    process.env.AWS_REGION = 'us-east-1';
    const stack: StackEnv = { temporalAddress: services.temporal!.address, s3Endpoint: services.s3!.endpoint, accessKeyId: services.s3!.accessKeyId, secretAccessKey: services.s3!.secretAccessKey };
    const { client, close } = await connectClient();
    try {
      const processUri = `${prefix}/process`;
      const containerUri = `${prefix}/container`;
      let processRun: Awaited<ReturnType<typeof runToCompletion>> | null = null;
      const ready: Record<string, number> = {};

      // The image's own tree: its CLI starts the runs, and the process-based workers run it.
      const mount = (await podman(['image', 'mount', image])).stdout.trim();
      mounted = true;
      const appDir = join(mount, 'app');
      const configFile = flag('--config') ? args[args.indexOf('--config') + 1]! : join(appDir, 'configs', 'demo.yaml');
      const configName = (parse(readFileSync(configFile, 'utf8')) as { name?: string }).name ?? 'run';
      const cliEnv = workerEnvironment(stack, join(env.home, 'cli'));
      if (!flag('--no-process')) {
        say(`process-based run: workers from ${appDir} (the image's files), store ${processUri}`);
        sampler = new LoadSampler();
        for (const queue of ['cpu', 'gpu'] as const) {
          const w = await startProcessWorker(appDir, queue, workerEnvironment(stack, join(env.home, `process-${queue}`)), logDir);
          processWorkers.push(w);
          ready[`process${queue === 'cpu' ? 'Cpu' : 'Gpu'}Seconds`] = w.readySeconds;
        }
        processRun = await runToCompletion(client, appDir, configFile, processUri, `${configName}-process-${stamp}`, cliEnv, 3 * 3600_000);
        for (const w of processWorkers) await stopProcessWorker(w);
        loads.processRun = sampler.stop();
      }

      say(`containerized run: ${image} as the cpu worker, ${gpuImage} as the gpu worker, store ${containerUri}`);
      sampler = new LoadSampler();
      const workerEnv = workerEnvironment(stack, '/tmp/densepipe');
      const cpuName = `densepipe-bench-cpu-${stamp}`;
      const gpuName = `densepipe-bench-gpu-${stamp}`;
      containers.push(cpuName, gpuName, `${gpuName}-2`);
      const cpu = await startContainerWorker(image, 'cpu', cpuName, workerEnv);
      const gpu = await startContainerWorker(gpuImage, 'gpu', gpuName, workerEnv);
      ready.containerCpuSeconds = cpu.readySeconds;
      ready.containerGpuSeconds = gpu.readySeconds;
      // What the container is: the user it runs as, that its root file system is read-only, its health.
      const uid = (await podman(['exec', cpuName, 'node', '-e', 'process.stdout.write(`${process.getuid()}:${process.getgid()}`)'])).stdout.trim();
      const writeRoot = await podman(['exec', cpuName, 'node', '-e', "require('fs').writeFileSync('/app/x', 'x')"], { allowFail: true });
      const writeTmp = await podman(['exec', cpuName, 'node', '-e', "require('fs').writeFileSync('/tmp/x', 'x')"], { allowFail: true });
      const health = await podman(['healthcheck', 'run', cpuName], { allowFail: true });
      const containerFacts = {
        runsAs: uid,
        rootFsReadOnly: writeRoot.code !== 0 && /EROFS|read-only/i.test(writeRoot.stderr),
        tmpWritable: writeTmp.code === 0,
        healthcheck: health.code === 0 ? 'healthy' : `exit ${health.code}: ${(health.stdout + health.stderr).trim().slice(0, 300)}`,
      };
      const containerRun = await runToCompletion(client, appDir, configFile, containerUri, `${configName}-container-${stamp}`, cliEnv, 3 * 3600_000);
      loads.containerRun = sampler.stop();

      let comparison = null;
      if (processRun) {
        say('comparing every artifact of the two runs');
        comparison = await compareArtifacts(processUri, containerUri, processRun.workflowId, containerRun.workflowId);
      }

      let sigterm = null;
      if (!flag('--no-sigterm')) {
        sampler = new LoadSampler();
        sigterm = await sigtermCheck(client, appDir, gpuImage, workerEnv, cliEnv, gpuName, `${prefix}/sigterm`, logDir);
        loads.sigterm = sampler.stop();
      }

      const sizeOf = (name: string) => {
        const entry = Object.entries(images.state.images ?? {}).find(([k]) => k === name);
        return entry ? Math.round(entry[1].bytes / 1e6) : null;
      };
      const builds = images.state.builds ?? {};
      const rows: BenchResult['rows'] = [
        {
          case: 'image builds from nothing (s): images.sh all --rebuild --no-cache',
          ours: { base: builds.base?.cold?.seconds ?? NaN, node: builds.node?.cold?.seconds ?? NaN, cpuWorker: builds.cpu?.cold?.seconds ?? NaN },
          reference: null,
          speedup: null,
        },
        {
          case: 'images.sh all again, nothing changed (s)',
          ours: { node: builds.node?.cached?.seconds ?? NaN, cpuWorker: builds.cpu?.cached?.seconds ?? NaN, ...(images.seconds !== null ? { wholeScriptThisRun: images.seconds } : {}) },
          reference: null,
          speedup: null,
        },
        {
          case: 'image sizes (MB)',
          ours: Object.fromEntries(Object.keys(images.state.images ?? {}).map((k) => [k.replace(/^.*\//, ''), sizeOf(k) ?? NaN])),
          reference: null,
          speedup: null,
        },
        {
          case: 'worker start to ready (s): container vs process',
          ours: { cpu: ready.containerCpuSeconds!, gpu: ready.containerGpuSeconds! },
          reference: processRun ? { cpu: ready.processCpuSeconds!, gpu: ready.processGpuSeconds! } : null,
          speedup: processRun ? ready.processCpuSeconds! / ready.containerCpuSeconds! : null,
        },
        {
          case: `${configName} run wall time (s): containers vs processes`,
          ours: { wallSeconds: containerRun.historyWallSeconds, loadAvg1m: loads.containerRun.mean },
          reference: processRun ? { wallSeconds: processRun.historyWallSeconds, loadAvg1m: loads.processRun!.mean } : null,
          speedup: processRun ? processRun.historyWallSeconds / containerRun.historyWallSeconds : null,
        },
      ];
      if (comparison) {
        rows.push({
          case: 'artifacts: container run vs process run',
          ours: { files: comparison.files, byteIdentical: comparison.identical, differing: comparison.differing.length, onlyInOne: comparison.onlyInProcessRun.length + comparison.onlyInContainerRun.length },
          reference: null,
          speedup: null,
        });
      }
      notes.push(
        gpuImage === image
          ? `the gpu queue ran on the cpu image (${image} worker --queue gpu) on this CPU-only machine`
          : `the gpu queue ran on ${gpuImage} (the CUDA build of libtensorflow) on this machine's CPU: there is no GPU here; the process run's gpu worker used the cpu image's CPU build`,
        'process-based run = the image\'s own /app (podman image mount) run by this machine\'s Node as worker processes, so both runs execute the same files; only the container differs',
        `the machine is shared and loaded (mean 1-minute load average ${loads.processRun?.mean ?? '–'} during the process run, ${loads.containerRun.mean} during the container run, on ${cpus().length} cores): wall times carry that noise`,
        'run wall time = the workflow\'s start-to-close time in the Temporal history',
      );
      return {
        name: gpuImage === image ? 'containers' : 'containers-gpu-image',
        gpuImage,
        gpuHygiene,
        config: flag('--config') ? args[args.indexOf('--config') + 1]! : 'configs/demo.yaml (the image\'s copy)',
        image,
        imageId: images.state.images?.[image]?.id ?? null,
        imageSource: (await podman(['image', 'inspect', '--format', '{{ index .Labels "densepipe.source" }}', image])).stdout.trim(),
        builds,
        storePrefix: prefix,
        rows,
        hygiene: hygieneResult,
        container: containerFacts,
        runs: { process: processRun, container: containerRun },
        comparison,
        sigterm,
        load: loads,
        logs: logDir,
        notes,
      };
    } finally {
      await close();
    }
  } finally {
    for (const w of processWorkers) await stopProcessWorker(w).catch(() => {});
    for (const name of containers) {
      const logs = await containerLogs(name).catch(() => '');
      if (logs) writeFileSync(join(logDir, `${name}.log`), logs);
      await podman(['rm', '-f', '-t', '40', name], { allowFail: true });
    }
    if (mounted) await podman(['image', 'unmount', image], { allowFail: true });
    await down();
    process.env = savedEnv;
    env.cleanup();
  }
}
