import { randomBytes } from 'node:crypto';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { RunConfig } from '../core/config.js';
import { configHash as hashConfig, mergeDeep, parseRunConfig } from '../core/config.js';
import {
  CPU_QUEUE,
  PROGRESS_QUERY,
  SEARCH_ATTRIBUTES,
  WORKFLOW_TYPE,
  type ReproductionInput,
  type ReproductionProgress,
  type ReproductionResult,
} from '../workflows/types.js';
import { formatEvent, historyEvents } from './history.js';

const attr = {
  method: defineSearchAttributeKey(SEARCH_ATTRIBUTES.method, SearchAttributeType.KEYWORD),
  dataset: defineSearchAttributeKey(SEARCH_ATTRIBUTES.dataset, SearchAttributeType.KEYWORD),
  configHash: defineSearchAttributeKey(SEARCH_ATTRIBUTES.configHash, SearchAttributeType.KEYWORD),
  runName: defineSearchAttributeKey(SEARCH_ATTRIBUTES.runName, SearchAttributeType.KEYWORD),
};

export function datasetLabel(config: RunConfig): string {
  const src = config.data.source as { kind: string; size?: string; root?: string; annotations?: string };
  return src.kind === 'synthetic' ? `synthetic-${src.size}` : `${src.kind}:${src.root ?? src.annotations ?? ''}`;
}

export async function startRun(client: Client, config: RunConfig, options: { workflowId?: string; resumedFrom?: string } = {}): Promise<WorkflowHandle> {
  const hash = hashConfig(config);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const workflowId = options.workflowId ?? `${config.name}-${stamp}-${randomBytes(2).toString('hex')}`;
  const input: ReproductionInput = { config, configHash: hash, resumedFrom: options.resumedFrom };
  return client.workflow.start(WORKFLOW_TYPE, {
    taskQueue: CPU_QUEUE,
    workflowId,
    args: [input],
    typedSearchAttributes: [
      { key: attr.method, value: config.pretrain.method },
      { key: attr.dataset, value: datasetLabel(config) },
      { key: attr.configHash, value: hash },
      { key: attr.runName, value: config.name },
    ],
    memo: { configHash: hash, resumedFrom: options.resumedFrom ?? '' },
  });
}

/** The input a run was started with, read from the first event of its history. */
export async function runInput(client: Client, workflowId: string): Promise<ReproductionInput> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  const payload = started?.input?.payloads?.[0];
  if (!payload) throw new Error(`run ${workflowId} has no recorded input`);
  return defaultPayloadConverter.fromPayload<ReproductionInput>(payload as Payload);
}

/**
 * Start a new run from an earlier one's config (optionally changed). Every stage whose content
 * address is unchanged finds its manifest and returns at once; only the rest is redone.
 */
export async function resumeRun(client: Client, workflowId: string, configPatch: Record<string, unknown> = {}): Promise<WorkflowHandle> {
  const previous = await runInput(client, workflowId);
  const config = parseRunConfig(mergeDeep(previous.config as unknown as Record<string, unknown>, configPatch), `resume of ${workflowId}`);
  return startRun(client, config, { resumedFrom: workflowId });
}

export interface PendingActivityView {
  activityType: string;
  attempt: number;
  state: string;
  heartbeat?: { stage?: string; role?: string; fraction?: number; step?: number; total?: number; message?: string; metrics?: Record<string, number> };
  lastFailure?: string;
}

export interface RunStatus {
  workflowId: string;
  runId: string;
  status: string;
  startTime?: Date;
  closeTime?: Date;
  progress?: ReproductionProgress;
  pending: PendingActivityView[];
  result?: ReproductionResult;
  failure?: string;
}

export async function describeRun(client: Client, workflowId: string): Promise<RunStatus> {
  const handle = client.workflow.getHandle(workflowId);
  const d = await handle.describe();
  const pending: PendingActivityView[] = (d.raw.pendingActivities ?? []).map((a) => {
    const details = a.heartbeatDetails?.payloads?.[0];
    return {
      activityType: a.activityType?.name ?? '?',
      attempt: a.attempt ?? 1,
      state: String(a.state ?? ''),
      heartbeat: details ? defaultPayloadConverter.fromPayload(details as Payload) : undefined,
      lastFailure: a.lastFailure?.message ?? undefined,
    };
  });
  let progress: ReproductionProgress | undefined;
  let result: ReproductionResult | undefined;
  let failure: string | undefined;
  try {
    progress = await handle.query<ReproductionProgress>(PROGRESS_QUERY);
  } catch {
    /* no worker to answer the query right now: status still shows the server's view */
  }
  if (d.status.name === 'COMPLETED') result = (await handle.result()) as ReproductionResult;
  if (d.status.name === 'FAILED') {
    try {
      await handle.result();
    } catch (err) {
      failure = failureMessage(err);
    }
  }
  return { workflowId, runId: d.runId, status: d.status.name, startTime: d.startTime, closeTime: d.closeTime, progress, pending, result, failure };
}

/** The innermost message of a workflow failure: the activity's own error text. */
export function failureMessage(err: unknown): string {
  let e = err as { cause?: unknown; message?: string; type?: string } | undefined;
  if (err instanceof WorkflowFailedError) e = err.cause as typeof e;
  const chain: string[] = [];
  while (e) {
    if (e.message) chain.push(e.message);
    e = e.cause as typeof e;
  }
  return chain[chain.length - 1] ?? String(err);
}

export async function listRuns(client: Client, query = `WorkflowType = '${WORKFLOW_TYPE}'`, limit = 50) {
  const rows: Array<{ workflowId: string; status: string; startTime: Date; method?: string; dataset?: string; configHash?: string }> = [];
  for await (const wf of client.workflow.list({ query })) {
    const sa = wf.typedSearchAttributes;
    rows.push({
      workflowId: wf.workflowId,
      status: wf.status.name,
      startTime: wf.startTime,
      method: sa.get(attr.method),
      dataset: sa.get(attr.dataset),
      configHash: sa.get(attr.configHash),
    });
    if (rows.length >= limit) break;
  }
  return rows;
}

/** A readable event log of a run: each activity event with its role and part, where it ran, attempts and failures, in time order. */
export async function runEvents(client: Client, workflowId: string): Promise<string[]> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  return historyEvents(history).map(formatEvent);
}
