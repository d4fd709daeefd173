/**
 * TensorBoard event files: the writer's framing (read back by an independent reader that also reads
 * TensorFlow's own writer), the training loop's live curves (loss, its parts, lr, throughput) with a
 * resumed attempt replacing the failed one's file, TensorBoard's own reader where the package is
 * installed, and the evaluation stage's per-epoch head losses and final metrics.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localContext, runStage, type Stage } from '../../core/stage.js';
import { FileArtifactStore, type ArtifactStore } from '../../core/store/index.js';
import { crc32c, StoreEventWriter } from '../../core/tfevents.js';
import { initBackend } from '../../core/tf.js';
import { runTrainingLoop, type LossPoint } from '../../stages/pretrain/loop.js';
import type { DataCursor } from '../../stages/pretrain/feeder.js';
import { evaluationConfigSchema, evaluationStage } from '../../stages/downstream/index.js';
import { parseEventFile, scalarSeries } from '../helpers/tfevents.js';
import { writeSquaresDataset } from '../downstream/squares-dataset.js';

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'dp-tfevents-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function eventFiles(store: ArtifactStore, prefix: string): Promise<string[]> {
  return (await store.list(`${prefix}/`)).filter((k) => k.includes('tfevents'));
}

describe('event file writer', () => {
  it('frames records as TFRecord with masked CRC-32C, and the test reader agrees with TensorFlow\'s own writer', async () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    // The reader first proves itself on a file written by TensorFlow (tfjs-node's summary writer).
    const tfn = await import('@tensorflow/tfjs-node');
    const tfDir = join(dir, 'tf-writer');
    const w = tfn.node.summaryFileWriter(tfDir);
    w.scalar('reference/x', 1.5, 3);
    w.flush();
    const tfFile = readdirSync(tfDir).find((f) => f.includes('tfevents'))!;
    const tfEvents = parseEventFile(readFileSync(join(tfDir, tfFile)));
    expect(tfEvents[0]!.fileVersion).toBe('brain.Event:2');
    // TensorFlow's writer stores a scalar as Summary.Value.simple_value, as core/tfevents.ts does.
    expect(tfEvents[1]).toMatchObject({ step: 3, values: [{ tag: 'reference/x', simpleValue: 1.5, hasTensor: false }] });

    const store = new FileArtifactStore(join(dir, 'writer'));
    let now = 1_700_000_000;
    const writer = new StoreEventWriter(store, 'tb', { now: () => now, flushSeconds: 10, maxFileBytes: 200 });
    writer.scalars({ loss: 2.5, lr: 0.1, skipped: Number.NaN }, 1);
    await writer.flush();
    const first = writer.key;
    now += 1;
    writer.scalars({ loss: 2.25 }, 2);
    await writer.flush(); // within flushSeconds: not uploaded yet
    expect(parseEventFile(await store.get(first)).length).toBe(2);
    await writer.flush(true);
    const events = parseEventFile(await store.get(first));
    expect(events.map((e) => e.step)).toEqual([0, 1, 2]);
    expect(events[0]!.fileVersion).toBe('brain.Event:2');
    expect(events[1]!.wallTime).toBe(1_700_000_000);
    expect(events[1]!.values).toEqual([
      { tag: 'loss', simpleValue: 2.5, hasTensor: false },
      { tag: 'lr', simpleValue: Math.fround(0.1), hasTensor: false },
    ]);
    // Past maxFileBytes the next events go to a new file; the old one stays complete.
    for (let s = 3; s < 12; s++) writer.scalars({ loss: s }, s);
    await writer.flush(true);
    writer.scalars({ loss: 99 }, 12);
    await writer.close();
    const files = await eventFiles(store, 'tb');
    expect(files.length).toBeGreaterThan(1);
    const all = (await Promise.all(files.map(async (k) => parseEventFile(await store.get(k))))).flat();
    expect(scalarSeries(all).get('loss')!.map(([s]) => s)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });
});

/** A stage around the real training loop with a deterministic fake step, failing once at `failAt`. */
function loopStage(options: { total: number; failAt?: number }): Stage<Record<string, never>, { total: number }, { curve: LossPoint[] }> {
  return {
    name: 'loop-events-test',
    version: '1',
    async run(ctx, _inputs, config) {
      const trained = await runTrainingLoop<number>({
        ctx,
        spec: { signature: { test: 'loop-events' }, components: {} },
        label: 'loop test',
        totalSteps: config.total,
        batchSize: 4,
        checkpointEvery: { steps: 3, seconds: 3600 },
        open: async (cursor: DataCursor) => {
          let position = cursor.position;
          return { next: async () => ({ batch: position, cursor: { epoch: 0, position: ++position } }), close: async () => {} };
        },
        learningRate: (step) => 0.5 / (step + 1),
        step: (_batch, step) => {
          if (step === options.failAt && ctx.attempt === 1) throw new Error('worker lost');
          return { loss: 10 / (step + 1), parts: { global: 7 / (step + 1), dense: 3 / (step + 1) } };
        },
      });
      return { curve: trained.curve };
    },
  };
}

describe('training loop TensorBoard events', () => {
  it('writes loss, its parts, lr and throughput per step; a resumed attempt replaces the failed one\'s file with each step once', async () => {
    const total = 7;
    const reference = new FileArtifactStore(join(dir, 'loop-ref'));
    const full = await runStage(loopStage({ total }), localContext(reference), {}, { total });
    const prefix = `stages/loop-events-test/${full.ref.hash}/tensorboard`;
    const [file] = await eventFiles(reference, prefix);
    const series = scalarSeries(parseEventFile(await reference.get(file!)));
    expect([...series.keys()].sort()).toEqual(['loss', 'loss/dense', 'loss/global', 'lr', 'throughput/images_per_second']);
    expect(series.get('loss')).toEqual(full.ref.result.curve.map((p) => [p.step, Math.fround(p.loss)]));
    expect(series.get('loss/dense')).toEqual(full.ref.result.curve.map((p) => [p.step, Math.fround(p.dense!)]));
    expect(series.get('lr')).toEqual(full.ref.result.curve.map((p) => [p.step, Math.fround(p.lr)]));
    expect(series.get('throughput/images_per_second')!.every(([, v]) => v > 0)).toBe(true);

    // Attempt 1 dies at step index 5 (checkpoint at 3): what it logged is in the store already.
    const store = new FileArtifactStore(join(dir, 'loop-resume'));
    await expect(runStage(loopStage({ total, failAt: 5 }), localContext(store), {}, { total })).rejects.toThrow(/worker lost/);
    const failed = await eventFiles(store, prefix);
    expect(failed).toHaveLength(1);
    expect(scalarSeries(parseEventFile(await store.get(failed[0]!))).get('loss')!.map(([s]) => s)).toEqual([1, 2, 3, 4, 5]);

    // Attempt 2 resumes at step 3, replays 1..3 from the checkpoint and deletes attempt 1's file.
    const resumed = await runStage(loopStage({ total, failAt: 5 }), { ...localContext(store), attempt: 2 }, {}, { total });
    const after = await eventFiles(store, prefix);
    expect(after).toHaveLength(1);
    expect(after[0]).toMatch(/\.a2\.0000$/);
    const again = scalarSeries(parseEventFile(await store.get(after[0]!)));
    expect(again.get('loss')).toEqual(series.get('loss'));
    expect(again.get('loss/global')).toEqual(series.get('loss/global'));
    expect(resumed.ref.result.curve).toEqual(full.ref.result.curve);
    // Throughput exists only for steps this attempt ran.
    expect(again.get('throughput/images_per_second')!.map(([s]) => s)).toEqual([4, 5, 6, 7]);
  });
});

describe('when the events cannot be uploaded', () => {
  it('training goes on and says so in its log', async () => {
    const inner = new FileArtifactStore(join(dir, 'loop-failing-upload'));
    const store = Object.assign(Object.create(inner) as FileArtifactStore, {
      put: (key: string, body: Uint8Array | string, options?: { contentType?: string }) => (key.includes('tfevents') ? Promise.reject(new Error('S3 said no')) : inner.put(key, body, options)),
    });
    const logs: string[] = [];
    const { ref } = await runStage(loopStage({ total: 4 }), { ...localContext(store), log: (m) => logs.push(m) }, {}, { total: 4 });
    expect(ref.result.curve).toHaveLength(4);
    expect(logs.some((m) => /TensorBoard events not uploaded: S3 said no/.test(m))).toBe(true);
    expect(await eventFiles(inner, `stages/loop-events-test/${ref.hash}/tensorboard`)).toEqual([]);
  });
});

const PYTHON = '/usr/bin/python3';
const hasTensorboard = spawnSync(PYTHON, ['-c', 'import tensorboard'], { encoding: 'utf8' }).status === 0;

describe.skipIf(!hasTensorboard)(`TensorBoard itself reads the files${hasTensorboard ? '' : ' (skipped: the tensorboard package is not importable by /usr/bin/python3)'}`, () => {
  it('EventAccumulator sees every tag and step the loop wrote', async () => {
    const store = new FileArtifactStore(join(dir, 'tb-reader'));
    const { ref } = await runStage(loopStage({ total: 5 }), localContext(store), {}, { total: 5 });
    const logdir = join(dir, 'tb-reader', 'stages', 'loop-events-test', ref.hash, 'tensorboard');
    const code = `import json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(${JSON.stringify(logdir)}); ea.Reload()
print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))`;
    const run = spawnSync(PYTHON, ['-c', code], { encoding: 'utf8', timeout: 120_000 });
    expect(run.status, run.stderr).toBe(0);
    const read = JSON.parse(run.stdout.trim().split('\n').pop()!) as Record<string, Array<[number, number]>>;
    expect(Object.keys(read).sort()).toEqual(['loss', 'loss/dense', 'loss/global', 'lr', 'throughput/images_per_second']);
    expect(read.loss).toEqual(ref.result.curve.map((p) => [p.step, Math.fround(p.loss)]));
  });
});

describe('evaluation TensorBoard events', () => {
  it('writes each trained head\'s per-epoch loss, lr and throughput, and every final metric', async () => {
    const store = new FileArtifactStore(join(dir, 'eval'));
    const dataset = await writeSquaresDataset(store, { size: 32, train: 24, val: 8, seed: 'tfevents' });
    const config = evaluationConfigSchema.parse({ tasks: ['knn', 'linear'], imageSize: 32, backbone: { arch: 'resnet-tiny' }, linear: { epochs: 3, batchSize: 8 } });
    const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, config);
    const [file, ...rest] = await eventFiles(store, `stages/evaluate/${ref.hash}/tensorboard`);
    expect(rest).toEqual([]);
    const series = scalarSeries(parseEventFile(await store.get(file!)));
    expect(series.get('linear/loss')!.map(([epoch]) => epoch)).toEqual([1, 2, 3]);
    expect(series.get('linear/lr')!.every(([, lr]) => lr > 0)).toBe(true);
    expect(series.get('linear/imagesPerSecond')!.every(([, v]) => v > 0)).toBe(true);
    expect(series.get('metrics/knn.top1')).toEqual([[0, Math.fround(ref.result.metrics['knn.top1']!)]]);
    expect(series.get('metrics/linear.top1')).toEqual([[0, Math.fround(ref.result.metrics['linear.top1']!)]]);
  });
});
