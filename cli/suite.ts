/** `densepipe suite validate|run|report`: start a suite workflow now, and fetch its report. */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { openStore, type ArtifactStore } from '../core/store/index.js';
import { loadSuite, type Suite } from '../stages/regression/suite-config.js';
import { SUITE_WORKFLOW_TYPE, type SuiteInput, type SuiteResult } from '../stages/regression/types.js';
import { CPU_QUEUE } from '../workflows/types.js';
import { connectClient } from './client.js';
import { applyLocalS3Defaults, temporalConnection, temporalUiLink } from './env.js';
import { failureMessage, runInput } from './runs.js';

export interface CliOutput {
  json: () => boolean;
  print: (human: string, data: unknown) => void;
}

export function suiteInput(suite: Suite, options: { baselineKey?: string } = {}): SuiteInput {
  const conn = temporalConnection();
  return { suite, baselineKey: options.baselineKey, ui: { url: conn.uiUrl, namespace: conn.namespace } };
}

export function startSuite(client: Client, input: SuiteInput, workflowId?: string): Promise<WorkflowHandle> {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  return client.workflow.start(SUITE_WORKFLOW_TYPE, {
    taskQueue: CPU_QUEUE,
    workflowId: workflowId ?? `suite-${input.suite.name}-${stamp}-${randomBytes(2).toString('hex')}`,
    args: [input],
    memo: { suite: input.suite.name, suiteHash: input.suite.suiteHash },
  });
}

export function suiteStore(suite: Pick<Suite, 'store'>): ArtifactStore {
  applyLocalS3Defaults();
  return openStore({ uri: suite.store.uri, endpoint: suite.store.endpoint, region: suite.store.region });
}

export async function suiteRunInput(client: Client, workflowId: string): Promise<SuiteInput> {
  return (await runInput(client, workflowId)) as unknown as SuiteInput;
}

/** Copy a suite run's report (HTML and JSON) to a local folder; returns the file paths. */
export async function downloadSuiteReport(store: ArtifactStore, result: Pick<SuiteResult, 'reportKey' | 'jsonKey'>, dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const paths: string[] = [];
  for (const key of [result.reportKey, result.jsonKey]) {
    const path = join(dir, key.split('/').pop()!);
    writeFileSync(path, await store.get(key));
    paths.push(path);
  }
  return paths;
}

export function describeSuiteResult(r: SuiteResult, ui: { url: string; namespace: string }): string {
  const lines = [`suite ${r.suite} (${r.workflowId}): ${r.verdict.toUpperCase()}`, `  report: ${r.reportUrl}`];
  for (const m of r.members) lines.push(`  member ${m.id.padEnd(32)} ${m.status.padEnd(9)} ${temporalUiLink(ui.url, ui.namespace, m.workflowId)}${m.error ? `  ${m.error}` : ''}`);
  for (const c of r.comparisons) {
    const delta = c.delta === null ? '–' : `${c.delta >= 0 ? '+' : ''}${c.delta.toFixed(4)}`;
    const band = c.bandHalfWidth === null ? '' : ` (band ±${c.bandHalfWidth.toFixed(4)})`;
    lines.push(`  ${c.verdict.padEnd(12)} ${c.series} ${c.metric}: ${delta}${band}; ${c.reason}`);
  }
  for (const w of r.warnings) lines.push(`  WARNING: ${w}`);
  return lines.join('\n');
}

export function registerSuiteCommands(program: Command, out: CliOutput): void {
  const suite = program.command('suite').description('regression suites: reproductions × seeds compared with a baseline');

  suite
    .command('validate')
    .argument('<suite>', 'suite YAML (see configs/suites/)')
    .description('check a suite config and list its members')
    .action(async (file: string) => {
      const s = await loadSuite(file);
      out.print(`${file}: valid (suite hash ${s.suiteHash})\n${s.members.map((m) => `  ${m.id}  config ${m.configHash}`).join('\n')}`, s);
    });

  suite
    .command('run')
    .argument('<suite>', 'suite YAML')
    .description('run a suite now (as a schedule would) and wait for its verdict')
    .option('--baseline <key>', 'baseline key in the suite store (default regression/baselines/<suite>.json)')
    .option('--id <workflowId>', 'workflow id')
    .option('--detach', 'print the run id and return at once')
    .option('--out <dir>', 'also copy the report (HTML and JSON) to this folder')
    .action(async (file: string, o) => {
      const s = await loadSuite(file);
      applyLocalS3Defaults();
      const { client, conn, close } = await connectClient();
      try {
        const handle = await startSuite(client, suiteInput(s, { baselineKey: o.baseline }), o.id);
        process.stderr.write(`suite run ${handle.workflowId}\n  ui: ${temporalUiLink(conn.uiUrl, conn.namespace, handle.workflowId)}\n`);
        if (o.detach) return out.print(handle.workflowId, { workflowId: handle.workflowId });
        let result: SuiteResult;
        try {
          result = (await handle.result()) as SuiteResult;
        } catch (err) {
          throw new Error(`suite run ${handle.workflowId} failed: ${failureMessage(err)}`);
        }
        if (o.out) process.stderr.write(`report copied to ${(await downloadSuiteReport(suiteStore(s), result, resolve(o.out))).join(', ')}\n`);
        out.print(describeSuiteResult(result, { url: conn.uiUrl, namespace: conn.namespace }), result);
        // Scripts can gate on the exit status: regressions and unjudgeable runs are not a pass.
        process.exitCode = result.verdict === 'passed' || result.verdict === 'improved' ? 0 : 3;
      } finally {
        await close();
      }
    });

  suite
    .command('report')
    .argument('<run>', 'suite run (workflow id)')
    .description("print a finished suite run's verdict; --out copies its report locally")
    .option('--out <dir>', 'copy the report (HTML and JSON) to this folder')
    .action(async (id: string, o) => {
      const { client, conn, close } = await connectClient();
      try {
        const result = (await client.workflow.getHandle(id).result()) as SuiteResult;
        if (o.out) {
          const input = await suiteRunInput(client, id);
          process.stderr.write(`report copied to ${(await downloadSuiteReport(suiteStore(input.suite), result, resolve(o.out))).join(', ')}\n`);
        }
        out.print(describeSuiteResult(result, { url: conn.uiUrl, namespace: conn.namespace }), result);
      } finally {
        await close();
      }
    });
}
