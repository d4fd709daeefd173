/**
 * `densepipe baseline promote RUN|SUITE-RUN` and `baseline show`: the reference nightlies are
 * compared with, stored with its provenance (source run, config hashes, code version, date).
 */
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { IncompatibleArtifactError } from '../core/errors.js';
import { buildBaseline, baselineKey, loadBaseline, saveBaseline, type Baseline } from '../stages/regression/records.js';
import { codeVersion, describeCodeVersion } from '../stages/regression/provenance.js';
import { loadSuite, type Suite } from '../stages/regression/suite-config.js';
import { SUITE_WORKFLOW_TYPE, type MemberOutcome, type SuiteResult } from '../stages/regression/types.js';
import type { ReproductionResult } from '../workflows/types.js';
import { connectClient } from './client.js';
import { runInput } from './runs.js';
import { suiteRunInput, suiteStore, type CliOutput } from './suite.js';

/**
 * Build the baseline from a finished suite run (all its completed members) or from one
 * reproduction run, which must be a member of `suite` (matched by config hash).
 */
export async function promoteBaseline(client: Client, workflowId: string, suite?: Suite): Promise<{ baseline: Baseline; key: string; historyKey: string }> {
  const handle = client.workflow.getHandle(workflowId);
  const d = await handle.describe();
  if (d.status.name !== 'COMPLETED') throw new IncompatibleArtifactError(`run is ${d.status.name}; only a completed run can become a baseline`, workflowId);
  let baseline: Baseline;
  let target: Suite;
  if (d.type === SUITE_WORKFLOW_TYPE) {
    const input = await suiteRunInput(client, workflowId);
    target = input.suite;
    if (suite && suite.name !== target.name) throw new IncompatibleArtifactError(`suite run belongs to suite '${target.name}', not '${suite.name}'`, workflowId);
    const result = (await handle.result()) as SuiteResult;
    baseline = buildBaseline({ suite: target, outcomes: result.members, source: workflowId, sourceKind: 'suite', codeVersion: codeVersion() });
  } else {
    if (!suite) throw new IncompatibleArtifactError('a single reproduction run needs --suite FILE: the suite whose member it is', workflowId);
    target = suite;
    const input = await runInput(client, workflowId);
    const member = suite.members.find((m) => m.configHash === input.configHash);
    if (!member) {
      throw new IncompatibleArtifactError(`run config ${input.configHash} is not a member of suite '${suite.name}' (members: ${suite.members.map((m) => `${m.id}=${m.configHash}`).join(', ')})`, workflowId);
    }
    const result = (await handle.result()) as ReproductionResult;
    const outcome: MemberOutcome = { id: member.id, series: member.series, method: member.method, dataset: member.dataset, seed: member.seed, configHash: member.configHash, workflowId, status: 'completed', metrics: result.metrics, reportUrl: result.reportUrl };
    baseline = buildBaseline({ suite, outcomes: [outcome], source: workflowId, sourceKind: 'run', codeVersion: codeVersion() });
  }
  const store = suiteStore(target);
  await store.ensureReady({ create: target.store.createBucket });
  const saved = await saveBaseline(store, baseline);
  return { baseline, ...saved };
}

export function describeBaseline(b: Baseline, where: string): string {
  const lines = [
    `baseline for suite ${b.suiteName} (suite hash ${b.suiteHash}) at ${where}`,
    `  promoted ${b.provenance.promotedAt} from ${b.provenance.sourceKind} ${b.provenance.source}; code ${describeCodeVersion(b.provenance.codeVersion)}`,
  ];
  for (const [series, byMetric] of Object.entries(b.values)) {
    for (const [metric, xs] of Object.entries(byMetric)) lines.push(`  ${series} ${metric}: ${xs.map((x) => x.toFixed(4)).join(', ')} (${xs.length} seed${xs.length === 1 ? '' : 's'})`);
  }
  for (const m of b.members) lines.push(`  member ${m.id} config ${m.configHash}`);
  return lines.join('\n');
}

export function registerBaselineCommands(program: Command, out: CliOutput): void {
  const baseline = program.command('baseline').description('regression baselines');
  baseline
    .command('promote')
    .argument('<run>', 'a completed suite run, or a reproduction run with --suite')
    .option('--suite <file>', 'the suite the run belongs to (required for a single reproduction run)')
    .action(async (id: string, o) => {
      const suite = o.suite ? await loadSuite(o.suite) : undefined;
      const { client, close } = await connectClient();
      try {
        const { baseline: b, key, historyKey } = await promoteBaseline(client, id, suite);
        const store = suiteStore(suite ?? (await suiteRunInput(client, id)).suite);
        out.print(`${describeBaseline(b, store.url(key))}\n  kept as ${store.url(historyKey)}`, { key, historyKey, baseline: b });
      } finally {
        await close();
      }
    });
  baseline
    .command('show')
    .argument('<suite>', 'suite YAML (names the suite and its store)')
    .action(async (file: string) => {
      const suite = await loadSuite(file);
      const store = suiteStore(suite);
      const key = baselineKey(suite.name);
      const b = await loadBaseline(store, key);
      out.print(b ? describeBaseline(b, store.url(key)) : `no baseline for suite ${suite.name} at ${store.url(key)}`, b);
    });
}
