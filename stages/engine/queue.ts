import * as tf from '@tensorflow/tfjs';
import { Rng } from '../../core/rng.js';
import { uniqueVariableName } from './params.js';

/**
 * MoCo's memory queue of negative keys: a non-trainable [K, D] variable (one key per ROW; MoCo
 * keeps [D, K] columns, a transpose away) plus a write pointer. The oldest K/B batch is
 * overwritten by the newest keys (`_dequeue_and_enqueue`). Initial rows: standard normal,
 * L2-normalised, as MoCo's `randn` + `normalize(dim=0)`.
 */
export class MemoryQueue {
  readonly buffer: tf.Variable;
  pointer = 0;

  constructor(
    readonly size: number,
    readonly dim: number,
    seed: number | string = 0,
    readonly name = 'queue',
  ) {
    if (!Number.isInteger(size) || size < 1 || !Number.isInteger(dim) || dim < 1) {
      throw new Error(`MemoryQueue: size and dim must be positive integers, got ${size} x ${dim}`);
    }
    const rng = Rng.fromSeed('memory-queue', name, seed);
    const values = new Float32Array(size * dim);
    for (let r = 0; r < size; r++) {
      let norm = 0;
      for (let c = 0; c < dim; c++) {
        const z = rng.normal();
        values[r * dim + c] = z;
        norm += z * z;
      }
      const inv = 1 / Math.max(Math.sqrt(norm), 1e-12);
      for (let c = 0; c < dim; c++) values[r * dim + c]! *= inv;
    }
    const initial = tf.tensor2d(values, [size, dim]);
    this.buffer = tf.variable(initial, false, uniqueVariableName(name));
    initial.dispose(); // the variable holds its own reference to the data
  }

  /**
   * Replace the oldest rows with `keys` [B, D] (detached; they are copied) and advance the
   * pointer. MoCo asserts K % B == 0; here a batch that crosses the end wraps around instead.
   */
  dequeueAndEnqueue(keys: tf.Tensor2D): void {
    const [b, d] = keys.shape;
    if (d !== this.dim) throw new Error(`${this.name}: keys have dim ${d}, queue has ${this.dim}`);
    if (b > this.size) throw new Error(`${this.name}: batch of ${b} keys is larger than the queue (${this.size})`);
    const next = tf.tidy(() => {
      const head = Math.min(b, this.size - this.pointer);
      const parts: tf.Tensor2D[] = [];
      const wrapped = b - head; // rows that wrap to the start
      if (wrapped > 0) parts.push(tf.slice(keys, [head, 0], [wrapped, d]));
      const keepFrom = wrapped;
      if (this.pointer > keepFrom) parts.push(tf.slice(this.buffer as tf.Tensor2D, [keepFrom, 0], [this.pointer - keepFrom, d]));
      parts.push(tf.slice(keys, [0, 0], [head, d]));
      const tailStart = this.pointer + head;
      if (tailStart < this.size) parts.push(tf.slice(this.buffer as tf.Tensor2D, [tailStart, 0], [this.size - tailStart, d]));
      return tf.concat(parts, 0);
    });
    this.buffer.assign(next);
    next.dispose();
    this.pointer = (this.pointer + b) % this.size;
  }

  dispose(): void {
    this.buffer.dispose();
  }
}
