import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { ApplicationFailure, defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { toolPath } from '../../cli/env.js';
import { toolsInstalled } from '../helpers/servers.js';
import { SEARCH_ATTRIBUTES, type ReproductionInput, type ReproductionProgress, type ReproductionResult } from '../../workflows/types.js';

const workflowsPath = fileURLToPath(new URL('../../workflows/index.ts', import.meta.url));
const historiesDir = fileURLToPath(new URL('../fixtures/histories/', import.meta.url));

/** Only the fields the workflow itself reads; the (mocked) activities ignore the rest. */
function input(name: string, extra: Partial<Record<string, unknown>> = {}): ReproductionInput {
  return {
    config: {
      name,
      store: { uri: 's3://densepipe/test', createBucket: true },
      data: { source: { kind: 'synthetic', size: 'tiny', seed: 0 } },
      proposals: { preset: 'updetr-random' },
      pretrain: { method: 'mocov2' },
      evaluation: { tasks: ['knn'] },
      orchestration: { heartbeatTimeoutSeconds: 10 },
      ...extra,
    } as unknown as ReproductionInput['config'],
    configHash: 'feedc0ffee00',
  };
}

const ref = (stage: string, result: unknown) => ({ stage, hash: `${stage}-h`, manifestKey: `stages/${stage}/h/manifest.json`, result });

function mockActivities(calls: Record<string, number>, behaviour: { failEvaluate?: boolean; flakyPretrain?: boolean } = {}) {
  const count = (name: string) => (calls[name] = (calls[name] ?? 0) + 1);
  const outcome = (stage: string, result: unknown) => ({ ref: ref(stage, result), cached: false, computeSeconds: 0.5 });
  return {
    async shardDataset() {
      count('shardDataset');
      return outcome('shard', { datasetManifestKey: 'd.json', splits: { train: { shardKeys: ['s0', 's1', 's2'], samples: 30 }, val: { shardKeys: ['v0'], samples: 10 } }, classes: ['a'] });
    },
    async proposeRegions(args: { shardKey: string }) {
      count('proposeRegions');
      return outcome('proposals', { shardKey: args.shardKey, proposalsKey: `${args.shardKey}.json`, images: 10, boxes: 100 });
    },
    async pretrain() {
      count('pretrain');
      if (behaviour.flakyPretrain && calls.pretrain === 1) throw new Error('worker lost its GPU');
      return outcome('pretrain', { backboneKey: 'b.safetensors', finalLoss: 1.5, steps: 10, lossCurveKey: 'l.json', imagesPerSecond: 100, resumedFromStep: 0 });
    },
    async pretrainSupervised() {
      count('pretrainSupervised');
      return outcome('pretrain-supervised', { backboneKey: 's.safetensors', backboneArch: 'resnet-tiny', finalLoss: 0.2, steps: 10, lossCurveKey: 's.json', resumedFromStep: 0 });
    },
    async evaluate(args: { backbone: { stage: string } | null }) {
      count('evaluate');
      const which = args.backbone?.stage ?? 'random';
      count(`evaluate:${which}`);
      if (behaviour.failEvaluate && which === 'pretrain') throw ApplicationFailure.nonRetryable("split 'validation' is not in the dataset (it has train, val)", 'BadInputError');
      const top1 = { pretrain: 0.6, random: 0.3, 'pretrain-supervised': 0.7 }[which];
      return outcome('evaluation', { metrics: { 'knn.top1': top1 }, metricsKey: 'm.json' });
    },
    async writeReport(args: { refs: Record<string, { stage: string } | undefined> }) {
      count('writeReport');
      // Which stage each report reference points at (the supervised loss curve comes from 'supervisedPretrain').
      for (const [k, v] of Object.entries(args.refs)) if (v && !Array.isArray(v)) count(`report:${k}=${v.stage}`);
      return { htmlKey: 'runs/x/report.html', markdownKey: 'runs/x/report.md', jsonKey: 'runs/x/report.json', url: 's3://densepipe/test/runs/x/report.html' };
    },
  };
}

describe.skipIf(!toolsInstalled())('ReproductionWorkflow on the Temporal dev server', () => {
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundleWithSourceMap;

  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('WARN') });
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
  });

  async function runWith(activities: ReturnType<typeof mockActivities>, id: string, wfInput: ReproductionInput) {
    const workers = await Promise.all(
      ['cpu', 'gpu'].map((taskQueue) =>
        Worker.create({ connection: env.nativeConnection, taskQueue, activities, ...(taskQueue === 'cpu' ? { workflowBundle: bundle } : {}) }),
      ),
    );
    const handle = await env.client.workflow.start('reproductionWorkflow', { taskQueue: 'cpu', workflowId: id, args: [wfInput] });
    const run = async () => {
      try {
        return { result: (await handle.result()) as ReproductionResult, error: undefined };
      } catch (error) {
        return { result: undefined, error };
      } finally {
        const progress = await handle.query<ReproductionProgress>('progress').catch(() => undefined);
        workers.forEach((w) => w.shutdown());
        lastProgress = progress;
      }
    };
    let lastProgress: ReproductionProgress | undefined;
    const [outcome] = await Promise.all([run(), ...workers.map((w) => w.run())]);
    return { ...outcome, progress: lastProgress, handle };
  }

  it('chains the stages, fans proposals out per shard and evaluates random-init and supervised baselines', async () => {
    const calls: Record<string, number> = {};
    const { result, progress, handle } = await runWith(mockActivities(calls), 'wf-happy', input('happy'));
    expect(calls).toMatchObject({ shardDataset: 1, proposeRegions: 3, pretrain: 1, pretrainSupervised: 1, evaluate: 3, writeReport: 1 });
    expect(result?.metrics).toEqual({ 'knn.top1': 0.6 });
    expect(result?.baselineMetrics).toEqual({ 'knn.top1': 0.3 });
    expect(result?.supervisedMetrics).toEqual({ 'knn.top1': 0.7 });
    expect(calls).toMatchObject({ 'report:supervisedPretrain=pretrain-supervised': 1, 'report:supervised=evaluation': 1, 'report:pretrain=pretrain': 1 });
    expect(result?.reportUrl).toMatch(/report\.html$/);
    expect(progress?.stages.map((s) => [s.step, s.status, s.parts])).toEqual([
      ['shard', 'done', 1],
      ['proposals', 'done', 3],
      ['pretrain', 'done', 1],
      ['pretrain-supervised', 'done', 1],
      ['evaluate', 'done', 1],
      ['evaluate-baseline', 'done', 1],
      ['evaluate-supervised', 'done', 1],
      ['report', 'done', 1],
    ]);
    if (process.env.DENSEPIPE_RECORD_HISTORIES) {
      mkdirSync(historiesDir, { recursive: true });
      writeFileSync(`${historiesDir}reproduction-with-supervised--wf-happy.json`, historyToJSON(await handle.fetchHistory()));
    }
  });

  it('leaves the supervised baseline out when disabled', async () => {
    const calls: Record<string, number> = {};
    const { result } = await runWith(mockActivities(calls), 'wf-nosup', input('nosup', { baselines: { supervised: false } }));
    expect(calls.pretrainSupervised).toBeUndefined();
    expect(calls.evaluate).toBe(2);
    expect(result?.supervisedMetrics).toBeUndefined();
  });

  it('skips proposals when they are disabled', async () => {
    const calls: Record<string, number> = {};
    const { result } = await runWith(mockActivities(calls), 'wf-noprops', input('noprops', { proposals: { preset: 'detreg', enabled: false } }));
    expect(result).toBeDefined();
    expect(calls.proposeRegions).toBeUndefined();
  });

  it('fails at once on a non-retryable bad-input error and says why', async () => {
    const calls: Record<string, number> = {};
    const { error, progress } = await runWith(mockActivities(calls, { failEvaluate: true }), 'wf-bad', input('bad'));
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(calls['evaluate:pretrain']).toBe(1); // bad input: no retries
    const failed = progress?.stages.find((s) => s.step === 'evaluate');
    expect(failed?.status).toBe('failed');
    expect(failed?.error).toMatch(/BadInputError: split 'validation' is not in the dataset/);
  });

  it('retries a transient activity failure', async () => {
    const calls: Record<string, number> = {};
    const { result } = await runWith(mockActivities(calls, { flakyPretrain: true }), 'wf-flaky', input('flaky'));
    expect(result).toBeDefined();
    expect(calls.pretrain).toBe(2);
  });
});
