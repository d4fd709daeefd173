/**
 * The nightly suite: every member reproduction runs as a child reproductionWorkflow, at most
 * `fanOut` at a time. Member stage outputs are content-addressed, so whatever did not change since
 * the last night is reused by the children for free. A failed member is recorded and the others
 * go on; the judgement then compares the finished members with the baseline, the report is written,
 * and an optional webhook gets the verdict (its failure is a warning in the result, never a pass).
 */
import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, executeChild, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type * as suiteActivities from '../activities/suite.js';
import { NON_RETRYABLE_ERROR_TYPES } from '../core/errors.js';
import type { SuiteMember } from '../stages/regression/suite-config.js';
import type { MemberOutcome, SuiteInput, SuiteResult } from '../stages/regression/types.js';
import { CPU_QUEUE, WORKFLOW_TYPE, type ReproductionInput, type ReproductionResult } from './types.js';

const activities = proxyActivities<typeof suiteActivities>({
  taskQueue: CPU_QUEUE,
  startToCloseTimeout: '10m',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});

export async function suiteWorkflow(input: SuiteInput): Promise<SuiteResult> {
  const { suite } = input;
  const info = workflowInfo();
  const run = { workflowId: info.workflowId, startedAt: info.startTime.toISOString() };

  const outcomes: MemberOutcome[] = new Array(suite.members.length);
  let next = 0;
  // `fanOut` lanes each take the next member when their last one closes: bounded parallelism
  // that stays deterministic (the order members start in depends only on completions in history).
  const lane = async () => {
    while (next < suite.members.length) {
      const i = next++;
      outcomes[i] = await runMember(suite.members[i]!, `${info.workflowId}-${suite.members[i]!.id}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(suite.fanOut, suite.members.length) }, lane));

  const judgement = await activities.judgeSuite({ suite, baselineKey: input.baselineKey, run, members: outcomes });
  const warnings: string[] = [];
  let written = await activities.writeSuiteReport({ input, run, members: outcomes, judgement, warnings });

  if (suite.webhook) {
    const hook = suite.webhook;
    const notify = proxyActivities<typeof suiteActivities>({
      taskQueue: CPU_QUEUE,
      startToCloseTimeout: `${hook.timeoutSeconds + 5}s`,
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: hook.maxAttempts },
    });
    try {
      await notify.notifyWebhook({
        // The variable's name only: the URL is a secret and never enters the history.
        urlEnv: hook.urlEnv,
        timeoutSeconds: hook.timeoutSeconds,
        body: {
          suite: suite.name,
          workflowId: run.workflowId,
          verdict: judgement.verdict,
          failedMembers: outcomes.filter((o) => o.status === 'failed').map((o) => ({ id: o.id, error: o.error })),
          comparisons: judgement.comparisons.map((c) => ({ series: c.series, metric: c.metric, verdict: c.verdict, delta: c.delta, band: c.bandHalfWidth, reason: c.reason })),
          reportUrl: written.url,
        },
      });
    } catch (err) {
      warnings.push(`webhook not delivered after ${hook.maxAttempts} attempt(s): ${innermostMessage(err)}`);
      // The report should say so too: whoever opens it must not assume the team was told.
      written = await activities.writeSuiteReport({ input, run, members: outcomes, judgement, warnings });
    }
  }

  return {
    suite: suite.name,
    suiteHash: suite.suiteHash,
    workflowId: run.workflowId,
    verdict: judgement.verdict,
    members: outcomes,
    failedMembers: outcomes.filter((o) => o.status === 'failed').map((o) => o.id),
    comparisons: judgement.comparisons,
    baselineKey: judgement.baseline?.key ?? null,
    reportUrl: written.url,
    reportKey: written.htmlKey,
    jsonKey: written.jsonKey,
    warnings,
  };
}

async function runMember(member: SuiteMember, workflowId: string): Promise<MemberOutcome> {
  const base = { id: member.id, series: member.series, method: member.method, dataset: member.dataset, seed: member.seed, configHash: member.configHash, workflowId };
  try {
    const result = await executeChild<(input: ReproductionInput) => Promise<ReproductionResult>>(WORKFLOW_TYPE, {
      workflowId,
      taskQueue: CPU_QUEUE,
      args: [{ config: member.config, configHash: member.configHash }],
    });
    return {
      ...base,
      status: 'completed',
      metrics: result.metrics,
      baselineMetrics: result.baselineMetrics,
      ...(result.supervisedMetrics ? { supervisedMetrics: result.supervisedMetrics } : {}),
      reportUrl: result.reportUrl,
    };
  } catch (err) {
    return { ...base, status: 'failed', error: innermostMessage(err) };
  }
}

function innermostMessage(err: unknown): string {
  let e: unknown = err;
  // Child failure -> the child's own failure -> activity failure -> the activity's error: report the last.
  while ((e instanceof ChildWorkflowFailure || e instanceof ActivityFailure || e instanceof ApplicationFailure) && e.cause) e = e.cause;
  if (e instanceof ApplicationFailure) return `${e.type ?? 'Error'}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}
