/**
 * What a run produced, one command away: `artifacts` (every stage output as a full URI with its role),
 * `logs` (events with role and part, worker lines, --follow), `export` (a self-describing backbone and
 * its Python loader), `tensorboard` (the run's curves, live).
 */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type { StoreConfig } from '../core/config.js';
import { BadInputError } from '../core/errors.js';
import { openStore, type ArtifactStore } from '../core/store/index.js';
import { LOADER_FORMATS, type LoaderFormat } from '../stages/pretrain/backbone-card.js';
import { connectClient } from './client.js';
import { applyLocalS3Defaults, LOCAL_S3_CREDENTIALS, readServices, stateDir } from './env.js';
import { exportBackboneFiles } from './export.js';
import { activityRecords, formatEvent, historyInput, stageOutputs, type History, type RunEvent, type StageOutput } from './history.js';
import { followRunLog, localWorkerLogs, runLog } from './logs.js';
import type { CliOutput } from './suite.js';
import { findTensorboard, syncTensorboard } from './tensorboard.js';

/** The one URI that best stands for an output in a short listing. */
const MAIN_FILE: Record<string, string> = {
  shard: 'datasetManifest',
  proposals: 'proposals',
  pretrain: 'backbone',
  'pretrain-supervised': 'backbone',
  evaluate: 'metrics',
  'evaluate-baseline': 'metrics',
  'evaluate-supervised': 'metrics',
  report: 'html',
};

function state(o: StageOutput): string {
  if (o.status !== 'completed') return o.status;
  return o.cached === undefined ? 'done' : o.cached ? 'reused' : 'computed';
}

/** Short listing for `status`: one line per output, role and main URI. */
export function artifactLines(outputs: StageOutput[]): string[] {
  if (outputs.length === 0) return [];
  const lines = ['  artifacts (every file: densepipe artifacts RUN):'];
  for (const o of outputs) {
    const uri = o.uris[MAIN_FILE[o.role] ?? ''] ?? o.uris.prefix ?? '';
    lines.push(`    ${`${o.role}${o.part ? ` [${o.part.replace(/ \(.*\)$/, '')}]` : ''}`.padEnd(26)} ${state(o).padEnd(9)} ${uri}`);
  }
  return lines;
}

/** Every output with every URI. */
export function describeArtifacts(workflowId: string, outputs: StageOutput[]): string {
  const lines = [`run ${workflowId}: ${outputs.length} stage outputs in ${outputs[0]?.store ?? '(no store yet)'}`];
  for (const o of outputs) {
    lines.push('', `${o.role}${o.part ? ` [${o.part}]` : ''}: ${o.label} (${state(o)}${o.stage ? `, stages/${o.stage}/${o.hash}` : ''})`);
    const width = Math.max(...Object.keys(o.uris).map((k) => k.length), 0);
    for (const [name, uri] of Object.entries(o.uris)) lines.push(`  ${name.padEnd(width)}  ${uri}`);
  }
  return lines.join('\n');
}

/** How to reach the store with the AWS CLI when it is the local S3 server of `densepipe up`. */
export function awsCliHint(storeUri: string, config?: StoreConfig): string | null {
  const s3 = readServices().s3;
  if (!s3 || !storeUri.startsWith('s3://') || (config?.endpoint && config.endpoint !== s3.endpoint)) return null;
  return (
    `local S3 server (densepipe up, files under ${s3.root}):\n` +
    `  AWS_ACCESS_KEY_ID=${LOCAL_S3_CREDENTIALS.accessKeyId} AWS_SECRET_ACCESS_KEY=${LOCAL_S3_CREDENTIALS.secretAccessKey} AWS_REGION=us-east-1 aws --endpoint-url ${s3.endpoint} s3 cp URI .`
  );
}

async function fetchRun(id: string): Promise<{ history: History; close: () => Promise<void>; client: Awaited<ReturnType<typeof connectClient>>['client'] }> {
  const { client, close } = await connectClient();
  try {
    return { history: await client.workflow.getHandle(id).fetchHistory(), close, client };
  } catch (err) {
    await close();
    throw err;
  }
}

function runStore(history: History, id: string): { store: ArtifactStore; config: StoreConfig } {
  const input = historyInput(history);
  if (!input?.config?.store) throw new BadInputError(`run ${id} has no recorded config (is it a reproduction run?)`, 'run');
  applyLocalS3Defaults();
  const config = input.config.store as StoreConfig;
  return { store: openStore({ uri: config.uri, endpoint: config.endpoint, region: config.region }), config };
}

const BACKBONE_ROLES = { pretrain: 'pretrain', supervised: 'pretrain-supervised' } as const;

export function registerOutputCommands(program: Command, out: CliOutput): void {
  program
    .command('artifacts')
    .description("every stage output of a run as a full s3:// (or file://) URI, with its role (which model, which evaluation)")
    .argument('<run>', 'workflow id')
    .option('--role <role>', 'only this role (shard, proposals, pretrain, pretrain-supervised, evaluate, evaluate-baseline, evaluate-supervised, report)')
    .action(async (id: string, o: { role?: string }) => {
      const { history, close } = await fetchRun(id);
      try {
        const outputs = stageOutputs(history).filter((x) => !o.role || x.role === o.role);
        const hint = outputs[0] ? awsCliHint(outputs[0].store, historyInput(history)?.config.store as StoreConfig) : null;
        out.print(`${describeArtifacts(id, outputs)}${hint ? `\n\n${hint}` : ''}`, { workflowId: id, store: outputs[0]?.store, outputs });
      } finally {
        await close();
      }
    });

  program
    .command('logs')
    .description("a run's events in time order, each with its stage role and part (which evaluation, which shard), plus its workers' log lines")
    .argument('<run>', 'workflow id')
    .option('-f, --follow', 'keep printing until the run closes')
    .option('--worker-log <file...>', "worker log files to read (JSON lines; default: the workers of 'densepipe up')")
    .option('--no-worker-logs', 'history events only')
    .action(async (id: string, o: { follow?: boolean; workerLog?: string[]; workerLogs: boolean }) => {
      const files = o.workerLogs === false ? [] : (o.workerLog ?? localWorkerLogs()).map((f) => resolve(f));
      const strip = ({ at: _at, ...e }: RunEvent) => e;
      if (o.follow) {
        const { client, close } = await connectClient();
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        try {
          await followRunLog(client, id, {
            workerLogs: files,
            signal: stop.signal,
            print: (e) => process.stdout.write(`${out.json() ? JSON.stringify(strip(e)) : formatEvent(e)}\n`),
          });
        } finally {
          await close();
        }
        return;
      }
      const { history, close } = await fetchRun(id);
      try {
        const events = runLog(history, id, files);
        out.print(events.map(formatEvent).join('\n'), events.map(strip));
      } finally {
        await close();
      }
    });

  program
    .command('export')
    .description('write a run\'s backbone as a self-describing safetensors file and a Python loader (torchvision or timm, strict=True)')
    .argument('<run>', 'workflow id')
    .addOption(new Option('--format <format>', 'module library the loader builds (default: torchvision for a ResNet, timm for a ViT, whose names are timm\'s)').choices([...LOADER_FORMATS]))
    .option('--out <file>', 'weights file (default: <run>-<method>-<arch>.safetensors); the loader goes beside it as <file>_load.py')
    .addOption(new Option('--backbone <which>', 'the pretrained backbone or the supervised baseline').choices(Object.keys(BACKBONE_ROLES)).default('pretrain'))
    .action(async (id: string, o: { format?: LoaderFormat; out?: string; backbone: keyof typeof BACKBONE_ROLES }) => {
      const { history, close } = await fetchRun(id);
      try {
        const role = BACKBONE_ROLES[o.backbone];
        const record = activityRecords(history).filter((r) => r.role === role && r.status === 'completed').pop();
        const ref = (record?.result as { ref?: { result?: { backboneKey?: string; backboneArch?: string; steps?: number } } } | undefined)?.ref;
        if (!ref?.result?.backboneKey) throw new BadInputError(`run ${id} has no finished ${role} stage (densepipe status ${id})`, '--backbone');
        const { store } = runStore(history, id);
        const config = historyInput(history)!.config;
        const arch = ref.result.backboneArch ?? config.pretrain.backbone.arch;
        const method = role === 'pretrain' ? config.pretrain.method : 'supervised';
        const file = resolve(o.out ?? `${id.replace(/[^A-Za-z0-9._-]/g, '_')}-${method}-${arch}.safetensors`);
        const source = store.url(ref.result.backboneKey);
        const written = exportBackboneFiles(await store.get(ref.result.backboneKey), {
          out: file,
          format: o.format,
          source,
          fallback: { arch, method, steps: ref.result.steps ?? 0, imageSize: config.pretrain.imageSize },
        });
        const a = written.card.architecture;
        out.print(
          [
            `wrote ${written.weights}`,
            `  from ${source}`,
            a.family === 'vit'
              ? `  ${written.card.method} backbone, ViT (patch ${a.patchSize}, ${a.embedDim}-d, depth ${a.depth}, ${a.numHeads} heads, ${a.imageSize} px), ${a.embedDim}-d class token`
              : `  ${written.card.method} backbone, ResNet-${a.depth} (${a.block}, widths ${a.widths.join('/')}, ${a.stem.kind} stem), ${a.outChannels}-d pooled features`,
            `  input: RGB in [0, 1], mean ${written.card.input.mean.join('/')}, std ${written.card.input.std.join('/')}${written.card.input.imageSize ? `, trained at ${written.card.input.imageSize} px` : ''}`,
            `wrote ${written.loader} (${written.format}; load_backbone() builds the module and loads with strict=True)`,
            `  try it: python3 ${written.loader}`,
          ].join('\n'),
          { ...written, source },
        );
      } finally {
        await close();
      }
    });

  program
    .command('tensorboard')
    .description("copy a run's TensorBoard events (pretraining, supervised baseline, evaluations; live while it runs) into a local folder per role and start TensorBoard on it")
    .argument('<run>', 'workflow id')
    .option('--dir <dir>', 'local log dir (default: $DENSEPIPE_HOME/tensorboard/<run>)')
    .option('--port <port>', 'TensorBoard port', '6006')
    .option('--no-launch', 'only copy the events and print the command')
    .action(async (id: string, o: { dir?: string; port: string; launch: boolean }) => {
      const dir = resolve(o.dir ?? join(stateDir(), 'tensorboard', id.replace(/[^A-Za-z0-9._-]/g, '_')));
      const { history, close, client } = await fetchRun(id);
      try {
        const { store } = runStore(history, id);
        const synced = await syncTensorboard(store, stageOutputs(history), dir);
        const command = `tensorboard --logdir ${dir} --port ${o.port}`;
        const binary = o.launch && !out.json() ? findTensorboard() : null;
        const summary = synced.length
          ? `copied ${synced.reduce((a, s) => a + s.files.length, 0)} event files into ${dir}: ${synced.map((s) => s.name).join(', ')}`
          : `no TensorBoard events yet for ${id} (outputs cached from before this densepipe version have none)`;
        out.print(
          `${summary}\n${binary ? `starting: ${command}` : `view them with: ${command}   (pip install tensorboard)`}`,
          { dir, runs: synced, command },
        );
        if (!binary || synced.length === 0) return;
        const child = spawn(binary, ['--logdir', dir, '--port', o.port], { stdio: 'inherit' });
        process.once('SIGINT', () => child.kill('SIGINT'));
        // Keep the copy fresh while the run goes on; stop when TensorBoard exits.
        let running = true;
        child.once('exit', () => (running = false));
        while (running) {
          await new Promise((r) => setTimeout(r, 5000));
          if (!running) break;
          const handle = client.workflow.getHandle(id);
          const closed = (await handle.describe()).status.name !== 'RUNNING';
          await syncTensorboard(store, stageOutputs(await handle.fetchHistory()), dir);
          if (closed) {
            if (running) await new Promise((r) => child.once('exit', r));
            break;
          }
        }
      } finally {
        await close();
      }
    });
}
