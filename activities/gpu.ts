// Activities for the `gpu` task queue: pretraining, one at a time per worker.
import type { StoreConfig } from '../core/config.js';
import type { StageRef } from '../core/stage.js';
import type { ShardResult } from '../stages/data/index.js';
import { pretrainStage, type PretrainConfig, type PretrainResult } from '../stages/pretrain/index.js';
import { supervisedConfigFor, supervisedStage, type SupervisedResult } from '../stages/pretrain/supervised.js';
import type { ActivityOutcome } from '../workflows/types.js';
import { runStageActivity } from './context.js';

export async function pretrain(args: {
  store: StoreConfig;
  pretrain: PretrainConfig;
  dataset: StageRef<ShardResult>;
  proposals: StageRef<{ proposalsKey: string; segmentsKey?: string }>[];
}): Promise<ActivityOutcome<PretrainResult>> {
  return runStageActivity(pretrainStage, args.store, { dataset: args.dataset, proposals: args.proposals }, args.pretrain);
}

/** The supervised baseline: same backbone, data and budget as `pretrain`, trained with the labels. */
export async function pretrainSupervised(args: { store: StoreConfig; pretrain: PretrainConfig; dataset: StageRef<ShardResult> }): Promise<ActivityOutcome<SupervisedResult>> {
  return runStageActivity(supervisedStage, args.store, { dataset: args.dataset }, supervisedConfigFor(args.pretrain));
}
