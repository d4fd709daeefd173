import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { BadInputError } from '../../core/errors.js';
import type { Box } from './boxes.js';
import type { ProposalRecipe } from './presets.js';
import { proposeOnPrepared, sampleRng, type ImageProposals } from './propose.js';
import type { RgbImage } from './raster.js';

export interface ProposalTask {
  id: number;
  key: string;
  seed: number;
  recipe: ProposalRecipe;
  width: number;
  height: number;
  pixels: ArrayBuffer;
  originalWidth: number;
  originalHeight: number;
}

export type ProposalTaskReply =
  | { id: number; ok: true; boxes: Box[]; rawCount: number; segments?: { width: number; height: number; count: number; labels: ArrayBuffer } }
  | { id: number; ok: false; error: { name: string; message: string; where?: string } };

export interface ProposalJob {
  key: string;
  seed: number;
  recipe: ProposalRecipe;
  /** Already resized to recipe.resize. Its buffer is transferred to a worker (unusable afterwards). */
  image: RgbImage;
  originalWidth: number;
  originalHeight: number;
}

/** Something that computes one image's proposals: in this thread, or on a pool of worker threads. */
export interface ProposalRunner {
  readonly threads: number;
  run(job: ProposalJob): Promise<ImageProposals>;
  close(): Promise<void>;
}

/** Runs jobs on the calling thread: for one core, tests, and small inputs. */
export function inlineRunner(): ProposalRunner {
  return {
    threads: 1,
    async run(job) {
      return proposeOnPrepared(job.image, job.originalWidth, job.originalHeight, job.recipe, sampleRng(job.seed, job.key));
    },
    async close() {},
  };
}

let bundledWorkerCode: Promise<string> | null = null;

/**
 * How to start the worker. Built output (dist/) has proposal-worker.js next to this file. When
 * running from the TypeScript sources (vitest), Node 20 cannot load a .ts worker, so the worker
 * and its imports are bundled in memory with esbuild (present as vitest's own dependency) and
 * started from source text.
 */
async function workerEntry(): Promise<{ file: URL } | { code: string }> {
  const built = new URL('./proposal-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(built))) return { file: built };
  bundledWorkerCode ??= (async () => {
    const esbuild = await import('esbuild');
    const result = await esbuild.build({
      entryPoints: [fileURLToPath(new URL('./proposal-worker.ts', import.meta.url))],
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: 'node20',
      write: false,
      logLevel: 'silent',
    });
    return result.outputFiles[0]!.text;
  })();
  return { code: await bundledWorkerCode };
}

function errorFromReply(error: { name: string; message: string; where?: string }): Error {
  if (error.name === 'BadInputError') {
    // the message already carries the `where:` prefix; keep it as the whole message
    return new BadInputError(error.message);
  }
  const err = new Error(error.message);
  err.name = error.name;
  return err;
}

/**
 * A fixed pool of worker threads, one job per worker at a time. `threads` 0 means one per core.
 * Each job's randomness is derived from (seed, key), so results do not depend on which worker
 * runs it or in what order.
 */
export async function workerPoolRunner(threads = 0): Promise<ProposalRunner> {
  const count = threads > 0 ? threads : availableParallelism();
  const entry = await workerEntry();
  const workers = Array.from({ length: count }, () =>
    'file' in entry ? new Worker(entry.file) : new Worker(entry.code, { eval: true }),
  );
  const idle: Worker[] = [...workers];
  const waiting: Array<() => void> = [];
  const pending = new Map<number, { resolve: (r: ImageProposals) => void; reject: (e: Error) => void; worker: Worker }>();
  let nextId = 0;
  let closed = false;
  let failure: Error | null = null;

  const release = (worker: Worker) => {
    idle.push(worker);
    waiting.shift()?.();
  };
  for (const worker of workers) {
    worker.on('message', (reply: ProposalTaskReply) => {
      const job = pending.get(reply.id);
      if (!job) return;
      pending.delete(reply.id);
      release(worker);
      if (!reply.ok) return job.reject(errorFromReply(reply.error));
      const out: ImageProposals = { boxes: reply.boxes, rawCount: reply.rawCount };
      if (reply.segments) out.segments = { ...reply.segments, labels: new Int32Array(reply.segments.labels) };
      job.resolve(out);
    });
    // A worker that dies (out of memory, a crash in native code) takes the pool down: fail the
    // jobs in flight and every later one instead of waiting forever for a free worker.
    const fail = (err: Error) => {
      failure ??= err;
      for (const [id, job] of pending) {
        pending.delete(id);
        job.reject(failure);
      }
      while (waiting.length > 0) waiting.shift()!();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!closed) fail(new Error(`proposal worker thread exited unexpectedly (code ${code})`));
    });
  }

  return {
    threads: count,
    async run(job) {
      if (closed) throw new Error('proposal worker pool is closed');
      while (idle.length === 0 && !failure) await new Promise<void>((resolve) => waiting.push(resolve));
      if (failure) throw failure;
      const worker = idle.pop()!;
      const id = nextId++;
      const { image } = job;
      // copy only when the pixels are a view into a larger buffer (sharp's output pool)
      const pixels =
        image.data.byteOffset === 0 && image.data.byteLength === image.data.buffer.byteLength
          ? (image.data.buffer as ArrayBuffer)
          : (image.data.slice().buffer as ArrayBuffer);
      const task: ProposalTask = {
        id,
        key: job.key,
        seed: job.seed,
        recipe: job.recipe,
        width: image.width,
        height: image.height,
        pixels,
        originalWidth: job.originalWidth,
        originalHeight: job.originalHeight,
      };
      return new Promise<ImageProposals>((resolve, reject) => {
        pending.set(id, { resolve, reject, worker });
        worker.postMessage(task, [pixels]);
      });
    },
    async close() {
      closed = true;
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
