/**
 * Weighted k-nearest-neighbour classification on frozen, L2-normalised global features, as in
 * InstDisc (Wu et al. 2018) and DINO's eval_knn.py: the k most cosine-similar training features
 * vote for their class with weight exp(similarity / T). Defaults k = 20, T = 0.07.
 */
import { BadInputError } from '../../core/errors.js';
import { tf } from '../../core/tf.js';
import { l2Norm } from '../engine/ops/norm.js';

export interface KnnOptions {
  k: number;
  temperature: number;
  numClasses: number;
  /** Test rows per similarity block (bounds memory: block x numTrain floats). */
  blockSize?: number;
}

export function knnClassify(train: Float32Array, trainLabels: Int32Array, test: Float32Array, dim: number, options: KnnOptions): Int32Array {
  const nTrain = trainLabels.length;
  const nTest = test.length / dim;
  if (train.length !== nTrain * dim) throw new BadInputError(`train features hold ${train.length / dim} rows for ${nTrain} labels`, 'knn');
  if (!Number.isInteger(nTest)) throw new BadInputError('test features are not a whole number of rows', 'knn');
  if (nTrain === 0) throw new BadInputError('no training samples with a class label', 'knn');
  const k = Math.min(options.k, nTrain);
  const predictions = new Int32Array(nTest);
  const bank = tf.tensor2d(train, [nTrain, dim]);
  const bankNorm = tf.tidy(() => bank.div(tf.maximum(l2Norm(bank, 1, true), 1e-12)) as tf.Tensor2D);
  bank.dispose();
  const block = options.blockSize ?? 256;
  for (let start = 0; start < nTest; start += block) {
    const end = Math.min(nTest, start + block);
    const [values, indices] = tf.tidy(() => {
      const q = tf.tensor2d(test.subarray(start * dim, end * dim), [end - start, dim]);
      const qn = q.div(tf.maximum(l2Norm(q, 1, true), 1e-12)) as tf.Tensor2D;
      const sim = tf.matMul(qn, bankNorm, false, true);
      const top = tf.topk(sim, k, true);
      return [top.values.dataSync() as Float32Array, top.indices.dataSync() as Int32Array];
    });
    const votes = new Float64Array(options.numClasses);
    for (let r = 0; r < end - start; r++) {
      votes.fill(0);
      for (let j = 0; j < k; j++) {
        const label = trainLabels[indices[r * k + j]!]!;
        votes[label]! += Math.exp(values[r * k + j]! / options.temperature);
      }
      let best = 0;
      for (let c = 1; c < votes.length; c++) if (votes[c]! > votes[best]!) best = c;
      predictions[start + r] = best;
    }
  }
  bankNorm.dispose();
  return predictions;
}
