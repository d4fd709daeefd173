/**
 * `densepipe logs RUN`: the run's history events and its workers' own log lines, each with the stage
 * role and part, in time order; `--follow` until the run closes.
 *
 * Worker lines come from the JSON-lines logs of the workers `densepipe up` started
 * (`$DENSEPIPE_HOME/logs/worker-*.log`) or from files given with `--worker-log` (e.g. `docker compose
 * logs worker-gpu > gpu.log`); a line belongs to the run when its `workflowId` is the run's.
 */
import { existsSync, readdirSync, readFileSync, statSync, openSync, readSync, closeSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Client } from '@temporalio/client';
import { stateDir } from './env.js';
import { activityRecords, historyEvents, sortEvents, type ActivityRecord, type History, type RunEvent } from './history.js';

/** The worker logs of the local services (one file per queue, appended across restarts). */
export function localWorkerLogs(dir = stateDir()): string[] {
  const logs = join(dir, 'logs');
  if (!existsSync(logs)) return [];
  return readdirSync(logs)
    .filter((f) => /^worker-.*\.log$/.test(f))
    .sort()
    .map((f) => join(logs, f));
}

interface WorkerLine {
  time?: string;
  level?: string;
  message?: string;
  workflowId?: string;
  activityId?: string;
  activityType?: string;
  attempt?: number;
  taskQueue?: string;
  pid?: number;
}

/** The run's lines of one worker log (JSON lines; other lines, e.g. native library output, are skipped). */
export function workerLogEvents(text: string, workflowId: string, records: Map<string, ActivityRecord>, source: string): RunEvent[] {
  const out: RunEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let l: WorkerLine;
    try {
      l = JSON.parse(line) as WorkerLine;
    } catch {
      continue;
    }
    if (l.workflowId !== workflowId || !l.time) continue;
    const r = l.activityId ? records.get(l.activityId) : undefined;
    out.push({
      time: l.time,
      at: Date.parse(l.time),
      source: 'worker',
      kind: 'log',
      ...(l.activityType ? { activity: l.activityType } : {}),
      ...(l.activityId ? { activityId: l.activityId } : {}),
      ...(r ? { role: r.role, ...(r.part ? { part: r.part } : {}) } : {}),
      ...(l.taskQueue ? { queue: l.taskQueue } : {}),
      worker: `${source}${l.pid ? ` pid ${l.pid}` : ''}`,
      ...(l.attempt ? { attempt: l.attempt } : {}),
      level: l.level ?? 'INFO',
      message: l.message ?? '',
    });
  }
  return out;
}

const sourceName = (file: string) => basename(file).replace(/\.log$/, '');

/** History events plus the run's worker log lines, in time order. */
export function runLog(history: History, workflowId: string, workerLogs: string[]): RunEvent[] {
  const records = new Map(activityRecords(history).map((r) => [r.activityId, r]));
  const lines = workerLogs.filter((f) => existsSync(f)).flatMap((f) => workerLogEvents(readFileSync(f, 'utf8'), workflowId, records, sourceName(f)));
  return sortEvents([...historyEvents(history), ...lines]);
}

const CLOSED = new Set(['run-completed', 'run-failed', 'run-cancelled', 'run-terminated', 'run-timed-out']);

/**
 * Print a running run's events as they happen until it closes. Running attempts are shown from the
 * server's pending-activity view as soon as they start (the history records `started` only when an
 * attempt ends); worker lines are read as the files grow.
 */
export async function followRunLog(
  client: Client,
  workflowId: string,
  options: { workerLogs: string[]; print: (e: RunEvent) => void; intervalMs?: number; signal?: AbortSignal },
): Promise<void> {
  const seen = new Set<string>();
  const offsets = new Map<string, number>();
  const handle = client.workflow.getHandle(workflowId);
  for (;;) {
    const history = await handle.fetchHistory();
    const records = activityRecords(history);
    const byId = new Map(records.map((r) => [r.activityId, r]));
    const batch: RunEvent[] = [];
    for (const e of historyEvents(history)) {
      const key = e.kind === 'started' ? `started:${e.activityId}:${e.attempt}` : `event:${e.eventId}`;
      if (seen.has(key)) continue;
      seen.add(key);
      batch.push(e);
    }
    const described = await handle.describe();
    for (const p of described.raw.pendingActivities ?? []) {
      // PENDING_ACTIVITY_STATE_STARTED (2) or CANCEL_REQUESTED (3): an attempt is running now.
      if (!p.lastStartedTime || (Number(p.state) !== 2 && Number(p.state) !== 3)) continue;
      const key = `started:${p.activityId}:${p.attempt}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const r = byId.get(p.activityId ?? '');
      const ms = Number(p.lastStartedTime.seconds ?? 0) * 1000 + (p.lastStartedTime.nanos ?? 0) / 1e6;
      batch.push({
        time: new Date(Math.floor(ms)).toISOString(),
        at: ms,
        source: 'workflow',
        kind: 'started',
        activity: p.activityType?.name ?? r?.activityType,
        activityId: p.activityId ?? undefined,
        ...(r ? { role: r.role, ...(r.part ? { part: r.part } : {}), queue: r.queue } : {}),
        worker: p.lastWorkerIdentity ?? undefined,
        attempt: p.attempt ?? 1,
      });
    }
    for (const file of options.workerLogs) {
      if (!existsSync(file)) continue;
      const size = statSync(file).size;
      const from = offsets.get(file) ?? 0;
      if (size <= from) continue;
      const buf = Buffer.alloc(size - from);
      const fd = openSync(file, 'r');
      try {
        readSync(fd, buf, 0, buf.length, from);
      } finally {
        closeSync(fd);
      }
      const text = buf.toString('utf8');
      const complete = text.lastIndexOf('\n') + 1;
      offsets.set(file, from + Buffer.byteLength(text.slice(0, complete)));
      batch.push(...workerLogEvents(text.slice(0, complete), workflowId, byId, sourceName(file)));
    }
    for (const e of sortEvents(batch)) options.print(e);
    if (batch.some((e) => CLOSED.has(e.kind)) || options.signal?.aborted) return;
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 1000));
  }
}
