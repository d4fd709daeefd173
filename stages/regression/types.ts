// Pure types shared by the suite workflow, its activities and the CLI (safe to import from workflow code).
import type { Suite } from './suite-config.js';
import type { MetricComparison, Verdict } from './verdict.js';

export const SUITE_WORKFLOW_TYPE = 'suiteWorkflow';

export interface SuiteInput {
  suite: Suite;
  /** Explicit baseline key in the suite's store; default regression/baselines/<suite>.json. */
  baselineKey?: string;
  /** For links in the report: the Temporal UI and namespace the CLI saw when it started (or scheduled) the suite. */
  ui: { url: string; namespace: string };
}

export interface MemberOutcome {
  id: string;
  series: string;
  method: string;
  dataset: string;
  seed: number;
  configHash: string;
  workflowId: string;
  status: 'completed' | 'failed';
  /** Quality and diagnostic metrics of the pretrained backbone, as the reproduction returned them. */
  metrics?: Record<string, number>;
  /** The same evaluation of a random-init backbone, and of the supervised baseline (when trained). */
  baselineMetrics?: Record<string, number>;
  supervisedMetrics?: Record<string, number>;
  reportUrl?: string;
  error?: string;
}

export interface CodeVersion {
  packageVersion: string;
  gitCommit: string | null;
  /** Uncommitted changes to tracked files when the version was read. */
  dirty: boolean;
}

export interface Judgement {
  verdict: Verdict;
  comparisons: MetricComparison[];
  baseline: { key: string; source: string; promotedAt: string; codeVersion: CodeVersion } | null;
  /** The nightly record written for trends: regression/suites/<suite>/nightly/<stamp>-<workflowId>.json. */
  recordKey: string;
  codeVersion: CodeVersion;
}

export interface SuiteResult {
  suite: string;
  suiteHash: string;
  workflowId: string;
  verdict: Verdict;
  members: MemberOutcome[];
  failedMembers: string[];
  comparisons: MetricComparison[];
  baselineKey: string | null;
  reportUrl: string;
  reportKey: string;
  jsonKey: string;
  /** Things that went wrong without changing the verdict (e.g. a webhook that never answered). */
  warnings: string[];
}
