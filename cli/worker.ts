import { cpus } from 'node:os';
import { join } from 'node:path';
import { DefaultLogger, NativeConnection, Runtime, Worker, type LogEntry } from '@temporalio/worker';
import * as cpuActivities from '../activities/cpu.js';
import * as gpuActivities from '../activities/gpu.js';
import * as suiteActivities from '../activities/suite.js';
import { describeDevices, initBackend, noGpuReason, tensorflowDevices, type BackendChoice } from '../core/tf.js';
import { CPU_QUEUE, GPU_QUEUE } from '../workflows/types.js';
import { applyLocalS3Defaults, projectRoot, temporalConnection } from './env.js';
import { connectionHelp } from './client.js';

/**
 * One JSON object per line (time, level, message, then Temporal's metadata: workflowId, activityType,
 * activityId, attempt, taskQueue, ...), so `densepipe logs RUN` can pick out a run's lines and any log
 * collector can parse them. DENSEPIPE_LOG_FORMAT=text keeps the SDK's default format.
 */
export function jsonLogLine(entry: LogEntry, pid = process.pid): string {
  const { taskToken: _token, ...meta } = (entry.meta ?? {}) as Record<string, unknown>;
  const plain = (value: unknown): unknown => (value instanceof Error ? { name: value.name, message: value.message } : value);
  const fields = Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, plain(v)]));
  return JSON.stringify({ time: new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString(), level: entry.level, message: entry.message, ...fields, pid });
}

function installJsonLogger(): void {
  if (process.env.DENSEPIPE_LOG_FORMAT === 'text') return;
  try {
    Runtime.install({ logger: new DefaultLogger('INFO', (entry) => process.stderr.write(`${jsonLogLine(entry)}\n`)) });
  } catch {
    /* a Runtime already exists in this process (tests): keep its logger */
  }
}

/**
 * One worker process per queue, as it runs in its container: the cpu worker also hosts the
 * workflows; the gpu worker runs pretraining one activity at a time.
 */
export async function runWorker(queue: 'cpu' | 'gpu', options: { backend?: BackendChoice } = {}): Promise<void> {
  installJsonLogger();
  applyLocalS3Defaults();
  const conn = temporalConnection();
  const backend = await initBackend(options.backend ?? (process.env.DENSEPIPE_BACKEND as BackendChoice | undefined) ?? 'auto');
  const devices = backend.backend === 'tensorflow' ? tensorflowDevices() : undefined;
  process.stdout.write(`tensorflow devices: ${devices ? describeDevices(devices) : `none (backend ${backend.backend})`}\n`);
  if (queue === 'gpu' && !devices?.gpu) {
    const bar = '!'.repeat(100);
    process.stderr.write(`${bar}\nWARNING: this worker polls the gpu queue but TensorFlow sees no GPU, so pretraining runs on the CPU, far slower.\nWhy: ${noGpuReason(backend, devices)}.\n${bar}\n`);
  }
  let connection: NativeConnection;
  try {
    connection = await NativeConnection.connect({ address: conn.temporalAddress });
  } catch (err) {
    throw new Error(connectionHelp(conn, err));
  }
  const worker = await Worker.create({
    connection,
    namespace: conn.namespace,
    taskQueue: queue === 'gpu' ? GPU_QUEUE : CPU_QUEUE,
    activities: queue === 'gpu' ? gpuActivities : { ...cpuActivities, ...suiteActivities },
    ...(queue === 'cpu' ? { workflowBundle: { codePath: join(projectRoot(), 'dist', 'workflow-bundle.js') } } : {}),
    // TensorFlow uses every core for one training step; two at once would only thrash.
    maxConcurrentActivityTaskExecutions: queue === 'gpu' ? 1 : Math.max(2, cpus().length),
    shutdownGraceTime: '20s',
  });
  const s3 = process.env.DENSEPIPE_S3_ENDPOINT ?? 'AWS default';
  process.stdout.write(
    `worker ready: queue=${queue} temporal=${conn.temporalAddress} namespace=${conn.namespace} s3=${s3} backend=${backend.backend}${backend.tensorflowVersion ? ` (TensorFlow ${backend.tensorflowVersion})` : ''} pid=${process.pid}\n`,
  );
  await worker.run();
}
