// Types shared by the workflow, the activities and the CLI. Pure types: safe to import from workflow code.
import type { RunConfig } from '../core/config.js';
import type { StageRef } from '../core/stage.js';

export const WORKFLOW_TYPE = 'reproductionWorkflow';
export const CPU_QUEUE = 'cpu';
export const GPU_QUEUE = 'gpu';
export const PROGRESS_QUERY = 'progress';

/** Custom search attributes, registered on the dev server by `densepipe up` (see cli/services.ts). */
export const SEARCH_ATTRIBUTES = {
  method: 'DensepipeMethod',
  dataset: 'DensepipeDataset',
  configHash: 'DensepipeConfigHash',
  runName: 'DensepipeRunName',
} as const;

export interface ReproductionInput {
  config: RunConfig;
  configHash: string;
  /** Set by `densepipe resume`: the run this one continues. */
  resumedFrom?: string;
}

export type StageStatus = 'pending' | 'running' | 'done' | 'cached' | 'failed' | 'skipped';

export interface StageProgress {
  /** Pipeline step: shard, proposals, pretrain, evaluate, evaluate-baseline, report. */
  step: string;
  status: StageStatus;
  /** Number of activities in this step (proposals fan out per shard). */
  parts: number;
  partsDone: number;
  cachedParts: number;
  computeSeconds: number;
  startedAt?: string;
  finishedAt?: string;
  error?: string;
}

export interface ReproductionProgress {
  stages: StageProgress[];
  reportUrl?: string;
}

/** What an activity returns: the stage reference plus how it was obtained. */
export interface ActivityOutcome<O = unknown> {
  ref: StageRef<O>;
  cached: boolean;
  computeSeconds: number;
}

export interface ReproductionResult {
  reportUrl: string;
  reportKey: string;
  markdownKey: string;
  metrics: Record<string, number>;
  /** Random-init backbone, same evaluation. */
  baselineMetrics: Record<string, number>;
  /** Supervised backbone (same data and budget), same evaluation; absent when disabled. */
  supervisedMetrics?: Record<string, number>;
  stages: StageProgress[];
}
