// Activities for the `cpu` task queue. Thin by design: all logic lives in stages/.
import type { StoreConfig } from '../core/config.js';
import type { StageRef } from '../core/stage.js';
import { shardStage, type ShardConfig, type ShardResult } from '../stages/data/index.js';
import { proposalStage, type ProposalConfig, type ProposalResult } from '../stages/proposals/index.js';
import { evaluationStage, type EvaluationConfig, type EvaluationResult } from '../stages/downstream/index.js';
import { writeRunReport, type ReportRequest, type WrittenReport } from '../stages/report/index.js';
import type { ActivityOutcome } from '../workflows/types.js';
import { runStageActivity, storeFor, toFailure } from './context.js';

export async function shardDataset(args: { store: StoreConfig; data: ShardConfig }): Promise<ActivityOutcome<ShardResult>> {
  return runStageActivity(shardStage, args.store, {}, args.data);
}

export async function proposeRegions(args: {
  store: StoreConfig;
  proposals: ProposalConfig;
  dataset: StageRef<ShardResult>;
  shardKey: string;
}): Promise<ActivityOutcome<ProposalResult>> {
  return runStageActivity(proposalStage, args.store, { dataset: args.dataset, shardKey: args.shardKey }, args.proposals);
}

export async function evaluate(args: {
  store: StoreConfig;
  evaluation: EvaluationConfig;
  dataset: StageRef<ShardResult>;
  backbone: StageRef<{ backboneKey: string }> | null;
}): Promise<ActivityOutcome<EvaluationResult>> {
  const role = args.backbone === null ? 'evaluate-baseline' : args.backbone.stage === 'pretrain-supervised' ? 'evaluate-supervised' : 'evaluate';
  return runStageActivity(evaluationStage, args.store, { dataset: args.dataset, backbone: args.backbone }, args.evaluation, role);
}

export async function writeReport(args: ReportRequest & { store: StoreConfig }): Promise<WrittenReport> {
  try {
    return await writeRunReport(await storeFor(args.store), args);
  } catch (err) {
    throw toFailure(err);
  }
}
