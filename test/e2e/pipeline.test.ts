/**
 * End to end against the real servers: the Temporal dev server (SQLite), versitygw, and worker
 * processes started exactly as `densepipe up` starts them. Covers a full run, a cached re-run, a
 * failed run fixed by `resume`, kill -9 of the gpu worker mid-pretraining, and a restart of the
 * Temporal server mid-run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { projectRoot, readServices } from '../../cli/env.js';
import { isAlive, startTemporal, startWorker } from '../../cli/services.js';
import { describeRun, resumeRun, runEvents, runInput, startRun, type RunStatus } from '../../cli/runs.js';
import { loadRunConfig, parseRunConfig, type RunConfig } from '../../core/config.js';
import { METHOD_NAMES } from '../../stages/methods/index.js';
import { openStore } from '../../core/store/index.js';
import { startLocalStack, toolsInstalled, waitFor, type LocalStack } from '../helpers/servers.js';
import { stageOutputs } from '../../cli/history.js';
import { localWorkerLogs, runLog } from '../../cli/logs.js';
import { syncTensorboard } from '../../cli/tensorboard.js';
import { getJson } from '../../core/store/index.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';
import { readBackboneCard } from '../../stages/pretrain/backbone-card.js';
import { parseEventFile, scalarSeries } from '../helpers/tfevents.js';

const built = existsSync(join(projectRoot(), 'dist', 'workflow-bundle.js'));

function tinyConfig(name: string, patch: Record<string, unknown> = {}): RunConfig {
  const base = {
    name,
    store: { uri: 's3://densepipe-e2e/artifacts' },
    data: { source: { kind: 'synthetic', size: 'tiny', seed: 0 }, shardSamples: 32 },
    proposals: { preset: 'updetr-random' },
    pretrain: {
      method: 'densecl',
      backbone: { arch: 'resnet-tiny' },
      batchSize: 16,
      steps: 12,
      imageSize: 32,
      args: { queueSize: 64 },
      checkpointEvery: { steps: 4 },
    },
    evaluation: { tasks: ['knn'], imageSize: 32 },
    orchestration: { heartbeatTimeoutSeconds: 4 },
  };
  return parseRunConfig(deepMerge(base, patch), `e2e:${name}`);
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && typeof a[k] === 'object' ? deepMerge(a[k] as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

async function finished(client: Client, workflowId: string, timeoutMs = 240_000): Promise<RunStatus> {
  return waitFor(
    `run ${workflowId} to close`,
    async () => {
      const s = await describeRun(client, workflowId);
      return s.status === 'RUNNING' ? undefined : s;
    },
    timeoutMs,
  );
}

const stepStatus = (s: RunStatus) => Object.fromEntries((s.progress?.stages ?? s.result?.stages ?? []).map((x) => [x.step, x.status]));

describe.skipIf(!toolsInstalled() || !built)('densepipe end to end (real Temporal, real S3, worker processes)', () => {
  let stack: LocalStack;
  let client: Client;

  beforeAll(async () => {
    stack = await startLocalStack('e2e');
    client = stack.client;
  }, 240_000);

  afterAll(async () => {
    await stack?.stop();
  }, 120_000);

  let firstRun: RunStatus;

  it('runs the whole pipeline and writes a report to S3', async () => {
    const handle = await startRun(client, tinyConfig('e2e-full'));
    firstRun = await finished(client, handle.workflowId);
    expect(firstRun.status).toBe('COMPLETED');
    expect(stepStatus(firstRun)).toEqual({
      shard: 'done',
      proposals: 'done',
      pretrain: 'done',
      'pretrain-supervised': 'done',
      evaluate: 'done',
      'evaluate-baseline': 'done',
      'evaluate-supervised': 'done',
      report: 'done',
    });
    const result = firstRun.result!;
    expect(result.metrics['knn.top1']).toBeGreaterThanOrEqual(0);
    expect(result.supervisedMetrics?.['knn.top1']).toBeGreaterThanOrEqual(0);
    const store = openStore({ uri: 's3://densepipe-e2e/artifacts' });
    const html = Buffer.from(await store.get(result.reportKey)).toString();
    expect(html).toContain('<table id="metrics">');
    expect(html).toContain('knn.top1');
    // Pictures (test/report/report-browser.test.ts draws them in Chromium): four evaluation images with their
    // ground truth and the preset's proposals (no segmentation task in this config), and the supervised
    // baseline's loss curve beside the method's.
    expect(html.match(/class="gallery-panel" data-kind="(truth|masks|proposals)"/g)?.length).toBe(12);
    expect(html).toContain('Supervised baseline loss');
    // The report is also a plain file on the local S3 server's disk.
    expect(existsSync(join(readServices().s3!.root, 'densepipe-e2e', 'artifacts', result.reportKey))).toBe(true);
  });

  it('lists its outputs as s3:// URIs by role, logs worker lines by role, and keeps TensorBoard events and a self-describing backbone', async () => {
    const history = await client.workflow.getHandle(firstRun.workflowId).fetchHistory();
    const outputs = stageOutputs(history);
    const byRole = new Map(outputs.map((o) => [o.role, o]));
    for (const role of ['shard', 'pretrain', 'pretrain-supervised', 'evaluate', 'evaluate-baseline', 'evaluate-supervised', 'report']) expect(byRole.has(role), role).toBe(true);
    for (const o of outputs) for (const uri of Object.values(o.uris)) expect(uri.startsWith('s3://densepipe-e2e/artifacts/'), uri).toBe(true);
    const store = openStore({ uri: 's3://densepipe-e2e/artifacts' });
    const pretrain = byRole.get('pretrain')!;
    const manifest = await getJson<{ uris?: { result: Record<string, string> } }>(store, `stages/pretrain/${pretrain.hash}/manifest.json`);
    expect(manifest.uris?.result.backbone).toBe(pretrain.uris.backbone);
    const card = readBackboneCard(decodeSafetensors(await store.get(pretrain.uris.backbone!.slice('s3://densepipe-e2e/artifacts/'.length))).metadata);
    expect(card?.architecture).toMatchObject({ layers: [1, 1, 1, 1], widths: [8, 16, 32, 64], stem: { kind: 'cifar' } });
    // TensorBoard: the 12 pretraining steps in the store, and one folder per role after a sync.
    const eventKeys = (await store.list(`stages/pretrain/${pretrain.hash}/tensorboard/`)).filter((k) => k.includes('tfevents'));
    expect(eventKeys).toHaveLength(1);
    expect(scalarSeries(parseEventFile(await store.get(eventKeys[0]!))).get('loss')!.map(([step]) => step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const tbDir = join(stack.env.home, 'tb');
    const synced = await syncTensorboard(store, outputs, tbDir);
    expect(synced.map((s) => s.name).sort()).toEqual(['evaluate', 'evaluate-baseline', 'evaluate-supervised', 'pretrain', 'pretrain-supervised']);
    // Worker lines of this run, with the role of the activity that wrote them.
    const log = runLog(history, firstRun.workflowId, localWorkerLogs(stack.env.home));
    const workerRoles = new Set(log.filter((e) => e.kind === 'log').map((e) => e.role));
    for (const role of ['evaluate', 'evaluate-baseline', 'evaluate-supervised']) expect(workerRoles.has(role), role).toBe(true);
    for (let i = 1; i < log.length; i++) expect(log[i]!.at).toBeGreaterThanOrEqual(log[i - 1]!.at);
  });

  // Every registered method, through the whole workflow on this one stack, from its own config at the smallest size.
  it.each(METHOD_NAMES)('runs configs/methods/%s.yaml end to end', async (method) => {
    const { config } = await loadRunConfig(join(projectRoot(), 'configs', 'methods', `${method}.yaml`), { store: { uri: 's3://densepipe-e2e/artifacts' } });
    const status = await finished(client, (await startRun(client, config)).workflowId);
    expect(status.status, status.failure).toBe('COMPLETED');
    expect(stepStatus(status).pretrain).toBe('done');
    expect(Number.isFinite(status.result!.metrics['knn.top1'])).toBe(true);
  });

  it('reuses every stage output when the same config runs again', async () => {
    const handle = await startRun(client, tinyConfig('e2e-full'));
    const again = await finished(client, handle.workflowId);
    expect(again.status).toBe('COMPLETED');
    expect(stepStatus(again)).toEqual({
      shard: 'cached',
      proposals: 'cached',
      pretrain: 'cached',
      'pretrain-supervised': 'cached',
      evaluate: 'cached',
      'evaluate-baseline': 'cached',
      'evaluate-supervised': 'cached',
      report: 'done',
    });
    expect(again.result!.metrics).toEqual(firstRun.result!.metrics);
    const compute = (again.result!.stages ?? []).reduce((a, s) => a + s.computeSeconds, 0);
    expect(compute).toBe(0);
  });

  it('fails on bad input without retrying, and `resume` with the fix redoes only what changed', async () => {
    // An evaluation nobody ran before (k=5), pointed at a split the dataset does not have.
    const handle = await startRun(client, tinyConfig('e2e-full', { evaluation: { evalSplit: 'validation', knn: { k: 5 } } }));
    const failed = await finished(client, handle.workflowId);
    expect(failed.status).toBe('FAILED');
    expect(failed.failure).toMatch(/validation/);
    const evaluateAttempts = (await runEvents(client, handle.workflowId)).filter((l) => /started\s+evaluate/.test(l));
    expect(evaluateAttempts.length).toBeLessThanOrEqual(2); // one per evaluate activity: no retries of bad input
    const resumed = await resumeRun(client, handle.workflowId, { evaluation: { evalSplit: 'val' } });
    const done = await finished(client, resumed.workflowId);
    expect(done.status).toBe('COMPLETED');
    expect(stepStatus(done)).toEqual({
      shard: 'cached',
      proposals: 'cached',
      pretrain: 'cached',
      'pretrain-supervised': 'cached',
      evaluate: 'done',
      'evaluate-baseline': 'done',
      'evaluate-supervised': 'done',
      report: 'done',
    });
    expect((await runInput(client, resumed.workflowId)).resumedFrom).toBe(handle.workflowId);
  });

  it('survives kill -9 of the gpu worker mid-pretraining and continues from the last checkpoint', async () => {
    const handle = await startRun(client, tinyConfig('e2e-kill', { pretrain: { steps: 40, seed: 1 }, baselines: { supervised: false } }));
    // Wait until pretraining has passed a checkpoint (every 4 steps) and is still running.
    await waitFor(
      'pretraining past step 9',
      async () => {
        const s = await describeRun(client, handle.workflowId);
        const hb = s.pending.find((a) => a.activityType === 'pretrain')?.heartbeat;
        return (hb?.step ?? 0) >= 9 ? true : undefined;
      },
      180_000,
    );
    const gpu = readServices().workers!.find((w) => w.queue === 'gpu')!;
    process.kill(gpu.pid, 'SIGKILL');
    await waitFor('the gpu worker to die', async () => (isAlive(gpu.pid) ? undefined : true), 10_000);
    const current = readServices();
    await startWorker(current, stack.env.home, 'gpu');
    writeFileSync(join(stack.env.home, 'services.json'), JSON.stringify(current, null, 2));
    const done = await finished(client, handle.workflowId);
    expect(done.status).toBe('COMPLETED');
    const resumedFrom = (done as RunStatus & { result: { stages: unknown } }).result;
    expect(resumedFrom).toBeDefined();
    const store = openStore({ uri: 's3://densepipe-e2e/artifacts' });
    const report = JSON.parse(Buffer.from(await store.get(done.result!.reportKey.replace(/\.html$/, '.json'))).toString());
    expect(report.pretrain.resumedFromStep).toBeGreaterThanOrEqual(4);
    expect(report.pretrain.steps).toBe(40);
  });

  it('survives a restart of the Temporal dev server mid-run', async () => {
    const handle = await startRun(client, tinyConfig('e2e-restart', { pretrain: { steps: 30, seed: 2 }, baselines: { supervised: false } }));
    await waitFor(
      'pretraining to start',
      async () => ((await describeRun(client, handle.workflowId)).pending.some((a) => a.activityType === 'pretrain') ? true : undefined),
      180_000,
    );
    const s = readServices();
    process.kill(-s.temporal!.pid, 'SIGKILL');
    await waitFor('the dev server to stop', async () => (isAlive(s.temporal!.pid) ? undefined : true), 10_000);
    delete s.temporal;
    await startTemporal(s, stack.env.home, stack.env.temporalPort, stack.env.temporalPort + 1000);
    writeFileSync(join(stack.env.home, 'services.json'), JSON.stringify(s, null, 2));
    await stack.reconnect();
    client = stack.client;
    const done = await finished(client, handle.workflowId);
    expect(done.status).toBe('COMPLETED');
  });

  it('refuses an invalid config before starting anything, naming the field', () => {
    const bad = join(stack.env.home, 'bad.yaml');
    writeFileSync(bad, 'name: e2e\npretrain:\n  batchSize: "32x"\n');
    const res = spawnSync(process.execPath, [join(projectRoot(), 'bin', 'densepipe.js'), 'run', bad], { encoding: 'utf8', env: process.env });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/bad\.yaml: pretrain\.batchSize: .*number/);
  });
});
