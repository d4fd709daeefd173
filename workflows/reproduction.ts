import { ActivityFailure, ApplicationFailure, defineQuery, patched, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type * as cpuActivities from '../activities/cpu.js';
import type * as gpuActivities from '../activities/gpu.js';
import type { ProposalResult } from '../stages/proposals/index.js';
import { NON_RETRYABLE_ERROR_TYPES } from '../core/errors.js';
import {
  CPU_QUEUE,
  GPU_QUEUE,
  PROGRESS_QUERY,
  type ActivityOutcome,
  type ReproductionInput,
  type ReproductionProgress,
  type ReproductionResult,
  type StageProgress,
} from './types.js';

export const progressQuery = defineQuery<ReproductionProgress>(PROGRESS_QUERY);

const retry = {
  initialInterval: '2s',
  backoffCoefficient: 2,
  maximumInterval: '1m',
  maximumAttempts: 5,
  nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES,
};

/**
 * shard -> proposals (one activity per shard) -> pretrain (gpu queue) -> evaluate (+ random-init
 * baseline) -> report. Every activity returns a small StageRef; stages whose content address
 * already has a manifest return at once, which is how `resume` and re-runs skip finished work.
 */
export async function reproductionWorkflow(input: ReproductionInput): Promise<ReproductionResult> {
  const { config } = input;
  const heartbeatTimeout = `${config.orchestration.heartbeatTimeoutSeconds}s`;

  const cpu = proxyActivities<typeof cpuActivities>({
    taskQueue: CPU_QUEUE,
    startToCloseTimeout: '2h',
    heartbeatTimeout,
    retry,
  });
  const report = proxyActivities<typeof cpuActivities>({ taskQueue: CPU_QUEUE, startToCloseTimeout: '5m', retry });
  const gpu = proxyActivities<typeof gpuActivities>({
    taskQueue: GPU_QUEUE,
    // Pretraining may queue behind other runs for the one GPU; it checkpoints, so a long bound is safe.
    scheduleToStartTimeout: '24h',
    startToCloseTimeout: '48h',
    heartbeatTimeout,
    retry: { ...retry, maximumAttempts: 20 },
  });

  // Added after runs were recorded (histories from before replay the old path, test/workflows/replay):
  // the supervised baseline, and baselines that start as soon as the data exists.
  const baselinesV2 = patched('baselines-v2');
  const supervised = baselinesV2 && config.baselines?.supervised !== false;
  const steps = supervised
    ? ['shard', 'proposals', 'pretrain', 'pretrain-supervised', 'evaluate', 'evaluate-baseline', 'evaluate-supervised', 'report']
    : ['shard', 'proposals', 'pretrain', 'evaluate', 'evaluate-baseline', 'report'];
  const stages: StageProgress[] = steps.map((step) => ({
    step,
    status: 'pending',
    parts: 1,
    partsDone: 0,
    cachedParts: 0,
    computeSeconds: 0,
  }));
  let reportUrl: string | undefined;
  setHandler(progressQuery, () => ({ stages, reportUrl }));

  const stageOf = (step: string) => stages.find((s) => s.step === step)!;
  async function track<T>(step: string, parts: Array<() => Promise<ActivityOutcome<T>>>): Promise<Array<ActivityOutcome<T>>> {
    const s = stageOf(step);
    s.status = 'running';
    s.parts = parts.length;
    s.startedAt = new Date().toISOString();
    try {
      const outcomes = await Promise.all(
        parts.map(async (part) => {
          const outcome = await part();
          s.partsDone += 1;
          if (outcome.cached) s.cachedParts += 1;
          s.computeSeconds += outcome.computeSeconds;
          return outcome;
        }),
      );
      s.status = outcomes.length > 0 && outcomes.every((o) => o.cached) ? 'cached' : 'done';
      return outcomes;
    } catch (err) {
      s.status = 'failed';
      s.error = describeFailure(err);
      throw err;
    } finally {
      s.finishedAt = new Date().toISOString();
    }
  }

  const [dataset] = await track('shard', [() => cpu.shardDataset({ store: config.store, data: config.data })]);

  const trainShards = dataset!.ref.result.splits.train?.shardKeys ?? [];
  let proposals: ActivityOutcome<ProposalResult>[] = [];
  const { enabled: proposalsEnabled, ...proposalConfig } = config.proposals;
  if (proposalsEnabled === false) {
    stageOf('proposals').status = 'skipped';
  } else {
    proposals = await track(
      'proposals',
      trainShards.map((shardKey) => () => cpu.proposeRegions({ store: config.store, proposals: proposalConfig, dataset: dataset!.ref, shardKey })),
    );
  }

  // The supervised baseline trains after pretraining: a task queue does not promise FIFO (measured:
  // the gpu worker picked the supervised task first when both were scheduled together), and the
  // method's own result should come first. Its evaluation then overlaps the others'.
  const pretraining = track('pretrain', [
    () => gpu.pretrain({ store: config.store, pretrain: config.pretrain, dataset: dataset!.ref, proposals: proposals.map((p) => p.ref) }),
  ]);
  const supervisedEvaluation = supervised
    ? pretraining
        .then(() => track('pretrain-supervised', [() => gpu.pretrainSupervised({ store: config.store, pretrain: config.pretrain, dataset: dataset!.ref })]))
        .then(async ([trained]) => ({
          trained: trained!,
          evaluated: await track('evaluate-supervised', [() => cpu.evaluate({ store: config.store, evaluation: config.evaluation, dataset: dataset!.ref, backbone: trained!.ref })]),
        }))
    : Promise.resolve(null);

  // The random-init baseline needs only the data too: it runs on the cpu workers meanwhile.
  const evaluateBaseline = () =>
    track('evaluate-baseline', [() => cpu.evaluate({ store: config.store, evaluation: config.evaluation, dataset: dataset!.ref, backbone: null })]);
  const earlyBaseline = baselinesV2 ? evaluateBaseline() : null;
  // Awaited below; these handlers only keep an early failure from counting as unhandled meanwhile.
  supervisedEvaluation.catch(() => undefined);
  earlyBaseline?.catch(() => undefined);

  const [pretrained] = await pretraining;

  const [evaluation, baseline, supervisedOutcome] = await Promise.all([
    track('evaluate', [() => cpu.evaluate({ store: config.store, evaluation: config.evaluation, dataset: dataset!.ref, backbone: pretrained!.ref })]),
    earlyBaseline ?? evaluateBaseline(),
    supervisedEvaluation,
  ]);

  const info = workflowInfo();
  const reportStage = stageOf('report');
  reportStage.status = 'running';
  reportStage.startedAt = new Date().toISOString();
  const written = await report.writeReport({
    store: config.store,
    run: {
      workflowId: info.workflowId,
      runId: info.runId,
      startedAt: info.startTime.toISOString(),
      config,
      configHash: input.configHash,
      resumedFrom: input.resumedFrom,
    },
    stages: stages.filter((s) => s.step !== 'report'),
    refs: {
      dataset: dataset!.ref,
      proposals: proposals.map((p) => p.ref),
      pretrain: pretrained!.ref,
      evaluation: evaluation[0]!.ref,
      baseline: baseline[0]!.ref,
      ...(supervisedOutcome ? { supervised: supervisedOutcome.evaluated[0]!.ref, supervisedPretrain: supervisedOutcome.trained.ref } : {}),
    },
  });
  reportStage.status = 'done';
  reportStage.partsDone = 1;
  reportStage.finishedAt = new Date().toISOString();
  reportUrl = written.url;

  return {
    reportUrl: written.url,
    reportKey: written.htmlKey,
    markdownKey: written.markdownKey,
    metrics: evaluation[0]!.ref.result.metrics,
    baselineMetrics: baseline[0]!.ref.result.metrics,
    ...(supervisedOutcome ? { supervisedMetrics: supervisedOutcome.evaluated[0]!.ref.result.metrics } : {}),
    stages,
  };
}

function describeFailure(err: unknown): string {
  let e: unknown = err;
  // ActivityFailure wraps the ApplicationFailure that carries the activity's own message.
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  if (e instanceof ApplicationFailure) return `${e.type ?? 'Error'}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}
