import { Command, Option } from 'commander';
import { stringify } from 'yaml';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError } from '../core/errors.js';
import { splitMetrics } from '../core/metrics.js';
import { loadRunConfig, parseOverrides } from '../core/config.js';
import { BACKEND_CHOICES, type BackendChoice } from '../core/tf.js';
import { applyLocalS3Defaults, projectRoot, readServices, temporalUiLink } from './env.js';
import { connectClient } from './client.js';
import { down, up } from './services.js';
import { describeRun, listRuns, resumeRun, startRun, type RunStatus } from './runs.js';
import { stageOutputs, type StageOutput } from './history.js';
import { artifactLines, registerOutputCommands } from './outputs.js';
import { followRun } from './progress.js';
import { registerSuiteCommands } from './suite.js';
import { registerScheduleCommands } from './schedule.js';
import { registerBaselineCommands } from './baseline.js';
import { argumentRows, consumesSummary, optimizerSummary } from '../stages/methods/shared/describe.js';
import { isMethodName, METHOD_NAMES, methodModule } from '../stages/methods/index.js';

const program = new Command();
program
  .name('densepipe')
  .description('Launch, resume and regression-test reproductions of dense self-supervised pretraining on Temporal and S3.')
  .option('--json', 'machine-readable output');
// Every subcommand's --help lists --json (and any other global option) too.
program.configureHelp({ showGlobalOptions: true });

const json = () => Boolean(program.opts().json);
const print = (human: string, data: unknown) => process.stdout.write(json() ? `${JSON.stringify(data, null, 2)}\n` : `${human}\n`);

/** For the local S3 server, where a report can be opened straight from disk. */
function localPathOf(url: string | undefined): string | undefined {
  const s3 = readServices().s3;
  if (!url || !s3 || !url.startsWith('s3://')) return undefined;
  const path = join(s3.root, url.slice('s3://'.length));
  return existsSync(path) ? path : undefined;
}

function describeStatus(s: RunStatus, uiUrl: string, namespace: string, artifacts: StageOutput[] = []): string {
  const lines = [`run ${s.workflowId}: ${s.status}`, `  ui: ${temporalUiLink(uiUrl, namespace, s.workflowId)}`];
  for (const st of s.progress?.stages ?? []) {
    const parts = st.parts > 1 ? ` ${st.partsDone}/${st.parts}` : '';
    const reused = st.cachedParts ? ` (${st.cachedParts} reused)` : '';
    lines.push(`  ${st.step.padEnd(20)} ${st.status}${parts}${reused}${st.computeSeconds ? `  ${st.computeSeconds.toFixed(1)} s` : ''}${st.error ? `  ${st.error}` : ''}`);
  }
  for (const a of s.pending) {
    const hb = a.heartbeat;
    lines.push(`  running ${a.activityType} (attempt ${a.attempt})${hb?.fraction !== undefined ? ` ${Math.round(hb.fraction * 100)}%` : ''}${hb?.message ? ` ${hb.message}` : ''}${a.lastFailure ? `; last error: ${a.lastFailure}` : ''}`);
  }
  if (s.failure) lines.push(`  failure: ${s.failure}`, `  fix the cause, then: densepipe resume ${s.workflowId} [--set key=value]`);
  if (s.result) {
    lines.push(`  report: ${s.result.reportUrl}`);
    const local = localPathOf(s.result.reportUrl);
    if (local) lines.push(`  report (local file): ${local}`);
    const columns: Array<[string, Record<string, number>]> = [
      ['pretrained', s.result.metrics],
      ['random init', s.result.baselineMetrics],
      ...(s.result.supervisedMetrics ? [['supervised', s.result.supervisedMetrics] as [string, Record<string, number>]] : []),
    ];
    const { quality } = splitMetrics(Object.assign({}, ...columns.map(([, m]) => m)));
    const cell = (v: number | undefined) => (v === undefined ? '–' : v.toFixed(4)).padStart(12);
    if (quality.length) lines.push(`  ${'metric'.padEnd(22)}${columns.map(([label]) => label.padStart(12)).join('')}`);
    for (const k of quality) lines.push(`  ${k.padEnd(22)}${columns.map(([, m]) => cell(m[k])).join('')}`);
  }
  lines.push(...artifactLines(artifacts));
  return lines.join('\n');
}

async function startAndMaybeFollow(
  start: (client: Awaited<ReturnType<typeof connectClient>>['client']) => Promise<{ workflowId: string }>,
  options: { detach?: boolean; cancelOnExit?: boolean },
): Promise<number> {
  applyLocalS3Defaults();
  const { client, conn, close } = await connectClient();
  try {
    const handle = await start(client);
    const link = temporalUiLink(conn.uiUrl, conn.namespace, handle.workflowId);
    if (json() && options.detach) {
      print('', { workflowId: handle.workflowId, ui: link });
      return 0;
    }
    process.stderr.write(`run ${handle.workflowId}\n  ui: ${link}\n`);
    if (options.detach) {
      process.stdout.write(`${handle.workflowId}\n`);
      return 0;
    }
    const stop = new AbortController();
    const onSigint = async () => {
      if (options.cancelOnExit) {
        process.stderr.write(`\ncancelling ${handle.workflowId} (--cancel-on-exit)\n`);
        await client.workflow.getHandle(handle.workflowId).cancel();
      } else {
        process.stderr.write(`\nstopped following; the run goes on on the server. Follow it again with: densepipe status ${handle.workflowId}\n`);
      }
      stop.abort();
      process.exit(130);
    };
    process.once('SIGINT', onSigint);
    const status = await followRun(client, handle.workflowId, { signal: stop.signal });
    process.off('SIGINT', onSigint);
    print(describeStatus(status, conn.uiUrl, conn.namespace), status);
    return status.status === 'COMPLETED' ? 0 : 1;
  } finally {
    await close();
  }
}

program
  .command('up')
  .description('start the local Temporal dev server (SQLite), the S3 server (versitygw) and the cpu and gpu workers')
  .option('--temporal-port <port>', 'Temporal frontend port', (v) => Number(v))
  .option('--s3-port <port>', 'S3 server port', (v) => Number(v))
  .option('--no-workers', 'do not start workers')
  .option('--no-s3', 'do not start the local S3 server (use AWS or DENSEPIPE_S3_ENDPOINT)')
  .action(async (o) => {
    const services = await up({ temporalPort: o.temporalPort, s3Port: o.s3Port, workers: o.workers, s3: o.s3, log: json() ? undefined : (l) => process.stdout.write(`${l}\n`) });
    if (json()) print('', services);
  });

program
  .command('down')
  .description('stop the local services and workers (data and history are kept)')
  .action(async () => down({ log: (l) => process.stdout.write(`${l}\n`) }));

program
  .command('worker')
  .description('run one worker process for a task queue (as in its container)')
  .addOption(new Option('--queue <queue>', 'task queue').choices(['cpu', 'gpu']).makeOptionMandatory())
  .addOption(new Option('--backend <backend>', 'tensor backend').choices(BACKEND_CHOICES))
  .action(async (o) => {
    const { runWorker } = await import('./worker.js');
    await runWorker(o.queue, { backend: o.backend as BackendChoice | undefined });
  });

program
  .command('run')
  .description('start a reproduction from a YAML config and follow its progress')
  .argument('<config>', 'YAML config file')
  .option('--set <key=value...>', 'override config fields, e.g. --set pretrain.steps=50', [])
  .option('--detach', 'print the run id and return at once')
  .option('--cancel-on-exit', 'cancel the run when this command is interrupted (default: the run goes on)')
  .option('--id <workflowId>', 'workflow id (default: <name>-<time>-<rand>)')
  .action(async (file: string, o) => {
    // Validation happens before anything connects or starts.
    const { config } = await loadRunConfig(file, parseOverrides(o.set));
    process.exitCode = await startAndMaybeFollow((client) => startRun(client, config, { workflowId: o.id }), o);
  });

program
  .command('validate')
  .description('check a config against the schema and print it with defaults filled in')
  .argument('<config>')
  .option('--set <key=value...>', 'override config fields', [])
  .action(async (file: string, o) => {
    const { config, hash } = await loadRunConfig(file, parseOverrides(o.set));
    print(`# ${file}: valid (config hash ${hash}); the config with every default filled in:\n${stringify(config).trimEnd()}`, { valid: true, hash, config });
  });

program
  .command('methods')
  .description(`the pretraining methods (pretrain.method): ${METHOD_NAMES.join(', ')}; with a name, its arguments (pretrain.args) and defaults`)
  .argument('[name]')
  .action((name?: string) => {
    if (name !== undefined && !isMethodName(name)) throw new BadInputError(`unknown method '${name}' (valid: ${METHOD_NAMES.join(', ')})`, 'methods');
    const names = name === undefined ? METHOD_NAMES : [name];
    const rows = names.map((n) => {
      const m = methodModule(n);
      return { name: n, title: m.title, paper: m.paper, code: m.code, consumes: consumesSummary(m), optimizer: optimizerSummary(m), args: argumentRows(m), card: `docs/methods/${n}.md` };
    });
    const human = rows
      .map((r) =>
        name === undefined
          ? `${r.name.padEnd(10)} ${r.title}`
          : [`${r.name}: ${r.title}`, `  paper:     ${r.paper.citation} ${r.paper.url}`, `  code:      ${r.code.repo}@${r.code.commit}`, `  reads:     ${r.consumes}`, `  optimizer: ${r.optimizer}`, `  card:      ${r.card}`, '  pretrain.args:', ...r.args.map((a) => `    ${a.name.padEnd(18)} ${a.default.padEnd(10)} ${a.description}`)].join('\n'),
      )
      .join('\n');
    print(name === undefined ? `${human}\n(densepipe methods NAME for a method's arguments)` : human, rows);
  });

program
  .command('status')
  .description('show a run: stages, live progress, result or failure, and each stage output as a URI with its role')
  .argument('<run>', 'workflow id')
  .action(async (id: string) => {
    const { client, conn, close } = await connectClient();
    try {
      const s = await describeRun(client, id);
      // Not for a suite run (its members are runs of their own); an unreadable history leaves the list out.
      const artifacts = await client.workflow
        .getHandle(id)
        .fetchHistory()
        .then(stageOutputs, () => []);
      print(describeStatus(s, conn.uiUrl, conn.namespace, artifacts), { ...s, artifacts });
    } finally {
      await close();
    }
  });

program
  .command('list')
  .description('list runs (newest first)')
  .option('--query <visibility query>', "e.g. \"DensepipeMethod='densecl'\"")
  .option('--limit <n>', 'at most this many', (v) => Number(v), 50)
  .action(async (o) => {
    const { client, close } = await connectClient();
    try {
      const query = o.query ? `WorkflowType = 'reproductionWorkflow' AND (${o.query})` : undefined;
      const rows = await listRuns(client, query, o.limit);
      const human = rows.length
        ? rows.map((r) => `${r.workflowId.padEnd(44)} ${r.status.padEnd(10)} ${(r.method ?? '').padEnd(10)} ${(r.dataset ?? '').padEnd(16)} ${r.configHash ?? ''} ${r.startTime.toISOString()}`).join('\n')
        : 'no runs';
      print(human, rows);
    } finally {
      await close();
    }
  });

program
  .command('cancel')
  .description('cancel a run (finished stage outputs stay in the store and are reused by resume)')
  .argument('<run>')
  .action(async (id: string) => {
    const { client, close } = await connectClient();
    try {
      await client.workflow.getHandle(id).cancel();
      print(`cancellation requested for ${id}`, { cancelled: id });
    } finally {
      await close();
    }
  });

program
  .command('resume')
  .description('start a new run from a failed or cancelled one, reusing every finished stage output')
  .argument('<run>')
  .option('--set <key=value...>', 'change config fields for the new run (e.g. the fix)', [])
  .option('--detach', 'return at once')
  .option('--cancel-on-exit', 'cancel the new run when interrupted')
  .action(async (id: string, o) => {
    const patch = parseOverrides(o.set);
    process.exitCode = await startAndMaybeFollow((client) => resumeRun(client, id, patch), o);
  });

program
  .command('demo')
  .description('start the local services, run the built-in demo config, and print where the report is')
  .option('--set <key=value...>', 'override demo config fields', [])
  .action(async (o) => {
    await up({ log: (l) => process.stderr.write(`${l}\n`) });
    const { config } = await loadRunConfig(join(projectRoot(), 'configs', 'demo.yaml'), parseOverrides(o.set));
    process.exitCode = await startAndMaybeFollow((client) => startRun(client, config), {});
  });

// Regression suites, their schedules and baselines (issue #7).
registerSuiteCommands(program, { json, print });
registerScheduleCommands(program, { json, print });
registerBaselineCommands(program, { json, print });
// Artifacts, logs, export, TensorBoard (issue #19).
registerOutputCommands(program, { json, print });

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as Error;
  if (e instanceof BadInputError || e.name === 'ConfigError') {
    process.stderr.write(`densepipe: ${e.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`densepipe: ${e.message}\n`);
  if (process.env.DENSEPIPE_DEBUG) process.stderr.write(`${e.stack}\n`);
  process.exit(1);
});
