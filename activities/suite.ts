// Activities of the suite workflow (cpu queue). Thin: the logic is in stages/regression/.
import { ApplicationFailure } from '@temporalio/activity';
import type { StoreConfig } from '../core/config.js';
import { assertCompatible, baselineKey as defaultBaselineKey, configDiff, judge, loadBaseline, recentNightlies, reportPrefix, saveNightly } from '../stages/regression/records.js';
import { codeDiffSince, codeVersion } from '../stages/regression/provenance.js';
import { writeRegressionReport } from '../stages/regression/report.js';
import type { Suite } from '../stages/regression/suite-config.js';
import type { Judgement, MemberOutcome, SuiteInput } from '../stages/regression/types.js';
import { postWebhook } from '../stages/regression/webhook.js';
import { scrubSecrets, urlSecrets } from '../core/redact.js';
import { storeFor, toFailure } from './context.js';

interface SuiteRunInfo {
  workflowId: string;
  startedAt: string;
}

/** Compare the members' metrics with the baseline and record this run for the trend plots. */
export async function judgeSuite(args: { suite: Suite; baselineKey?: string; run: SuiteRunInfo; members: MemberOutcome[] }): Promise<Judgement> {
  try {
    const store = await storeFor(args.suite.store as StoreConfig);
    const key = args.baselineKey ?? defaultBaselineKey(args.suite.name);
    const baseline = await loadBaseline(store, key);
    if (baseline) assertCompatible(baseline, args.suite, store.url(key));
    const { verdict, comparisons } = judge(args.suite, args.members, baseline);
    const version = codeVersion();
    const recordKey = await saveNightly(store, {
      suiteName: args.suite.name,
      suiteHash: args.suite.suiteHash,
      workflowId: args.run.workflowId,
      startedAt: args.run.startedAt,
      codeVersion: version,
      verdict,
      members: args.members,
      comparisons,
    });
    return {
      verdict,
      comparisons,
      baseline: baseline ? { key, source: baseline.provenance.source, promotedAt: baseline.provenance.promotedAt, codeVersion: baseline.provenance.codeVersion } : null,
      recordKey,
      codeVersion: version,
    };
  } catch (err) {
    throw toFailure(err);
  }
}

export async function writeSuiteReport(args: { input: SuiteInput; run: SuiteRunInfo; members: MemberOutcome[]; judgement: Judgement; warnings: string[] }) {
  try {
    const { suite } = args.input;
    const store = await storeFor(suite.store as StoreConfig);
    const baseline = args.judgement.baseline ? await loadBaseline(store, args.judgement.baseline.key) : null;
    const trend = await recentNightlies(store, suite.name, suite.trendRuns);
    return await writeRegressionReport(store, reportPrefix(suite.name, args.run.workflowId), {
      suite: suite.name,
      suiteHash: suite.suiteHash,
      workflowId: args.run.workflowId,
      startedAt: args.run.startedAt,
      verdict: args.judgement.verdict,
      codeVersion: args.judgement.codeVersion,
      ui: args.input.ui,
      members: args.members,
      comparisons: args.judgement.comparisons,
      baseline: baseline ? { key: args.judgement.baseline!.key, suiteHash: baseline.suiteHash, provenance: baseline.provenance } : null,
      configChanges: baseline ? configDiff(baseline, suite) : [],
      codeDiff: baseline ? codeDiffSince(baseline.provenance.codeVersion, args.judgement.codeVersion) : 'no baseline to compare with',
      trend: trend.map((t) => ({ workflowId: t.workflowId, startedAt: t.startedAt, comparisons: t.comparisons })),
      warnings: args.warnings,
    });
  } catch (err) {
    throw toFailure(err);
  }
}

/**
 * One delivery attempt; the workflow's retry policy repeats it. The URL is read here, from this
 * worker's environment, and never leaves this function: errors name the variable and the host only.
 */
export async function notifyWebhook(args: { urlEnv: string; timeoutSeconds: number; body: unknown }): Promise<{ status: number }> {
  const url = process.env[args.urlEnv];
  if (!url) {
    throw ApplicationFailure.nonRetryable(`webhook.urlEnv: environment variable ${args.urlEnv} is not set on this cpu worker (it must hold the webhook URL)`, 'BadInputError');
  }
  try {
    return await postWebhook(url, args.body, args.timeoutSeconds, `$${args.urlEnv}`);
  } catch (err) {
    // Retryable on purpose: a webhook that is briefly down should get the next attempt.
    throw ApplicationFailure.retryable(scrubSecrets((err as Error).message, urlSecrets(url)), 'WebhookError');
  }
}
