/**
 * Chaos benchmark: does a run survive a crash of any one process of the local stack, plus a flaky
 * S3, and end with exactly the artifacts of an uninterrupted run? (issue 17, item 3)
 *
 *   npm run bench -- chaos [runs=10] [rate=0.1] [seed=1] [steps=40] [references=2] [timeout=900]
 *
 * Against the real local services, as `densepipe up` starts them (Temporal dev server on SQLite,
 * versitygw, one cpu and one gpu worker process from dist/), with the workers' S3 endpoint pointed
 * at a fault proxy on loopback (bench/_s3-fault-proxy.ts).
 * 1. `references` uninterrupted runs of a small config (40 pretraining steps, the tiny synthetic
 *    dataset), each in its own store prefix, with the proxy passing everything through: the first
 *    is the reference; a file whose bytes differ between two of them is not deterministic by nature
 *    (timestamps, timings) and is compared by presence only.
 * 2. `runs` runs of the same config, each in its own prefix, with the proxy answering `rate` of the
 *    requests with HTTP 500, HTTP 503, a connection reset or a 0.5-3 s delay, and one fault at a
 *    random moment (uniform over 5-85 % of the reference's wall time): the gpu worker or the cpu
 *    worker killed with SIGKILL (and started again after 2 s), or the Temporal dev server or the
 *    S3 server killed with SIGKILL and started again after 2 s on the same port and data.
 * Per run: completed or not (and the failure), wall time, activity attempts, and a sha256 of every
 * object under stages/shard (data), stages/proposals and stages/pretrain (checkpoints, backbone)
 * against the reference: equal, differing, missing or extra.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Client } from '@temporalio/client';
import { LOCAL_S3_CREDENTIALS, projectRoot, readServices, type LocalServices } from '../cli/env.js';
import { down, isAlive, startS3, startTemporal, up, workerEnv } from '../cli/services.js';
import { describeRun, startRun, type RunStatus } from '../cli/runs.js';
import { connectClient } from '../cli/client.js';
import { parseRunConfig, type RunConfig } from '../core/config.js';
import { isolatedHome, waitFor } from '../test/helpers/servers.js';
import { mulberry32, startS3FaultProxy } from './_s3-fault-proxy.js';
import type { BenchResult } from './_run.js';

const BUCKET = 'densepipe-chaos';
const FAULTS = ['kill-gpu-worker', 'kill-cpu-worker', 'restart-temporal', 'restart-s3'] as const;
type Fault = (typeof FAULTS)[number];
/** Artifact classes compared, by the stage folder they live in (stages/NAME/ and checkpoints/NAME/). */
const CLASSES = { 'data-shard': 'data', proposals: 'proposals', pretrain: 'checkpoint/backbone' } as const;
/** Fields that hold a time, a timing, or the attempt (and checkpoint) that wrote the file: left out of the content hash of JSON and safetensors metadata. */
const VOLATILE = /^(attempt|resumedFromStep|startedAt|finishedAt|savedAt|createdAt|computeSeconds|imagesPerSecond|seconds|throughput|wallSeconds|elapsedSeconds)$/;

function option(args: string[], name: string, fallback: number): number {
  const a = args.find((x) => x.startsWith(`${name}=`)) ?? (args.includes(`--${name}`) ? `${name}=${args[args.indexOf(`--${name}`) + 1]}` : undefined);
  if (a === undefined) return fallback;
  const v = Number(a.slice(name.length + 1));
  if (!Number.isFinite(v)) throw new Error(`chaos: ${name}= must be a number, got '${a}'`);
  return v;
}

function chaosConfig(prefix: string, steps: number): RunConfig {
  return parseRunConfig(
    {
      name: `chaos-${prefix}`,
      store: { uri: `s3://${BUCKET}/${prefix}` },
      data: { source: { kind: 'synthetic', size: 'tiny', seed: 0 }, shardSamples: 32 },
      proposals: { preset: 'updetr-random' },
      pretrain: { method: 'densecl', backbone: { arch: 'resnet-tiny' }, batchSize: 16, steps, imageSize: 32, seed: 0, args: { queueSize: 64 }, checkpointEvery: { steps: 4 } },
      evaluation: { tasks: ['knn'], imageSize: 32 },
      baselines: { supervised: false },
      // A killed worker is noticed by its activity's heartbeat timeout: short, as in the e2e tests.
      orchestration: { heartbeatTimeoutSeconds: 10 },
    },
    `bench:chaos:${prefix}`,
  );
}

/** A JSON value without its volatile fields, with the run's own store prefix replaced (it names the run). */
function normalize(value: unknown, prefix: string): unknown {
  if (typeof value === 'string') {
    const s = value.split(`s3://${BUCKET}/${prefix}`).join(`s3://${BUCKET}/RUN`);
    if (/^[[{]/.test(s)) {
      try {
        return normalize(JSON.parse(s), prefix); // safetensors metadata holds JSON in strings
      } catch {
        return s;
      }
    }
    return s;
  }
  if (Array.isArray(value)) return value.map((v) => normalize(v, prefix));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).filter(([k]) => !VOLATILE.test(k)).map(([k, v]) => [k, normalize(v, prefix)]));
  return value;
}

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/**
 * Two hashes of a file: `raw` (its bytes) and `content` (JSON and safetensors metadata without
 * times and timings, and without the run's own prefix; tensors byte for byte).
 */
function hashFile(path: string, prefix: string): { raw: string; content: string } {
  const bytes = readFileSync(path);
  const raw = sha(bytes);
  if (path.endsWith('.json')) {
    try {
      return { raw, content: sha(JSON.stringify(normalize(JSON.parse(bytes.toString('utf8')), prefix))) };
    } catch {
      return { raw, content: raw };
    }
  }
  if (path.endsWith('.safetensors') && bytes.length >= 8) {
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
    const { __metadata__: meta, ...tensors } = header;
    return { raw, content: sha(JSON.stringify({ tensors, meta: normalize(meta ?? {}, prefix) }) + sha(bytes.subarray(8 + n))) };
  }
  return { raw, content: raw };
}

/** Hashes of every file under the prefix's stage and checkpoint folders, by key relative to the prefix. */
function hashArtifacts(s3Root: string, prefix: string): Map<string, { raw: string; content: string }> {
  const base = join(s3Root, BUCKET, prefix);
  const out = new Map<string, { raw: string; content: string }>();
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      if (name.startsWith('.')) continue; // the server's own temporary files
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else {
        // TensorBoard event files are named by the wall clock and the attempt: the key leaves both out.
        let key = relative(base, p).replace(/events\.out\.tfevents\.\d+\.(.*)\.a\d+\./, 'events.out.tfevents.TIME.$1.aN.');
        for (let n = 2; out.has(key); n++) key = `${key.replace(/#\d+$/, '')}#${n}`;
        out.set(key, hashFile(p, prefix));
      }
    }
  };
  for (const stage of Object.keys(CLASSES)) for (const top of ['stages', 'checkpoints']) walk(join(base, top, stage));
  return out;
}

const classOf = (key: string) => CLASSES[key.split('/')[1] as keyof typeof CLASSES] ?? 'other';

/**
 * A frozen copy of the built code (bin/, dist/, package.json; node_modules linked), so a worker
 * started again mid-bench runs the same code as the one it replaces even while dist/ is rebuilt.
 */
function snapshotCode(home: string): string {
  const root = projectRoot();
  const snap = join(home, 'code');
  mkdirSync(snap, { recursive: true });
  for (const f of ['package.json', 'bin', 'dist']) cpSync(join(root, f), join(snap, f), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(snap, 'node_modules'));
  return snap;
}

/** `startWorker` of cli/services.ts, from the frozen code. */
async function startFrozenWorker(code: string, services: LocalServices, dir: string, queue: 'cpu' | 'gpu'): Promise<number> {
  const logFile = join(dir, 'logs', `worker-${queue}.log`);
  const mark = existsSync(logFile) ? readFileSync(logFile, 'utf8').length : 0;
  const child = spawn(process.execPath, [join(code, 'bin', 'densepipe.js'), 'worker', '--queue', queue], { detached: true, stdio: ['ignore', openSync(logFile, 'a'), openSync(logFile, 'a')], env: workerEnv(services) });
  child.unref();
  const pid = child.pid!;
  services.workers = [...(services.workers ?? []).filter((w) => w.queue !== queue || isAlive(w.pid)), { queue, pid, log: logFile }];
  await waitFor(`the ${queue} worker`, async () => (readFileSync(logFile, 'utf8').slice(mark).includes('worker ready') ? true : isAlive(pid) ? undefined : Promise.reject(new Error('exited'))), 120_000, 500);
  return pid;
}

type Hashes = Map<string, { raw: string; content: string }>;

interface Comparison {
  /** Byte for byte equal to the reference. */
  bitIdentical: number;
  /** Equal once times and timings are left out (they differ between two uninterrupted runs too). */
  identicalButTimings: string[];
  differ: string[];
  missing: string[];
  extra: string[];
  /** Present, not compared: differs between two uninterrupted runs even without timings. */
  nondeterministicPresent: number;
}

function compare(reference: Hashes, run: Hashes, nondeterministic: Set<string>): Record<string, Comparison> {
  const out: Record<string, Comparison> = {};
  const get = (k: string) => (out[classOf(k)] ??= { bitIdentical: 0, identicalButTimings: [], differ: [], missing: [], extra: [], nondeterministicPresent: 0 });
  for (const [k, h] of reference) {
    const c = get(k);
    const mine = run.get(k);
    if (mine === undefined) c.missing.push(k);
    else if (mine.raw === h.raw) c.bitIdentical++;
    else if (nondeterministic.has(k)) c.nondeterministicPresent++;
    else if (mine.content === h.content) c.identicalButTimings.push(k);
    else c.differ.push(k);
  }
  for (const k of run.keys()) if (!reference.has(k)) get(k).extra.push(k);
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const wallSeconds = (s: RunStatus) => (s.closeTime && s.startTime ? (s.closeTime.getTime() - s.startTime.getTime()) / 1000 : NaN);

export async function main(args: string[]): Promise<BenchResult> {
  const runs = option(args, 'runs', 10);
  const rate = option(args, 'rate', 0.1);
  const seed = option(args, 'seed', 1);
  const steps = option(args, 'steps', 40);
  const references = Math.max(1, option(args, 'references', 2));
  const timeoutSeconds = option(args, 'timeout', 900);
  const random = mulberry32(seed * 7919 + 17);
  const log = (line: string) => process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

  const savedEnv = { ...process.env };
  const env = await isolatedHome('chaos');
  process.env.DENSEPIPE_HOME = env.home;
  delete process.env.TEMPORAL_ADDRESS;
  let client: Client | undefined;
  let keepHome = false;
  let closeClient = async () => {};
  const proxy = await startS3FaultProxy({ upstreamPort: env.s3Port, rate: 0, seed });
  try {
    const services = await up({ temporalPort: env.temporalPort, s3Port: env.s3Port, workers: false });
    // Workers (started below, with this environment) and this process reach S3 through the proxy.
    process.env.DENSEPIPE_S3_ENDPOINT = proxy.endpoint;
    process.env.AWS_ACCESS_KEY_ID = LOCAL_S3_CREDENTIALS.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = LOCAL_S3_CREDENTIALS.secretAccessKey;
    process.env.AWS_REGION ??= 'us-east-1';
    const save = (s: LocalServices) => writeFileSync(join(env.home, 'services.json'), JSON.stringify(s, null, 2));
    const code = snapshotCode(env.home);
    for (const q of ['cpu', 'gpu'] as const) await startFrozenWorker(code, services, env.home, q);
    save(services);
    const s3Root = services.s3!.root;
    const connect = async () => {
      await closeClient();
      const c = await connectClient();
      client = c.client;
      closeClient = c.close;
    };
    await connect();

    const finish = (id: string) =>
      waitFor(
        `run ${id} to close`,
        async () => {
          const s = await describeRun(client!, id);
          return s.status === 'RUNNING' ? undefined : s;
        },
        timeoutSeconds * 1000,
        1000,
      ).catch((e: Error): RunStatus => ({ workflowId: id, runId: '', status: 'TIMED_OUT', pending: [], failure: e.message }));

    const attempts = async (id: string) => {
      const history = await client!.workflow.getHandle(id).fetchHistory();
      const byType = new Map<string, string>();
      const max: Record<string, number> = {};
      for (const ev of history.events ?? []) {
        const s = ev.activityTaskScheduledEventAttributes;
        if (s) byType.set(String(ev.eventId), s.activityType?.name ?? '?');
        const st = ev.activityTaskStartedEventAttributes;
        if (st) {
          const t = byType.get(String(st.scheduledEventId)) ?? '?';
          max[t] = Math.max(max[t] ?? 0, st.attempt ?? 1);
        }
      }
      return max; // the last attempt of each activity type (attempts of failed tries show here only if they were started)
    };

    // 1. Uninterrupted runs, no faults.
    const refHashes: Hashes[] = [];
    const refWall: number[] = [];
    for (let r = 0; r < references; r++) {
      const prefix = `reference-${r}`;
      log(`reference run ${r + 1}/${references}`);
      const status = await finish((await startRun(client!, chaosConfig(prefix, steps))).workflowId);
      if (status.status !== 'COMPLETED') throw new Error(`the uninterrupted run ${prefix} did not complete: ${status.status} ${status.failure ?? ''}`);
      refWall.push(wallSeconds(status));
      refHashes.push(hashArtifacts(s3Root, prefix));
      log(`  ${status.status} in ${refWall[r]!.toFixed(1)} s, ${refHashes[r]!.size} artifact files`);
    }
    const reference = refHashes[0]!;
    const nondeterministic = new Set<string>();
    const timingsOnly = new Set<string>(); // bytes differ between uninterrupted runs, content without timings does not
    for (const other of refHashes.slice(1)) {
      for (const [k, h] of reference) {
        const o = other.get(k);
        if (o === undefined || o.content !== h.content) nondeterministic.add(k);
        else if (o.raw !== h.raw) timingsOnly.add(k);
      }
      for (const k of other.keys()) if (!reference.has(k)) nondeterministic.add(`${k} (only in a later uninterrupted run)`);
    }
    const referenceWall = refWall.reduce((a, b) => a + b, 0) / refWall.length;

    // 2. Chaos runs.
    proxy.rate = rate;
    const results: Array<Record<string, unknown>> = [];
    for (let i = 0; i < runs; i++) {
      const fault: Fault = FAULTS[i % FAULTS.length]!;
      // Stratified: run i draws its moment uniformly within the i-th of `runs` equal slices of the
      // window, so the faults cover the whole run (sharding, proposals, pretraining, evaluation).
      const momentSeconds = referenceWall * (0.05 + (0.8 * (i + random())) / runs);
      const prefix = `chaos-${String(i).padStart(2, '0')}`;
      proxy.resetCounts();
      log(`run ${i + 1}/${runs}: ${fault} at ${momentSeconds.toFixed(1)} s`);
      const handle = await startRun(client!, chaosConfig(prefix, steps));
      const startedAt = Date.now();
      await sleep(momentSeconds * 1000);
      let during: string[] = [];
      let injected = true;
      try {
        const before = await describeRun(client!, handle.workflowId);
        injected = before.status === 'RUNNING';
        during = before.pending.map((a) => `${a.activityType}${a.heartbeat && typeof a.heartbeat === 'object' && 'step' in (a.heartbeat as object) ? `@step ${(a.heartbeat as { step: number }).step}` : ''} (attempt ${a.attempt})`);
      } catch (e) {
        during = [`(describe failed: ${(e as Error).message})`];
      }
      const s = readServices(env.home);
      const faultAt = (Date.now() - startedAt) / 1000;
      if (injected) {
        if (fault === 'kill-gpu-worker' || fault === 'kill-cpu-worker') {
          const queue = fault === 'kill-gpu-worker' ? 'gpu' : 'cpu';
          const w = s.workers!.find((x) => x.queue === queue && isAlive(x.pid))!;
          process.kill(w.pid, 'SIGKILL');
          await waitFor(`the ${queue} worker to die`, async () => (isAlive(w.pid) ? undefined : true), 10_000);
          await sleep(2000);
          await startFrozenWorker(code, s, env.home, queue);
        } else if (fault === 'restart-temporal') {
          const pid = s.temporal!.pid;
          process.kill(-pid, 'SIGKILL');
          await waitFor('the dev server to die', async () => (isAlive(pid) ? undefined : true), 10_000);
          await sleep(2000);
          delete s.temporal;
          await startTemporal(s, env.home, env.temporalPort, env.temporalPort + 1000);
          await connect();
        } else {
          const pid = s.s3!.pid;
          process.kill(-pid, 'SIGKILL');
          await waitFor('the S3 server to die', async () => (isAlive(pid) ? undefined : true), 10_000);
          await sleep(2000);
          delete s.s3;
          await startS3(s, env.home, env.s3Port);
        }
        save(s);
      }
      const status = await finish(handle.workflowId);
      const wall = status.status === 'COMPLETED' ? wallSeconds(status) : (Date.now() - startedAt) / 1000;
      const hashes = hashArtifacts(s3Root, prefix);
      const comparison = compare(reference, hashes, nondeterministic);
      const lost = Object.values(comparison).reduce((a, c) => a + c.missing.length, 0);
      const differ = Object.values(comparison).reduce((a, c) => a + c.differ.length, 0);
      const extra = Object.values(comparison).reduce((a, c) => a + c.extra.length, 0);
      const resumedFromStep = (() => {
        try {
          const dir = join(s3Root, BUCKET, prefix, 'stages', 'pretrain');
          const m = JSON.parse(readFileSync(join(dir, readdirSync(dir)[0]!, 'manifest.json'), 'utf8')) as { result?: { resumedFromStep?: number } };
          return m.result?.resumedFromStep ?? null;
        } catch {
          return null;
        }
      })();
      const row = {
        run: i,
        prefix,
        workflowId: handle.workflowId,
        fault,
        faultInjected: injected,
        faultAtSeconds: faultAt,
        pendingAtFault: during,
        status: status.status,
        failure: status.failure,
        wallSeconds: wall,
        pretrainResumedFromStep: resumedFromStep,
        attempts: await attempts(handle.workflowId).catch(() => ({})),
        proxy: { ...proxy.counts },
        artifacts: comparison,
        lostFiles: lost,
        extraFiles: extra,
        differingFiles: differ,
        identical: status.status === 'COMPLETED' && lost === 0 && differ === 0,
      };
      results.push(row);
      if (!row.identical) keepHome = true;
      log(`  ${status.status} in ${wall.toFixed(1)} s; pending at fault: ${during.join(', ') || '(none)'}; missing ${lost}, differing ${differ}, extra ${extra}; proxy ${JSON.stringify(proxy.counts)}${status.failure ? `; failure: ${status.failure}` : ''}`);
    }

    const completed = results.filter((r) => r.status === 'COMPLETED');
    const identical = results.filter((r) => r.identical).length;
    const medianOf = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    const chaosWall = completed.map((r) => r.wallSeconds as number);
    const byClass: Record<string, { files: number; bitIdenticalAcrossUninterruptedRuns: number; timingsOnly: string[]; nondeterministic: string[] }> = {};
    for (const k of reference.keys()) {
      const c = (byClass[classOf(k)] ??= { files: 0, bitIdenticalAcrossUninterruptedRuns: 0, timingsOnly: [], nondeterministic: [] });
      c.files++;
      if (nondeterministic.has(k)) c.nondeterministic.push(k);
      else if (timingsOnly.has(k)) c.timingsOnly.push(k);
      else c.bitIdenticalAcrossUninterruptedRuns++;
    }
    const proxyTotals = results.reduce<Record<string, number>>((acc, r) => {
      for (const [k, v] of Object.entries(r.proxy as Record<string, number>)) acc[k] = (acc[k] ?? 0) + v;
      return acc;
    }, {});
    return {
      name: 'chaos',
      options: { runs, rate, seed, steps, references, timeoutSeconds },
      rows: [
        {
          case: `uninterrupted runs (${references})`,
          ours: { meanWallSeconds: referenceWall, minWallSeconds: Math.min(...refWall), maxWallSeconds: Math.max(...refWall), artifactFiles: reference.size, nondeterministicFiles: nondeterministic.size },
          reference: null,
          speedup: null,
        },
        {
          case: `chaos runs (${runs}, S3 fault rate ${rate})`,
          ours: {
            completed: completed.length,
            identicalArtifacts: identical,
            lostFiles: results.reduce((a, r) => a + (r.lostFiles as number), 0),
            extraFiles: results.reduce((a, r) => a + (r.extraFiles as number), 0),
            differingFiles: results.reduce((a, r) => a + (r.differingFiles as number), 0),
            medianWallSeconds: medianOf(chaosWall),
            medianOverheadPercent: (100 * (medianOf(chaosWall) - referenceWall)) / referenceWall,
            maxOverheadPercent: (100 * (Math.max(...chaosWall) - referenceWall)) / referenceWall,
          },
          reference: { goalCompleted: runs, goalIdenticalArtifacts: runs },
          speedup: null,
        },
        ...FAULTS.map((f) => {
          const rs = results.filter((r) => r.fault === f);
          return {
            case: `  ${f} (${rs.length} runs)`,
            ours: { completed: rs.filter((r) => r.status === 'COMPLETED').length, identical: rs.filter((r) => r.identical).length, medianWallSeconds: medianOf(rs.filter((r) => r.status === 'COMPLETED').map((r) => r.wallSeconds as number)) },
            reference: null,
            speedup: null,
          };
        }),
      ],
      referenceWallSeconds: refWall,
      artifactClasses: byClass,
      proxyTotals,
      runs: results,
      notes: [
        'each run has its own store prefix, so every stage computes from scratch; artifacts are hashed from the S3 server’s disk',
        'bitIdentical: same bytes as the reference; identicalButTimings: same once time/timing fields (startedAt, savedAt, computeSeconds, imagesPerSecond, throughput...) and the run\'s own store prefix are left out, tensors byte for byte (artifactClasses.timingsOnly: files whose bytes differ between two uninterrupted runs for that reason alone)',
        'a file whose content differs between two uninterrupted runs even without timings is not deterministic by nature and is compared by presence only (artifactClasses.nondeterministic)',
        'wall overhead is against the mean uninterrupted wall time measured in the same session, on the same (shared, loaded) machine',
      ],
    };
  } finally {
    await closeClient().catch(() => {});
    await down().catch(() => {});
    await proxy.close();
    process.env = savedEnv;
    if (keepHome) log(`kept ${env.home} (logs, Temporal history, S3 data) for a run that did not end identical`);
    else env.cleanup();
  }
}
