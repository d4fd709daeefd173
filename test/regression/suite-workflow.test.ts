/**
 * The suite workflow on the Temporal dev server with the real suite activities (file:// store)
 * and mocked reproduction activities, so the properties that depend on orchestration are fast
 * and exact: bounded fan-out, a failing member reported while the others finish, a planted
 * regression flagged, seed noise passing, and a webhook that never answers turning into a warning.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { ApplicationFailure, defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import * as suiteActivities from '../../activities/suite.js';
import { toolPath } from '../../cli/env.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { buildBaseline, saveBaseline, loadBaseline, baselineKey } from '../../stages/regression/records.js';
import { parseSuite, type Suite } from '../../stages/regression/suite-config.js';
import type { SuiteInput, SuiteResult } from '../../stages/regression/types.js';
import { SEARCH_ATTRIBUTES } from '../../workflows/types.js';
import { toolsInstalled } from '../helpers/servers.js';

const workflowsPath = fileURLToPath(new URL('../../workflows/index.ts', import.meta.url));
const ref = (stage: string, result: unknown) => ({ stage, hash: `${stage}-h`, manifestKey: `stages/${stage}/h/manifest.json`, result });
const outcome = (stage: string, result: unknown) => ({ ref: ref(stage, result), cached: false, computeSeconds: 0.1 });

/**
 * Reproduction activities whose kNN accuracy depends on the config like a real run's would:
 * about 0.6 with a little seed noise, collapsing with a broken learning rate. A seed in
 * `failSeeds` fails evaluation with bad input (non-retryable), as a broken member would.
 */
function reproductionMocks(state: { running: number; maxRunning: number }, failSeeds: number[] = []) {
  return {
    async shardDataset() {
      return outcome('shard', { splits: { train: { shardKeys: ['s0'], samples: 10 }, val: { shardKeys: ['v0'], samples: 10 } }, classes: ['a'] });
    },
    async proposeRegions(args: { shardKey: string }) {
      return outcome('proposals', { shardKey: args.shardKey });
    },
    async pretrain(args: { pretrain: { seed: number; optimizer: { baseLr: number } } }) {
      state.running += 1;
      state.maxRunning = Math.max(state.maxRunning, state.running);
      await new Promise((r) => setTimeout(r, 150));
      state.running -= 1;
      return outcome('pretrain', { seed: args.pretrain.seed, lr: args.pretrain.optimizer.baseLr, backboneKey: 'b' });
    },
    async pretrainSupervised(args: { pretrain: { seed: number } }) {
      return outcome('pretrain-supervised', { seed: args.pretrain.seed, supervised: true, backboneKey: 's' });
    },
    async evaluate(args: { backbone: { result: { seed: number; lr: number; supervised?: boolean } } | null }) {
      if (!args.backbone) return outcome('evaluation', { metrics: { 'knn.top1': 0.3 } });
      if (args.backbone.result.supervised) return outcome('evaluation', { metrics: { 'knn.top1': 0.7 } });
      const { seed, lr } = args.backbone.result;
      if (failSeeds.includes(seed)) throw ApplicationFailure.nonRetryable(`shard for seed ${seed} is corrupt`, 'BadInputError');
      const top1 = lr > 1 ? 0.12 : 0.6 + ((seed * 7) % 5) * 0.005;
      return outcome('evaluation', { metrics: { 'knn.top1': top1, 'knn.imagesPerSecond': 500 + seed } });
    },
    async writeReport() {
      return { htmlKey: 'r.html', markdownKey: 'r.md', jsonKey: 'r.json', url: 'file:///r.html' };
    },
  };
}

describe.skipIf(!toolsInstalled())('suite workflow (dev server, mocked reproductions)', () => {
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundleWithSourceMap;
  let dir: string;
  let silent: Server;
  let silentUrl: string;

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('WARN') });
    dir = mkdtempSync(join(tmpdir(), 'densepipe-suite-wf-'));
    silent = createServer(() => {
      /* a webhook that never answers */
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentUrl = `http://127.0.0.1:${(silent.address() as { port: number }).port}/hook`;
    env = await TestWorkflowEnvironment.createLocal({
      server: {
        executable: { type: 'existing-path', path: toolPath('temporal') },
        searchAttributes: Object.values(SEARCH_ATTRIBUTES).map((name) => defineSearchAttributeKey(name, SearchAttributeType.KEYWORD)),
      },
    });
    bundle = await bundleWorkflowCode({ workflowsPath, logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: console.error } });
  });

  afterAll(async () => {
    await env?.teardown();
    silent?.closeAllConnections();
    silent?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const suiteOf = (patch: Record<string, unknown> = {}): Suite =>
    parseSuite({
      name: 'wf',
      base: { store: { uri: pathToFileURL(join(dir, 'store')).href }, proposals: { preset: 'updetr-random', enabled: false } },
      methods: ['densecl'],
      seeds: [0, 1, 2],
      tasks: ['knn'],
      fanOut: 2,
      noise: { k: 2, absoluteFloor: 0.03, minSeeds: 2 },
      ...patch,
    });

  async function runSuite(suite: Suite, id: string, failSeeds: number[] = []) {
    const state = { running: 0, maxRunning: 0 };
    const activities = { ...reproductionMocks(state, failSeeds), ...suiteActivities };
    const workers = await Promise.all(
      ['cpu', 'gpu'].map((taskQueue) =>
        Worker.create({ connection: env.nativeConnection, taskQueue, activities, ...(taskQueue === 'cpu' ? { workflowBundle: bundle } : {}), maxConcurrentActivityTaskExecutions: 8 }),
      ),
    );
    const input: SuiteInput = { suite, ui: { url: 'http://ui.test', namespace: 'default' } };
    const handle = await env.client.workflow.start('suiteWorkflow', { taskQueue: 'cpu', workflowId: id, args: [input] });
    const run = async () => {
      try {
        return (await handle.result()) as SuiteResult;
      } finally {
        workers.forEach((w) => w.shutdown());
      }
    };
    const [result] = await Promise.all([run(), ...workers.map((w) => w.run())]);
    if (process.env.DENSEPIPE_RECORD_HISTORIES && id === 'suite-first') {
      // A history for test/workflows/replay.test.ts: the suite with a failed member.
      const dir = fileURLToPath(new URL('../fixtures/histories/', import.meta.url));
      writeFileSync(`${dir}suite-with-failed-member--suite-first.json`, historyToJSON(await handle.fetchHistory()));
    }
    return { result, maxRunning: state.maxRunning };
  }

  it('runs members as bounded child workflows and reports a failing member without hiding the others', async () => {
    const { result, maxRunning } = await runSuite(suiteOf(), 'suite-first', [1]);
    expect(maxRunning).toBeLessThanOrEqual(2);
    expect(result.members.map((m) => [m.id, m.status])).toEqual([
      ['densecl-synthetic-tiny-s0', 'completed'],
      ['densecl-synthetic-tiny-s1', 'failed'],
      ['densecl-synthetic-tiny-s2', 'completed'],
    ]);
    expect(result.members[1]!.workflowId).toBe('suite-first-densecl-synthetic-tiny-s1');
    expect(result.members[1]!.error).toMatch(/BadInputError: shard for seed 1 is corrupt/);
    expect(result.failedMembers).toEqual(['densecl-synthetic-tiny-s1']);
    expect(result.verdict).toBe('inconclusive'); // no baseline yet, and a member failed: never a pass
    const store = new FileArtifactStore(join(dir, 'store'));
    const html = Buffer.from(await store.get(result.reportKey)).toString();
    expect(html).toContain('http://ui.test/namespaces/default/workflows/suite-first-densecl-synthetic-tiny-s1');
    // The comparison over the two seeds that finished: method, random init and supervised.
    expect(html).toMatch(/<tr><td>densecl@synthetic-tiny<\/td><td>supervised<\/td><td>0\.7000 ± 0\.0000 \(n=2\)<\/td><\/tr>/);
    expect(html).toMatch(/<td>random init<\/td><td>0\.3000 ± 0\.0000 \(n=2\)<\/td>/);
  });

  it('flags a planted regression (broken learning rate) and passes a re-run that differs only in seeds', async () => {
    const store = new FileArtifactStore(join(dir, 'store'));
    const clean = await runSuite(suiteOf(), 'suite-baseline');
    expect(clean.result.failedMembers).toEqual([]);
    const suite = suiteOf();
    await saveBaseline(store, buildBaseline({ suite, outcomes: clean.result.members, source: 'suite-baseline', sourceKind: 'suite', codeVersion: { packageVersion: '0.1.0', gitCommit: null, dirty: false } }));

    const broken = await runSuite(suiteOf({ base: { store: { uri: pathToFileURL(join(dir, 'store')).href }, proposals: { preset: 'updetr-random', enabled: false }, pretrain: { optimizer: { baseLr: 30 } } } }), 'suite-broken-lr');
    expect(broken.result.verdict).toBe('regressed');
    expect(broken.result.comparisons[0]).toMatchObject({ metric: 'knn.top1', verdict: 'regressed' });
    const html = Buffer.from(await store.get(broken.result.reportKey)).toString();
    expect(html).toContain('pretrain.optimizer.baseLr'); // the config diff since the baseline

    const noise = await runSuite(suiteOf({ seeds: [3, 4, 5] }), 'suite-new-seeds');
    expect(noise.result.verdict).toBe('passed');
    expect(noise.result.comparisons[0]!.delta).not.toBe(0);
    expect(await loadBaseline(store, baselineKey('wf'))).not.toBeNull();
  });

  it('turns a webhook that never answers into a reported warning; the verdict stands', async () => {
    const t0 = Date.now();
    // The URL lives in the worker's environment; the suite (and so the history) names the variable only.
    process.env.DENSEPIPE_TEST_SILENT_HOOK = silentUrl;
    const { result } = await runSuite(suiteOf({ seeds: [0, 2], webhook: { urlEnv: 'DENSEPIPE_TEST_SILENT_HOOK', timeoutSeconds: 1, maxAttempts: 2 } }), 'suite-silent-hook');
    expect(result.verdict).toBe('passed');
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toMatch(/webhook not delivered after 2 attempt\(s\): .*\$DENSEPIPE_TEST_SILENT_HOOK.*no answer within 1 s/);
    expect(result.warnings[0]).not.toContain('/hook');
    expect(Date.now() - t0).toBeLessThan(30_000);
    const html = Buffer.from(await new FileArtifactStore(join(dir, 'store')).get(result.reportKey)).toString();
    expect(html).toContain('webhook not delivered');
    expect(html).not.toContain(silentUrl);
  });

  it('says which variable is missing when the worker has no webhook URL, without retrying', async () => {
    delete process.env.DENSEPIPE_TEST_UNSET_HOOK;
    const { result } = await runSuite(suiteOf({ seeds: [0, 2], webhook: { urlEnv: 'DENSEPIPE_TEST_UNSET_HOOK', timeoutSeconds: 1, maxAttempts: 3 } }), 'suite-unset-hook');
    expect(result.warnings[0]).toMatch(/environment variable DENSEPIPE_TEST_UNSET_HOOK is not set on this cpu worker/);
  });
});
