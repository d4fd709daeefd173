/**
 * `densepipe schedule ...`: nightly suites on Temporal Schedules (the server owns the timer; no
 * cron of our own). The schedule's action carries the suite as validated and expanded at creation,
 * so a nightly runs exactly what was scheduled; re-create the schedule to change it. Time zone,
 * overlap policy and catch-up window are always sent explicitly, never left to server defaults.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { ScheduleOverlapPolicy, type Client, type ScheduleDescription, type ScheduleSpec } from '@temporalio/client';
import { BadInputError } from '../core/errors.js';
import { loadSuite } from '../stages/regression/suite-config.js';
import { SUITE_WORKFLOW_TYPE, type SuiteInput } from '../stages/regression/types.js';
import { CPU_QUEUE } from '../workflows/types.js';
import { connectClient } from './client.js';
import { suiteInput, type CliOutput } from './suite.js';

export const OVERLAP_POLICIES = ['skip', 'buffer-one', 'buffer-all', 'cancel-other', 'terminate-other', 'allow-all'] as const;
export type OverlapChoice = (typeof OVERLAP_POLICIES)[number];
const DAYS = ['SUNDAY', 'MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY'] as const;
type Day = (typeof DAYS)[number];

export interface ScheduleTiming {
  /** Five-field cron, e.g. "30 2 * * 1-5". */
  cron?: string;
  /** Calendar: "HH:MM" every day, or on `days`. */
  at?: string;
  /** "mon-fri", "mon,wed,fri" or "*" (with `at`). */
  days?: string;
  /** An interval such as "30s", "10m", "24h" (mostly for trying things out). */
  every?: string;
  timeZone: string;
}

function parseDay(token: string, field: string): Day {
  const day = DAYS.find((d) => d.startsWith(token.trim().toUpperCase()) && token.trim().length >= 3);
  if (!day) throw new BadInputError(`unknown day '${token}' (use mon, tue, wed, thu, fri, sat, sun)`, field);
  return day;
}

/** The Temporal ScheduleSpec for exactly one of --cron, --at [--days], --every; bad input names the option. */
export function buildScheduleSpec(t: ScheduleTiming): ScheduleSpec {
  const chosen = [t.cron, t.at, t.every].filter((x) => x !== undefined).length;
  if (chosen !== 1) throw new BadInputError('give exactly one of --cron, --at (with optional --days) or --every', 'schedule timing');
  if (t.days !== undefined && t.at === undefined) throw new BadInputError('--days needs --at', '--days');
  try {
    new Intl.DateTimeFormat('en', { timeZone: t.timeZone });
  } catch {
    throw new BadInputError(`unknown IANA time zone '${t.timeZone}' (e.g. UTC, Europe/Paris, America/New_York)`, '--time-zone');
  }
  if (t.cron !== undefined) {
    if (t.cron.trim().split(/\s+/).length !== 5 || /^(CRON_)?TZ=/.test(t.cron)) throw new BadInputError(`'${t.cron}' is not a five-field cron expression (minute hour day-of-month month day-of-week); set the zone with --time-zone`, '--cron');
    return { cronExpressions: [t.cron.trim()], timezone: t.timeZone };
  }
  if (t.every !== undefined) {
    const m = /^(\d+)(s|m|h|d)$/.exec(t.every);
    if (!m || Number(m[1]) <= 0) throw new BadInputError(`'${t.every}' is not an interval like 30s, 10m, 24h or 1d`, '--every');
    return { intervals: [{ every: t.every }], timezone: t.timeZone };
  }
  const hm = /^([01]?\d|2[0-3]):([0-5]\d)$/.exec(t.at!);
  if (!hm) throw new BadInputError(`'${t.at}' is not a time of day HH:MM`, '--at');
  let dayOfWeek: ScheduleSpec['calendars'] extends Array<infer C> | undefined ? (C extends { dayOfWeek?: infer D } ? D : never) : never = '*';
  if (t.days !== undefined && t.days.trim() !== '*') {
    dayOfWeek = t.days.split(',').map((part) => {
      const [a, b] = part.split('-');
      return b === undefined ? parseDay(a!, '--days') : { start: parseDay(a!, '--days'), end: parseDay(b, '--days') };
    });
  }
  return { calendars: [{ hour: Number(hm[1]), minute: Number(hm[2]), dayOfWeek, comment: `${t.at} ${t.days ?? 'every day'}` }], timezone: t.timeZone };
}

export function overlapPolicy(choice: OverlapChoice) {
  return ScheduleOverlapPolicy[choice.toUpperCase().replace('-', '_') as keyof typeof ScheduleOverlapPolicy];
}

export interface CreateScheduleOptions extends ScheduleTiming {
  scheduleId: string;
  input: SuiteInput;
  overlap: OverlapChoice;
  /** e.g. "1h": runs missed while the server was down longer than this are skipped. */
  catchupWindow: string;
  paused?: boolean;
}

export async function createSchedule(client: Client, o: CreateScheduleOptions) {
  if (!/^\d+(s|m|h|d)$/.test(o.catchupWindow)) throw new BadInputError(`'${o.catchupWindow}' is not a duration like 10m, 1h or 1d`, '--catchup-window');
  return client.schedule.create({
    scheduleId: o.scheduleId,
    spec: buildScheduleSpec(o),
    action: {
      type: 'startWorkflow',
      workflowType: SUITE_WORKFLOW_TYPE,
      taskQueue: CPU_QUEUE,
      // The server appends the scheduled time, so every nightly has its own id.
      workflowId: `nightly-${o.input.suite.name}`,
      args: [o.input],
    },
    policies: { overlap: overlapPolicy(o.overlap), catchupWindow: o.catchupWindow, pauseOnFailure: false },
    state: { paused: o.paused ?? false, note: o.paused ? 'created paused' : undefined },
    memo: { suite: o.input.suite.name, suiteHash: o.input.suite.suiteHash },
  });
}

export interface ScheduleView {
  scheduleId: string;
  suite?: string;
  paused: boolean;
  note?: string;
  spec: unknown;
  timeZone?: string;
  overlap: string;
  catchupWindowMs: number;
  nextRuns: string[];
  recentRuns: Array<{ workflowId: string; scheduledAt: string; startedAt: string }>;
  runningRuns: string[];
  totalActions: number;
}

export function viewSchedule(d: ScheduleDescription): ScheduleView {
  const action = d.action as { args?: unknown[] };
  const input = action.args?.[0] as SuiteInput | undefined;
  return {
    scheduleId: d.scheduleId,
    suite: input?.suite?.name,
    paused: d.state.paused,
    note: d.state.note,
    spec: { calendars: d.spec.calendars, intervals: d.spec.intervals },
    timeZone: d.spec.timezone,
    overlap: String(d.policies.overlap),
    catchupWindowMs: d.policies.catchupWindow,
    nextRuns: d.info.nextActionTimes.slice(0, 5).map((t) => t.toISOString()),
    recentRuns: d.info.recentActions.map((a) => ({ workflowId: a.action.workflow.workflowId, scheduledAt: a.scheduledAt.toISOString(), startedAt: a.takenAt.toISOString() })),
    runningRuns: d.info.runningActions.map((a) => a.workflow.workflowId),
    totalActions: d.info.numActionsTaken,
  };
}

export function registerScheduleCommands(program: Command, out: CliOutput): void {
  const schedule = program.command('schedule').description('nightly regression suites on Temporal Schedules');
  const withClient = async <T>(fn: (client: Client) => Promise<T>): Promise<T> => {
    const { client, close } = await connectClient();
    try {
      return await fn(client);
    } finally {
      await close();
    }
  };

  schedule
    .command('create')
    .argument('<id>', 'schedule id, e.g. nightly-tiny')
    .requiredOption('--suite <file>', 'suite YAML (validated and captured now)')
    .option('--cron <expr>', 'five-field cron, e.g. "30 2 * * *"')
    .option('--at <HH:MM>', 'calendar: time of day')
    .option('--days <days>', 'calendar: mon-fri, mon,wed,fri or * (with --at)')
    .option('--every <interval>', 'interval, e.g. 30s, 10m, 24h')
    .option('--time-zone <iana>', 'IANA time zone of the spec', 'UTC')
    .addOption(new Option('--overlap <policy>', 'when a nightly is still running at the next time').choices(OVERLAP_POLICIES).default('skip'))
    .option('--catchup-window <duration>', 'after a server outage, start missed runs no older than this', '1h')
    .option('--baseline <key>', 'baseline key in the suite store (default regression/baselines/<suite>.json)')
    .option('--paused', 'create it paused')
    .action(async (id: string, o) => {
      const suite = await loadSuite(o.suite);
      await withClient(async (client) => {
        await createSchedule(client, { scheduleId: id, input: suiteInput(suite, { baselineKey: o.baseline }), cron: o.cron, at: o.at, days: o.days, every: o.every, timeZone: o.timeZone, overlap: o.overlap, catchupWindow: o.catchupWindow, paused: o.paused });
        const view = viewSchedule(await client.schedule.getHandle(id).describe());
        out.print(`schedule ${id} created for suite ${suite.name} (${view.timeZone}, overlap ${view.overlap}, catch-up ${view.catchupWindowMs / 1000} s); next: ${view.nextRuns.slice(0, 3).join(', ') || '(paused)'}`, view);
      });
    });

  schedule
    .command('list')
    .description('list schedules')
    .action(() =>
      withClient(async (client) => {
        const rows: Array<{ scheduleId: string; paused: boolean; next?: string; workflowType?: string }> = [];
        for await (const s of client.schedule.list()) {
          rows.push({ scheduleId: s.scheduleId, paused: s.state.paused, next: s.info.nextActionTimes[0]?.toISOString(), workflowType: s.action?.workflowType });
        }
        out.print(rows.length ? rows.map((r) => `${r.scheduleId.padEnd(32)} ${r.paused ? 'paused ' : 'active '} next ${r.next ?? '–'}`).join('\n') : 'no schedules', rows);
      }),
    );

  schedule
    .command('describe')
    .argument('<id>')
    .action((id: string) =>
      withClient(async (client) => {
        const v = viewSchedule(await client.schedule.getHandle(id).describe());
        const human = [
          `schedule ${v.scheduleId} (suite ${v.suite ?? '?'}): ${v.paused ? 'PAUSED' : 'active'}${v.note ? ` — ${v.note}` : ''}`,
          `  spec ${JSON.stringify(v.spec)} in ${v.timeZone ?? 'UTC'}; overlap ${v.overlap}; catch-up window ${v.catchupWindowMs / 1000} s`,
          `  next: ${v.nextRuns.join(', ') || '–'}`,
          `  runs taken: ${v.totalActions}; running: ${v.runningRuns.join(', ') || 'none'}`,
          ...v.recentRuns.map((r) => `  recent: ${r.workflowId} (scheduled ${r.scheduledAt})`),
        ].join('\n');
        out.print(human, v);
      }),
    );

  for (const [name, verb] of [
    ['pause', 'paused'],
    ['unpause', 'unpaused'],
  ] as const) {
    schedule
      .command(name)
      .argument('<id>')
      .option('--note <text>', 'why (shown by describe)')
      .action((id: string, o) =>
        withClient(async (client) => {
          const h = client.schedule.getHandle(id);
          await (name === 'pause' ? h.pause(o.note) : h.unpause(o.note));
          out.print(`schedule ${id} ${verb}`, { scheduleId: id, [verb]: true });
        }),
      );
  }

  schedule
    .command('trigger')
    .argument('<id>')
    .description('start one run now (the overlap policy still applies)')
    .action((id: string) =>
      withClient(async (client) => {
        const h = client.schedule.getHandle(id);
        // Pass the schedule's own policy: the SDK's default for a manual trigger would allow overlaps.
        await h.trigger((await h.describe()).policies.overlap);
        out.print(`schedule ${id} triggered`, { scheduleId: id, triggered: true });
      }),
    );

  schedule
    .command('delete')
    .argument('<id>')
    .description('delete the schedule (runs it started are kept)')
    .action((id: string) =>
      withClient(async (client) => {
        await client.schedule.getHandle(id).delete();
        out.print(`schedule ${id} deleted`, { scheduleId: id, deleted: true });
      }),
    );
}
