/**
 * Reading a run from its Temporal history (recorded histories in test/fixtures/histories): each
 * activity's role and part, events in time order, stage outputs as full URIs, and the run's worker log
 * lines merged in.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { activityRecords, formatEvent, historyEvents, historyInput, stageOutputs, type History } from '../../cli/history.js';
import { artifactLines, describeArtifacts } from '../../cli/outputs.js';
import { workerLogEvents, runLog } from '../../cli/logs.js';
import { jsonLogLine } from '../../cli/worker.js';
import { tensorboardRunName } from '../../cli/tensorboard.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { localContext, readManifest, runStage, type Stage } from '../../core/stage.js';
import { FileArtifactStore, joinKey } from '../../core/store/index.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const fixture = (name: string): History => historyFromJSON(JSON.parse(readFileSync(fileURLToPath(new URL(`../fixtures/histories/${name}`, import.meta.url)), 'utf8'))) as History;
const withSupervised = fixture('reproduction-with-supervised--wf-happy.json');
const store = { uri: 's3://densepipe/test', url: (key: string) => `s3://densepipe/test/${key}` };

describe('roles from the history', () => {
  it('tells the three evaluate calls and the per-shard proposal calls apart', () => {
    const records = activityRecords(withSupervised);
    expect(records.map((r) => [r.activityId, r.activityType, r.role, r.part ?? ''])).toEqual([
      ['1', 'shardDataset', 'shard', ''],
      ['2', 'proposeRegions', 'proposals', 'shard 1/3 (s0)'],
      ['3', 'proposeRegions', 'proposals', 'shard 2/3 (s1)'],
      ['4', 'proposeRegions', 'proposals', 'shard 3/3 (s2)'],
      ['5', 'pretrain', 'pretrain', ''],
      ['6', 'evaluate', 'evaluate-baseline', ''],
      ['7', 'pretrainSupervised', 'pretrain-supervised', ''],
      ['8', 'evaluate', 'evaluate', ''],
      ['9', 'evaluate', 'evaluate-supervised', ''],
      ['10', 'writeReport', 'report', ''],
    ]);
    expect(records.every((r) => r.status === 'completed' && r.attempts.length === 1 && r.attempts[0]!.identity === '31453@vm')).toBe(true);
    expect(historyInput(withSupervised)?.config.store.uri).toBe('s3://densepipe/test');
  });

  it('orders events by time although the history records `started` when an attempt ends', () => {
    const events = historyEvents(withSupervised);
    // In history order, proposals shard 1/3 starts (event 19) after shard 3/3 completed (event 17).
    const ids = events.map((e) => e.eventId);
    expect(ids.indexOf(19)).toBeLessThan(ids.indexOf(17));
    for (let i = 1; i < events.length; i++) expect(events[i]!.at).toBeGreaterThanOrEqual(events[i - 1]!.at);
    const activityEvents = events.filter((e) => e.activity);
    expect(activityEvents.length).toBe(30); // 10 activities x scheduled, started, completed
    expect(activityEvents.every((e) => e.role)).toBe(true);
    const lines = events.map(formatEvent);
    expect(lines[0]).toMatch(/^2026-11-22 09:51:51\.109 +run started$/);
    expect(lines).toContain(lines.find((l) => /started +proposeRegions +proposals \[shard 1\/3 \(s0\)\] +by 31453@vm \(attempt 1\)/.test(l)));
    expect(lines.filter((l) => /completed +evaluate +evaluate-baseline +computed in 0\.5 s/.test(l))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(/run completed$/);
    // The three evaluations no longer print as identical lines.
    const evaluations = lines.filter((l) => /completed +evaluate /.test(l)).map((l) => l.slice(24));
    expect(new Set(evaluations).size).toBe(3);
  });
});

describe('stage outputs as URIs', () => {
  it('lists every output with its role, the manifest and folder URIs, each result file and the TensorBoard folder', () => {
    const outputs = stageOutputs(withSupervised, store);
    expect(outputs.map((o) => o.role)).toEqual(['shard', 'proposals', 'proposals', 'proposals', 'pretrain', 'evaluate-baseline', 'pretrain-supervised', 'evaluate', 'evaluate-supervised', 'report']);
    const pretrain = outputs.find((o) => o.role === 'pretrain')!;
    expect(pretrain).toMatchObject({ label: 'pretrained backbone', stage: 'pretrain', hash: 'pretrain-h', cached: false, store: 's3://densepipe/test', status: 'completed' });
    expect(pretrain.uris).toMatchObject({
      manifest: 's3://densepipe/test/stages/pretrain/h/manifest.json',
      prefix: 's3://densepipe/test/stages/pretrain/h/',
      backbone: 's3://densepipe/test/b.safetensors',
      lossCurve: 's3://densepipe/test/l.json',
      tensorboard: 's3://densepipe/test/stages/pretrain/h/tensorboard/',
    });
    expect(outputs.find((o) => o.role === 'shard')!.uris).toMatchObject({ datasetManifest: 's3://densepipe/test/d.json', 'shards:train': 's3://densepipe/test/ (3 shards)' });
    expect(outputs.find((o) => o.role === 'evaluate-supervised')!.uris.metrics).toBe('s3://densepipe/test/m.json');
    expect(outputs.find((o) => o.role === 'report')!.uris).toEqual({ html: 's3://densepipe/test/runs/x/report.html', markdown: 's3://densepipe/test/runs/x/report.md', json: 's3://densepipe/test/runs/x/report.json' });
    // Without an explicit store, the run's own config names it.
    expect(stageOutputs(withSupervised)[0]!.store).toBe('s3://densepipe/test');
    const short = artifactLines(outputs).join('\n');
    expect(short).toMatch(/pretrain +computed +s3:\/\/densepipe\/test\/b\.safetensors/);
    expect(short).toMatch(/evaluate-baseline +computed +s3:\/\/densepipe\/test\/m\.json/);
    expect(short).toMatch(/proposals \[shard 2\/3\] +computed +s3:\/\/densepipe\/test\/s1\.json/);
    expect(describeArtifacts('wf-happy', outputs)).toContain('evaluate-supervised: evaluation of the supervised backbone (computed, stages/evaluation/evaluation-h)');
    expect(outputs.filter((o) => o.part).map(tensorboardRunName)).toEqual(['proposals-shard_1_3_s0_', 'proposals-shard_2_3_s1_', 'proposals-shard_3_3_s2_']);
  });

  it('gives a running stage its folder before it finishes (same key as runStage computes)', () => {
    // Cut the history right after pretraining was scheduled: pretrain is still running.
    const events = withSupervised.events!;
    const cut = { ...withSupervised, events: events.slice(0, events.findIndex((e) => Number(e.eventId) === 29)) } as History;
    const pretrain = stageOutputs(cut, store).find((o) => o.role === 'pretrain')!;
    expect(pretrain.status).toBe('running');
    expect(pretrain.stage).toBe('pretrain');
    expect(pretrain.hash).toMatch(/^[0-9a-f]{20}$/);
    expect(pretrain.uris.tensorboard).toBe(`s3://densepipe/test/stages/pretrain/${pretrain.hash}/tensorboard/`);
  });
});

describe('worker log lines', () => {
  const line = (o: Record<string, unknown>) => JSON.stringify({ time: '2026-11-22T09:51:51.280Z', level: 'INFO', pid: 42, ...o });

  it('keeps the run\'s JSON lines, with the role of the activity that wrote them, in time order with the history', () => {
    const records = new Map(activityRecords(withSupervised).map((r) => [r.activityId, r]));
    const text = [
      'worker ready: queue=cpu ...',
      line({ message: 'evaluate: 24/24 labelled training samples', workflowId: 'wf-happy', activityId: '8', activityType: 'evaluate', attempt: 1, taskQueue: 'cpu' }),
      line({ message: 'someone else', workflowId: 'other-run', activityId: '8', activityType: 'evaluate' }),
      '{not json',
      line({ time: '2026-11-22T09:51:51.250Z', message: 'proposals for s1', workflowId: 'wf-happy', activityId: '3', activityType: 'proposeRegions', attempt: 2 }),
    ].join('\n');
    const events = workerLogEvents(text, 'wf-happy', records, 'worker-cpu');
    expect(events.map((e) => [e.role, e.part ?? '', e.message, e.worker])).toEqual([
      ['evaluate', '', 'evaluate: 24/24 labelled training samples', 'worker-cpu pid 42'],
      ['proposals', 'shard 2/3 (s1)', 'proposals for s1', 'worker-cpu pid 42'],
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'dp-logs-'));
    writeFileSync(join(dir, 'worker-cpu.log'), text);
    const merged = runLog(withSupervised, 'wf-happy', [join(dir, 'worker-cpu.log'), join(dir, 'missing.log')]);
    const logs = merged.filter((e) => e.kind === 'log');
    expect(logs).toHaveLength(2);
    for (let i = 1; i < merged.length; i++) expect(merged[i]!.at).toBeGreaterThanOrEqual(merged[i - 1]!.at);
    expect(formatEvent(logs[0]!)).toMatch(/log +proposeRegions +proposals \[shard 2\/3 \(s1\)\] +worker-cpu pid 42 \(attempt 2\) INFO: proposals for s1/);
  });

  it('the worker writes one JSON object per line, without the task token, errors as name and message', () => {
    const text = jsonLogLine(
      { level: 'WARN', message: 'retrying', timestampNanos: 1_796_000_000_123_000_000n, meta: { workflowId: 'wf', activityId: '8', taskToken: 'c2VjcmV0', error: new TypeError('boom') } },
      7,
    );
    expect(JSON.parse(text)).toEqual({ time: new Date(1_796_000_000_123).toISOString(), level: 'WARN', message: 'retrying', workflowId: 'wf', activityId: '8', error: { name: 'TypeError', message: 'boom' }, pid: 7 });
  });
});

describe('manifest URIs', () => {
  it('a stage manifest carries the full URIs of the store, itself, its folder and each result key', async () => {
    const files = new FileArtifactStore(mkdtempSync(join(tmpdir(), 'dp-uris-')));
    const stage: Stage<Record<string, never>, { n: number }, { valueKey: string; count: number }> = {
      name: 'uri-test',
      version: '1',
      async run(ctx) {
        const valueKey = joinKey(ctx.outputPrefix, 'value.json');
        await ctx.store.put(valueKey, '1');
        return { valueKey, count: 1 };
      },
    };
    const { ref } = await runStage(stage, localContext(files), {}, { n: 1 });
    const manifest = (await readManifest<{ valueKey: string }>(files, ref.manifestKey))!;
    expect(files.uri).toMatch(/^file:\/\/\//);
    expect(manifest.uris).toEqual({
      store: files.uri,
      manifest: `${files.uri}/stages/uri-test/${ref.hash}/manifest.json`,
      prefix: `${files.uri}/stages/uri-test/${ref.hash}/`,
      result: { value: `${files.uri}/stages/uri-test/${ref.hash}/value.json` },
    });
  });
});
