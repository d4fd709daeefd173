import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { projectRoot } from '../../cli/env.js';
import { buildScheduleSpec } from '../../cli/schedule.js';
import { loadSuite, parseSuite } from '../../stages/regression/suite-config.js';

const minimal = { name: 'nightly', methods: ['densecl'], seeds: [0, 1], tasks: ['knn'] };

describe('suite configs', () => {
  it('expands methods × datasets × seeds into validated run configs', async () => {
    const s = await loadSuite(join(projectRoot(), 'configs', 'suites', 'nightly-tiny.yaml'));
    expect(s.members.map((m) => m.id)).toEqual(['densecl', 'mocov2'].flatMap((m) => [0, 1, 2].map((seed) => `${m}-synthetic-tiny-s${seed}`)));
    const m = s.members[4]!;
    expect([m.config.pretrain.method, m.config.pretrain.seed, m.config.evaluation.tasks, m.config.pretrain.backbone.arch, m.config.evaluation.backbone.arch]).toEqual(['mocov2', 1, ['knn'], 'resnet-tiny', 'resnet-tiny']);
    expect(new Set(s.members.map((x) => x.configHash)).size).toBe(6);
    expect(s.metrics).toEqual(['knn.top1']);
  });

  it('defaults the compared metrics to every quality metric of the tasks', () => {
    expect(parseSuite({ ...minimal, tasks: ['knn', 'semseg'] }).metrics).toEqual(['knn.top1', 'semseg.mIoU', 'semseg.pixelAccuracy', 'semseg.meanAccuracy']);
  });

  it('keeps the suite hash when only the seeds change, and changes it with the config', () => {
    const a = parseSuite(minimal);
    expect(parseSuite({ ...minimal, seeds: [3, 4, 5] }).suiteHash).toBe(a.suiteHash);
    expect(parseSuite({ ...minimal, base: { pretrain: { steps: 5 } } }).suiteHash).not.toBe(a.suiteHash);
  });

  it.each([
    [{ methods: ['densecl', 'simclr'] }, /s\.yaml: methods\.1: unknown method 'simclr' \(known: mocov2, densecl, /],
    [{ methodArgs: { pixpro: { posRatio: 0.5 } } }, /s\.yaml: methodArgs\.pixpro: 'pixpro' is not one of this suite's methods/],
    [{ methods: ['mocov2'], methodArgs: { mocov2: { lossLambda: 0.3 } } }, /pretrain\.args\.lossLambda: an argument of densecl/],
    [{ base: { pretrain: { args: { queueSize: 64 } } } }, /s\.yaml: base\.pretrain\.args: is set per member/],
    [{ datasets: ['imagenet'] }, /s\.yaml: datasets\.0: unknown dataset 'imagenet' \(known: synthetic-tiny/],
    [{ tasks: ['knn', 'retrieval'] }, /s\.yaml: tasks\.1: unknown task 'retrieval'/],
    [{ metrics: ['knn.top5'] }, /s\.yaml: metrics\.0: unknown metric 'knn\.top5' for tasks knn \(known: knn\.top1\)/],
    [{ metrics: ['knn.imagesPerSecond'] }, /metrics\.0: unknown metric 'knn\.imagesPerSecond'/],
    [{ seeds: [1, 1] }, /s\.yaml: seeds: seeds repeat/],
    [{ base: { pretrain: { method: 'mocov2' } } }, /s\.yaml: base\.pretrain\.method: is set per member/],
    [{ base: { pretrain: { batchSize: '32x' } } }, /s\.yaml: base \(member densecl-synthetic-tiny-s0\): pretrain\.batchSize: .*number/],
    [{ fanOut: 0 }, /s\.yaml: fanOut: /],
    [{ colour: 'blue' }, /s\.yaml: \(top level\): Unrecognized key.*colour/],
    [{ webhook: { url: 'not a url' } }, /s\.yaml: webhook\.url: a webhook URL is a secret .* webhook\.urlEnv/],
    [{ webhook: { urlEnv: 'not a name' } }, /s\.yaml: webhook\.urlEnv: an environment variable name/],
  ])('refuses bad input naming the field (%o)', (patch, message) => {
    expect(() => parseSuite({ ...minimal, ...patch }, 's.yaml')).toThrow(message);
  });
});

describe('schedule specs', () => {
  it('builds calendar, cron and interval specs with the time zone always set', () => {
    expect(buildScheduleSpec({ at: '02:30', days: 'mon-fri', timeZone: 'Europe/Paris' })).toEqual({
      calendars: [{ hour: 2, minute: 30, dayOfWeek: [{ start: 'MONDAY', end: 'FRIDAY' }], comment: '02:30 mon-fri' }],
      timezone: 'Europe/Paris',
    });
    expect(buildScheduleSpec({ at: '23:05', timeZone: 'UTC' }).calendars![0]!.dayOfWeek).toBe('*');
    expect(buildScheduleSpec({ cron: '30 2 * * 1-5', timeZone: 'America/New_York' })).toEqual({ cronExpressions: ['30 2 * * 1-5'], timezone: 'America/New_York' });
    expect(buildScheduleSpec({ every: '10m', timeZone: 'UTC' })).toEqual({ intervals: [{ every: '10m' }], timezone: 'UTC' });
  });

  it.each([
    [{ timeZone: 'UTC' }, /exactly one of --cron, --at/],
    [{ at: '02:30', every: '1h', timeZone: 'UTC' }, /exactly one/],
    [{ at: '25:00', timeZone: 'UTC' }, /--at: '25:00' is not a time of day/],
    [{ at: '02:30', days: 'mon-fry', timeZone: 'UTC' }, /--days: unknown day 'fry'/],
    [{ cron: '30 2 * *', timeZone: 'UTC' }, /--cron: .*not a five-field cron/],
    [{ every: 'daily', timeZone: 'UTC' }, /--every: 'daily' is not an interval/],
    [{ at: '02:30', timeZone: 'Mars/Olympus' }, /--time-zone: unknown IANA time zone 'Mars\/Olympus'/],
  ])('refuses bad timing naming the option (%o)', (timing, message) => {
    expect(() => buildScheduleSpec(timing)).toThrow(message);
  });
});
