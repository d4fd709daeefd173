/**
 * Schedules against the real local services (`densepipe up` in an isolated home: the Temporal dev
 * server with its SQLite file, versitygw, worker processes): a short-interval schedule starts a
 * real suite run of one tiny member, and the schedule (its spec, policies and paused state)
 * survives a kill -9 and restart of the dev server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { projectRoot, readServices } from '../../cli/env.js';
import { isAlive, startTemporal } from '../../cli/services.js';
import { createSchedule, viewSchedule } from '../../cli/schedule.js';
import { suiteInput } from '../../cli/suite.js';
import { promoteBaseline } from '../../cli/baseline.js';
import { codeVersion } from '../../stages/regression/provenance.js';
import { loadBaseline } from '../../stages/regression/records.js';
import { openStore } from '../../core/store/index.js';
import { parseSuite } from '../../stages/regression/suite-config.js';
import type { SuiteResult } from '../../stages/regression/types.js';
import { startLocalStack, toolsInstalled, waitFor, type LocalStack } from '../helpers/servers.js';

const built = existsSync(join(projectRoot(), 'dist', 'workflow-bundle.js'));
const CLI = join(projectRoot(), 'bin', 'densepipe.js');

const tinySuite = () =>
  parseSuite(
    {
      name: 'sched',
      base: {
        store: { uri: 's3://densepipe-regression/artifacts' },
        data: { shardSamples: 32 },
        proposals: { preset: 'updetr-random', enabled: false },
        pretrain: { backbone: { arch: 'resnet-tiny' }, batchSize: 16, steps: 4, imageSize: 32 },
        evaluation: { imageSize: 32 },
        orchestration: { heartbeatTimeoutSeconds: 10 },
      },
      methods: ['mocov2'],
      methodArgs: { mocov2: { queueSize: 64 } },
      seeds: [0],
      tasks: ['knn'],
    },
    'schedule.test',
  );

describe.skipIf(!toolsInstalled() || !built)('nightly schedules on the local Temporal dev server', () => {
  let stack: LocalStack;
  let client: Client;

  beforeAll(async () => {
    stack = await startLocalStack('regression');
    client = stack.client;
  }, 240_000);

  afterAll(async () => {
    await stack?.stop();
  }, 120_000);

  it('a short-interval schedule starts a real suite run that writes its report', async () => {
    await createSchedule(client, { scheduleId: 'sched-every', input: suiteInput(tinySuite()), every: '3s', timeZone: 'Europe/Paris', overlap: 'skip', catchupWindow: '1m' });
    const first = await waitFor(
      'the schedule to start a suite run',
      async () => viewSchedule(await client.schedule.getHandle('sched-every').describe()).recentRuns[0]?.workflowId,
      30_000,
    );
    // Stop further starts while the first one runs (the overlap policy would skip them anyway).
    await client.schedule.getHandle('sched-every').pause('test: one run is enough');
    expect(first).toMatch(/^nightly-sched-/);
    const result = (await client.workflow.getHandle(first).result()) as SuiteResult;
    expect(result.members.map((m) => m.status)).toEqual(['completed']);
    expect(result.members[0]!.metrics!['knn.top1']).toBeGreaterThanOrEqual(0);
    expect(result.verdict).toBe('inconclusive'); // no baseline promoted yet
    const store = openStore({ uri: 's3://densepipe-regression/artifacts' });
    expect(Buffer.from(await store.get(result.reportKey)).toString()).toContain('<table id="comparisons">');
    // The scheduled run becomes the baseline, with its provenance.
    const promoted = await promoteBaseline(client, first);
    expect(promoted.key).toBe('regression/baselines/sched.json');
    const stored = (await loadBaseline(store, promoted.key))!;
    expect(stored.provenance).toMatchObject({ source: first, sourceKind: 'suite', codeVersion: codeVersion() });
    expect(stored.values['mocov2@synthetic-tiny']!['knn.top1']).toEqual([result.members[0]!.metrics!['knn.top1']]);
    expect(stored.members[0]!.configHash).toBe(result.members[0]!.configHash);
    await expect(promoteBaseline(client, first, parseSuite({ name: 'other', methods: ['densecl'], seeds: [0], tasks: ['knn'] }))).rejects.toThrow(/belongs to suite 'sched', not 'other'/);
    const v = viewSchedule(await client.schedule.getHandle('sched-every').describe());
    expect(v).toMatchObject({ paused: true, note: 'test: one run is enough', timeZone: 'Europe/Paris', overlap: 'SKIP', catchupWindowMs: 60_000, suite: 'sched' });
  });

  it('keeps schedules across a kill -9 and restart of the dev server', async () => {
    await createSchedule(client, { scheduleId: 'sched-nightly', input: suiteInput(tinySuite()), at: '02:30', days: 'mon-fri', timeZone: 'America/New_York', overlap: 'buffer-one', catchupWindow: '2h' });
    const before = viewSchedule(await client.schedule.getHandle('sched-nightly').describe());
    const s = readServices();
    process.kill(-s.temporal!.pid, 'SIGKILL');
    await waitFor('the dev server to stop', async () => (isAlive(s.temporal!.pid) ? undefined : true), 10_000);
    delete s.temporal;
    await startTemporal(s, stack.env.home, stack.env.temporalPort, stack.env.temporalPort + 1000);
    writeFileSync(join(stack.env.home, 'services.json'), JSON.stringify(s, null, 2));
    await stack.reconnect();
    client = stack.client;

    const after = viewSchedule(await client.schedule.getHandle('sched-nightly').describe());
    expect(after).toMatchObject({ overlap: 'BUFFER_ONE', catchupWindowMs: 2 * 3600_000, timeZone: 'America/New_York', paused: false, spec: before.spec });
    expect(after.nextRuns[0]).toBe(before.nextRuns[0]);
    const every = viewSchedule(await client.schedule.getHandle('sched-every').describe());
    expect(every.paused).toBe(true);
    const ids: string[] = [];
    for await (const x of client.schedule.list()) ids.push(x.scheduleId);
    expect(ids.sort()).toEqual(['sched-every', 'sched-nightly']);
    await client.schedule.getHandle('sched-nightly').delete();
    await client.schedule.getHandle('sched-every').delete();
  });

  it('the CLI refuses a suite naming an unknown method, naming the file and field', () => {
    const bad = join(stack.env.home, 'bad-suite.yaml');
    writeFileSync(bad, 'name: bad\nmethods: [densecl, byol]\nseeds: [0]\ntasks: [knn]\n');
    const res = spawnSync(process.execPath, [CLI, 'schedule', 'create', 'x', '--suite', bad, '--at', '02:30'], { encoding: 'utf8', env: process.env });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/bad-suite\.yaml: methods\.1: unknown method 'byol'/);
  });
});
