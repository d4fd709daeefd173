/**
 * Contrastive-loss pieces shared by the InfoNCE family (MoCo v2, DenseCL, RegionCL, ReSim, DetCo, CCOP, …)
 * and the cosine-regression family (BYOL-style 2−2cos: PixPro, SCRL, R2O).
 */
import * as tf from '@tensorflow/tfjs';
import { BadInputError } from '../../../core/errors.js';
import type { MemoryQueue } from '../../engine/queue.js';
import { l2Norm } from '../../engine/ops/norm.js';

/** torch.nn.functional.normalize: x / max(‖x‖₂, 1e-12) along `axis`. */
export function l2Normalize<T extends tf.Tensor>(x: T, axis: number): T {
  return tf.tidy(() => tf.div(x, tf.maximum(l2Norm(x, axis, true), 1e-12)) as T);
}

/**
 * InfoNCE as openselfsup's ContrastiveHead computes it: logits = [l_pos, l_neg] / τ, cross-entropy
 * against label 0, mean over rows. lPos [N, 1], lNeg [N, K] → scalar.
 */
export function infoNce(lPos: tf.Tensor2D, lNeg: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const logits = tf.div(tf.concat([lPos, lNeg], 1), temperature); // [N, 1+K]
    // CE with label 0 = logsumexp(row) − row[0]; tf.logSumExp subtracts the row max first.
    const positive = tf.squeeze(tf.slice(logits, [0, 0], [-1, 1]), [1]); // [N]
    return tf.mean(tf.sub(tf.logSumExp(logits, 1), positive)) as tf.Scalar;
  });
}

/** InfoNCE of queries against their positives and a queue of negatives: q, k [N, D], queue [K, D]. */
export function queueInfoNce(q: tf.Tensor2D, k: tf.Tensor2D, queue: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const lPos = tf.sum(tf.mul(q, k), 1, true) as tf.Tensor2D; // [N, 1]
    const lNeg = tf.matMul(q, queue, false, true) as tf.Tensor2D; // [N, K]
    return infoNce(lPos, lNeg, temperature);
  });
}

/** Enqueue a batch of keys, refusing the wrap-around the official code rules out (`assert K % B == 0`). */
export function enqueueKeys(queue: MemoryQueue, keys: tf.Tensor2D): void {
  const b = keys.shape[0];
  if (queue.size % b !== 0) throw new BadInputError(`queue size ${queue.size} must be a multiple of the batch size ${b}`, 'args.queueSize');
  queue.dequeueAndEnqueue(keys);
}

/** BYOL's regression loss per row: ‖p/‖p‖ − z/‖z‖‖² = 2 − 2·cos(p, z). p, z [N, D] → [N]. */
export function cosineRegression(p: tf.Tensor2D, z: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.sub(2, tf.mul(2, tf.sum(tf.mul(l2Normalize(p, 1), l2Normalize(z, 1)), 1))) as tf.Tensor1D);
}

/**
 * InfoNCE with the batch's own keys as negatives (SimCLR / MoCo v3 `contrastive_loss`, no queue): logits = q·kᵀ/τ
 * [N, N], cross-entropy against the diagonal (label n for row n), mean over rows. q, k [N, D], already normalised.
 */
export function batchInfoNce(q: tf.Tensor2D, k: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const logits = tf.div(tf.matMul(q, k, false, true), temperature) as tf.Tensor2D; // [N, N]
    const n = logits.shape[0];
    const positive = tf.sum(tf.mul(logits, tf.eye(n)), 1); // [N], the diagonal
    return tf.mean(tf.sub(tf.logSumExp(logits, 1), positive)) as tf.Scalar;
  });
}
