import { parentPort } from 'node:worker_threads';
import { proposeOnPrepared, sampleRng } from './propose.js';
import type { ProposalTask, ProposalTaskReply } from './worker-pool.js';

/**
 * Worker-thread entry: runs the pure part of a recipe on one already-decoded image. Images come
 * in as transferred buffers and label maps go back the same way, so nothing large is copied.
 */
if (!parentPort) throw new Error('proposal-worker must run in a worker thread');
const port = parentPort;

port.on('message', (task: ProposalTask) => {
  let reply: ProposalTaskReply;
  const transfer: ArrayBuffer[] = [];
  try {
    const image = { width: task.width, height: task.height, channels: 3 as const, data: new Uint8Array(task.pixels) };
    const out = proposeOnPrepared(image, task.originalWidth, task.originalHeight, task.recipe, sampleRng(task.seed, task.key));
    reply = { id: task.id, ok: true, boxes: out.boxes, rawCount: out.rawCount };
    if (out.segments) {
      reply.segments = { width: out.segments.width, height: out.segments.height, count: out.segments.count, labels: out.segments.labels.buffer as ArrayBuffer };
      transfer.push(reply.segments.labels);
    }
  } catch (err) {
    const e = err as Error & { where?: string };
    reply = { id: task.id, ok: false, error: { name: e.name, message: e.message, where: e.where } };
  }
  port.postMessage(reply, transfer);
});
