import { cpus } from 'node:os';
import { join } from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import * as cpuActivities from '../activities/cpu.js';
import * as gpuActivities from '../activities/gpu.js';
import * as suiteActivities from '../activities/suite.js';
import { initBackend, type BackendChoice } from '../core/tf.js';
import { CPU_QUEUE, GPU_QUEUE } from '../workflows/types.js';
import { applyLocalS3Defaults, projectRoot, temporalConnection } from './env.js';
import { connectionHelp } from './client.js';

/**
 * One worker process per queue, as it runs in its container: the cpu worker also hosts the
 * workflows; the gpu worker runs pretraining one activity at a time.
 */
export async function runWorker(queue: 'cpu' | 'gpu', options: { backend?: BackendChoice } = {}): Promise<void> {
  applyLocalS3Defaults();
  const conn = temporalConnection();
  const backend = await initBackend(options.backend ?? (process.env.DENSEPIPE_BACKEND as BackendChoice | undefined) ?? 'auto');
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
