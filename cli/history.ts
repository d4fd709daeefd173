/**
 * A run read from its Temporal history: every activity with its pipeline role (which of the three
 * `evaluate` calls scored which backbone, which shard a `proposeRegions` call handled), its attempts,
 * workers and outcome, and each stage output's location as a full store URI.
 *
 * Roles are the workflow's step names (ReproductionProgress.stages[].step): shard, proposals, pretrain,
 * pretrain-supervised, evaluate (the pretrained backbone), evaluate-baseline (random init),
 * evaluate-supervised, report. They are read from each activity's recorded input, so they work for
 * every run, old or new, finished or running, without changing the workflow.
 */
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import type { WorkflowHandle } from '@temporalio/client';
import type { StoreConfig } from '../core/config.js';
import { keyUris, manifestKeyOf, stageHash, type Stage, type StageRef } from '../core/stage.js';
import { openStore } from '../core/store/index.js';
import { tensorboardPrefix } from '../core/tfevents.js';
import { evaluationStage } from '../stages/downstream/index.js';
import { pretrainStage } from '../stages/pretrain/index.js';
import { supervisedConfigFor, supervisedStage } from '../stages/pretrain/supervised.js';
import type { ReproductionInput } from '../workflows/types.js';

export type History = Awaited<ReturnType<WorkflowHandle['fetchHistory']>>;
type HistoryEvent = NonNullable<History['events']>[number];

/** What each role is, in words. */
export const ROLE_LABELS: Record<string, string> = {
  shard: 'dataset shards',
  proposals: 'region proposals',
  pretrain: 'pretrained backbone',
  'pretrain-supervised': 'supervised baseline backbone',
  evaluate: 'evaluation of the pretrained backbone',
  'evaluate-baseline': 'evaluation of the random-init backbone',
  'evaluate-supervised': 'evaluation of the supervised backbone',
  report: 'run report',
};

export interface Role {
  role: string;
  /** Which part of a fanned-out step, e.g. 'shard 2/3 (train-000001.tar)'. */
  part?: string;
}

type Input = Record<string, unknown> & { dataset?: StageRef<{ splits?: Record<string, { shardKeys?: string[] }> }>; backbone?: StageRef | null; shardKey?: string };

/** The pipeline role of one activity call, from its type and input. */
export function roleOf(activityType: string, input: unknown): Role {
  const args = (input ?? {}) as Input;
  switch (activityType) {
    case 'shardDataset':
      return { role: 'shard' };
    case 'proposeRegions': {
      const keys = args.dataset?.result?.splits?.train?.shardKeys ?? [];
      const i = args.shardKey ? keys.indexOf(args.shardKey) : -1;
      const name = args.shardKey?.split('/').pop();
      return { role: 'proposals', part: i >= 0 ? `shard ${i + 1}/${keys.length}${name ? ` (${name})` : ''}` : name };
    }
    case 'pretrain':
      return { role: 'pretrain' };
    case 'pretrainSupervised':
      return { role: 'pretrain-supervised' };
    case 'evaluate': {
      const backbone = args.backbone;
      if (!backbone) return { role: 'evaluate-baseline' };
      return { role: backbone.stage === supervisedStage.name ? 'evaluate-supervised' : 'evaluate' };
    }
    case 'writeReport':
      return { role: 'report' };
    default:
      return { role: activityType };
  }
}

export interface AttemptRecord {
  attempt: number;
  identity: string;
  startedAt: string;
}

export interface ActivityRecord extends Role {
  activityId: string;
  activityType: string;
  queue: string;
  scheduledEventId: number;
  scheduledAt: string;
  input: unknown;
  attempts: AttemptRecord[];
  status: 'scheduled' | 'completed' | 'failed' | 'timed-out' | 'cancelled';
  closedAt?: string;
  result?: unknown;
  failure?: string;
}

function decode(payloads: { payloads?: Payload[] | null } | null | undefined): unknown {
  const p = payloads?.payloads?.[0];
  if (!p) return undefined;
  try {
    return defaultPayloadConverter.fromPayload(p as Payload);
  } catch {
    return undefined;
  }
}

/** Event time as an ISO string with milliseconds (and the exact ms value, for ordering). */
export function eventTime(ev: HistoryEvent): { iso: string; ms: number } {
  const t = ev.eventTime;
  const ms = t ? Number(t.seconds ?? 0) * 1000 + (t.nanos ?? 0) / 1e6 : 0;
  return { iso: new Date(Math.floor(ms)).toISOString(), ms };
}

/** The run's input (config, config hash), from its first event. */
export function historyInput(history: History): ReproductionInput | undefined {
  return decode(history.events?.[0]?.workflowExecutionStartedEventAttributes?.input as { payloads?: Payload[] }) as ReproductionInput | undefined;
}

export function activityRecords(history: History): ActivityRecord[] {
  const bySchedule = new Map<number, ActivityRecord>();
  for (const ev of history.events ?? []) {
    const { iso } = eventTime(ev);
    const id = Number(ev.eventId);
    const a = ev.activityTaskScheduledEventAttributes;
    if (a) {
      const activityType = a.activityType?.name ?? '?';
      const input = decode(a.input as { payloads?: Payload[] });
      bySchedule.set(id, { activityId: a.activityId ?? String(id), activityType, queue: a.taskQueue?.name ?? '', scheduledEventId: id, scheduledAt: iso, input, attempts: [], status: 'scheduled', ...roleOf(activityType, input) });
      continue;
    }
    const started = ev.activityTaskStartedEventAttributes;
    if (started) {
      bySchedule.get(Number(started.scheduledEventId))?.attempts.push({ attempt: started.attempt ?? 1, identity: started.identity ?? '', startedAt: iso });
      continue;
    }
    const close = (scheduledEventId: unknown, status: ActivityRecord['status'], extra: Partial<ActivityRecord>) => {
      const r = bySchedule.get(Number(scheduledEventId));
      if (r) Object.assign(r, { status, closedAt: iso, ...extra });
    };
    if (ev.activityTaskCompletedEventAttributes) {
      const c = ev.activityTaskCompletedEventAttributes;
      close(c.scheduledEventId, 'completed', { result: decode(c.result as { payloads?: Payload[] }) });
    } else if (ev.activityTaskFailedEventAttributes) {
      const f = ev.activityTaskFailedEventAttributes;
      close(f.scheduledEventId, 'failed', { failure: f.failure?.message ?? undefined });
    } else if (ev.activityTaskTimedOutEventAttributes) {
      const f = ev.activityTaskTimedOutEventAttributes;
      close(f.scheduledEventId, 'timed-out', { failure: f.failure?.message ?? undefined });
    } else if (ev.activityTaskCanceledEventAttributes) {
      close(ev.activityTaskCanceledEventAttributes.scheduledEventId, 'cancelled', {});
    }
  }
  return [...bySchedule.values()];
}

// ---------------------------------------------------------------------------------------------
// Events (densepipe logs)

export interface RunEvent {
  /** ISO time with milliseconds. */
  time: string;
  source: 'workflow' | 'worker';
  kind: 'run-started' | 'run-completed' | 'run-failed' | 'run-cancelled' | 'run-terminated' | 'run-timed-out' | 'scheduled' | 'started' | 'completed' | 'failed' | 'timed-out' | 'cancelled' | 'log';
  eventId?: number;
  activity?: string;
  activityId?: string;
  role?: string;
  part?: string;
  queue?: string;
  worker?: string;
  attempt?: number;
  cached?: boolean;
  computeSeconds?: number;
  level?: string;
  message?: string;
  /** Exact time in ms (sub-millisecond from the history's nanoseconds), for ordering. */
  at: number;
}

/** Every workflow-level and activity event of a run with its role and part, ordered by time (then event id). */
export function historyEvents(history: History): RunEvent[] {
  const records = new Map(activityRecords(history).map((r) => [r.scheduledEventId, r]));
  const of = (scheduledEventId: unknown) => {
    const r = records.get(Number(scheduledEventId));
    return r ? { activity: r.activityType, activityId: r.activityId, role: r.role, ...(r.part ? { part: r.part } : {}), queue: r.queue } : {};
  };
  const out: RunEvent[] = [];
  for (const ev of history.events ?? []) {
    const { iso, ms } = eventTime(ev);
    const base = { time: iso, at: ms, source: 'workflow' as const, eventId: Number(ev.eventId) };
    if (ev.activityTaskScheduledEventAttributes) {
      out.push({ ...base, kind: 'scheduled', ...of(ev.eventId) });
    } else if (ev.activityTaskStartedEventAttributes) {
      const a = ev.activityTaskStartedEventAttributes;
      out.push({ ...base, kind: 'started', ...of(a.scheduledEventId), worker: a.identity ?? undefined, attempt: a.attempt ?? 1 });
    } else if (ev.activityTaskCompletedEventAttributes) {
      const a = ev.activityTaskCompletedEventAttributes;
      const result = records.get(Number(a.scheduledEventId))?.result as { cached?: boolean; computeSeconds?: number } | undefined;
      out.push({ ...base, kind: 'completed', ...of(a.scheduledEventId), ...(typeof result?.cached === 'boolean' ? { cached: result.cached } : {}), ...(typeof result?.computeSeconds === 'number' ? { computeSeconds: result.computeSeconds } : {}) });
    } else if (ev.activityTaskFailedEventAttributes) {
      const a = ev.activityTaskFailedEventAttributes;
      out.push({ ...base, kind: 'failed', ...of(a.scheduledEventId), message: a.failure?.message ?? undefined });
    } else if (ev.activityTaskTimedOutEventAttributes) {
      const a = ev.activityTaskTimedOutEventAttributes;
      out.push({ ...base, kind: 'timed-out', ...of(a.scheduledEventId), message: a.failure?.message ?? undefined });
    } else if (ev.activityTaskCanceledEventAttributes) {
      out.push({ ...base, kind: 'cancelled', ...of(ev.activityTaskCanceledEventAttributes.scheduledEventId) });
    } else if (ev.workflowExecutionStartedEventAttributes) {
      out.push({ ...base, kind: 'run-started' });
    } else if (ev.workflowExecutionCompletedEventAttributes) {
      out.push({ ...base, kind: 'run-completed' });
    } else if (ev.workflowExecutionFailedEventAttributes) {
      out.push({ ...base, kind: 'run-failed', message: ev.workflowExecutionFailedEventAttributes.failure?.message ?? undefined });
    } else if (ev.workflowExecutionCanceledEventAttributes) {
      out.push({ ...base, kind: 'run-cancelled' });
    } else if (ev.workflowExecutionTerminatedEventAttributes) {
      out.push({ ...base, kind: 'run-terminated', message: ev.workflowExecutionTerminatedEventAttributes.reason ?? undefined });
    } else if (ev.workflowExecutionTimedOutEventAttributes) {
      out.push({ ...base, kind: 'run-timed-out' });
    }
  }
  return sortEvents(out);
}

/**
 * Time order, stable: Temporal writes an activity's `started` event when the attempt ends, so history
 * order puts it after events that happened later.
 */
export function sortEvents(events: RunEvent[]): RunEvent[] {
  return events
    .map((e, i) => [e, i] as const)
    .sort(([a, i], [b, j]) => a.at - b.at || i - j)
    .map(([e]) => e);
}

const KIND_WORDS: Record<RunEvent['kind'], string> = {
  'run-started': 'run started',
  'run-completed': 'run completed',
  'run-failed': 'run FAILED',
  'run-cancelled': 'run cancelled',
  'run-terminated': 'run terminated',
  'run-timed-out': 'run TIMED OUT',
  scheduled: 'scheduled',
  started: 'started',
  completed: 'completed',
  failed: 'FAILED',
  'timed-out': 'TIMED OUT',
  cancelled: 'cancelled',
  log: 'log',
};

/** One readable line: time, what happened, the activity, its role and part, where, and why. */
export function formatEvent(e: RunEvent): string {
  const time = e.time.replace('T', ' ').replace('Z', '');
  const who = e.activity ? `${e.activity.padEnd(18)} ${`${e.role ?? ''}${e.part ? ` [${e.part}]` : ''}`.padEnd(29)} ` : '';
  const details: string[] = [];
  if (e.kind === 'scheduled' && e.queue) details.push(`on queue ${e.queue}`);
  if (e.kind === 'started') details.push(`by ${e.worker ?? '?'} (attempt ${e.attempt ?? 1})`);
  if (e.kind === 'completed' && e.cached !== undefined) details.push(e.cached ? 'reused from cache' : `computed in ${(e.computeSeconds ?? 0).toFixed(1)} s`);
  if (e.kind === 'log') details.push(`${e.worker ? `${e.worker} ` : ''}${e.attempt ? `(attempt ${e.attempt}) ` : ''}${e.level ?? 'INFO'}: ${e.message ?? ''}`);
  else if (e.message) details.push(`: ${e.message}`);
  return `${time}  ${KIND_WORDS[e.kind].padEnd(10)} ${who}${details.join(' ')}`.trimEnd();
}

// ---------------------------------------------------------------------------------------------
// Artifacts (densepipe status / artifacts)

export interface StageOutput extends Role {
  label: string;
  activity: string;
  status: ActivityRecord['status'] | 'running';
  /** The stage name in the store's layout (`stages/<stage>/<hash>/`); absent for the report. */
  stage?: string;
  hash?: string;
  cached?: boolean;
  /** The store root, `s3://bucket/prefix` or `file:///path`. */
  store: string;
  /** Full URIs: `manifest`, `prefix` (the output's folder), then each file of the result (backbone, metrics, ...). */
  uris: Record<string, string>;
}

interface UrlMaker {
  uri: string;
  url(key: string): string;
}

/** The URIs of a stage result: each `<name>Key` field, shard folders per split, the TensorBoard folder. */
export function resultUris(store: UrlMaker, stage: string, hash: string, result: unknown, manifestKey = manifestKeyOf(stage, hash)): Record<string, string> {
  const prefix = manifestKey.slice(0, manifestKey.lastIndexOf('/'));
  const uris: Record<string, string> = { manifest: store.url(manifestKey), prefix: `${store.url(prefix)}/` };
  Object.assign(uris, keyUris(store, result));
  const r = (result ?? {}) as Record<string, unknown>;
  const splits = r.splits as Record<string, { shardKeys?: string[] }> | undefined;
  for (const [split, s] of Object.entries(splits ?? {})) {
    const first = s.shardKeys?.[0];
    if (!first) continue;
    const folder = first.includes('/') ? store.url(first.slice(0, first.lastIndexOf('/'))) : store.uri;
    uris[`shards:${split}`] = `${folder}/ (${s.shardKeys!.length} shards)`;
  }
  if (TRAINED_STAGES.has(stage)) uris.tensorboard = `${store.url(tensorboardPrefix(prefix))}/`;
  return uris;
}

/** Stages whose training writes TensorBoard events (stages/pretrain/loop.ts, stages/downstream). */
const TRAINED_STAGES = new Set([pretrainStage.name, supervisedStage.name, evaluationStage.name]);

/**
 * The stage a running activity is computing, from its recorded input: the same key `runStage` will
 * compute, so a running pretraining's folder (and its live TensorBoard events) is known before it ends.
 * Only for the long-running stages, whose keys need no IO.
 */
function pendingStage(activityType: string, input: unknown): { stage: string; hash: string } | null {
  const a = (input ?? {}) as Record<string, never>;
  const keyed: Record<string, () => { stage: Stage<never, never, unknown>; inputs: unknown; config: unknown }> = {
    pretrain: () => ({ stage: pretrainStage as Stage<never, never, unknown>, inputs: { dataset: a.dataset, proposals: a.proposals }, config: a.pretrain }),
    pretrainSupervised: () => ({ stage: supervisedStage as Stage<never, never, unknown>, inputs: { dataset: a.dataset }, config: supervisedConfigFor(a.pretrain) }),
    evaluate: () => ({ stage: evaluationStage as Stage<never, never, unknown>, inputs: { dataset: a.dataset, backbone: a.backbone }, config: a.evaluation }),
  };
  const make = keyed[activityType];
  if (!make) return null;
  try {
    const { stage, inputs, config } = make();
    return { stage: stage.name, hash: stageHash(stage, inputs as never, config as never) };
  } catch {
    return null;
  }
}

export function storeOf(config: StoreConfig): UrlMaker {
  return openStore({ uri: config.uri, endpoint: config.endpoint, region: config.region });
}

/** Each activity's output (or, while it runs, where it will be) with its role and full URIs. */
export function stageOutputs(history: History, store?: UrlMaker): StageOutput[] {
  const input = historyInput(history);
  const urls = store ?? (input?.config?.store ? storeOf(input.config.store as StoreConfig) : null);
  if (!urls) return [];
  const out: StageOutput[] = [];
  for (const r of activityRecords(history)) {
    const base = { role: r.role, ...(r.part ? { part: r.part } : {}), label: ROLE_LABELS[r.role] ?? r.role, activity: r.activityType, store: urls.uri };
    const outcome = r.result as { ref?: StageRef; cached?: boolean; htmlKey?: string; markdownKey?: string; jsonKey?: string } | undefined;
    if (r.status === 'completed' && outcome?.ref) {
      out.push({ ...base, status: 'completed', stage: outcome.ref.stage, hash: outcome.ref.hash, cached: outcome.cached, uris: resultUris(urls, outcome.ref.stage, outcome.ref.hash, outcome.ref.result, outcome.ref.manifestKey) });
    } else if (r.status === 'completed' && outcome?.htmlKey) {
      out.push({ ...base, status: 'completed', uris: { html: urls.url(outcome.htmlKey), ...(outcome.markdownKey ? { markdown: urls.url(outcome.markdownKey) } : {}), ...(outcome.jsonKey ? { json: urls.url(outcome.jsonKey) } : {}) } });
    } else if (r.status === 'completed') {
      out.push({ ...base, status: 'completed', uris: {} });
    } else {
      const pending = pendingStage(r.activityType, r.input);
      const status = r.status === 'scheduled' ? 'running' : r.status;
      out.push({ ...base, status, ...(pending ? { stage: pending.stage, hash: pending.hash, uris: resultUris(urls, pending.stage, pending.hash, {}) } : { uris: {} }) });
    }
  }
  // A role retried as a new activity (failed, then resumed in the same run) keeps only its latest row.
  return out.filter((o, i) => !out.slice(i + 1).some((later) => later.role === o.role && later.part === o.part));
}
