/**
 * Sinkhorn-Knopp equipartition of soft assignments, as SwAV computes its codes (Caron et al., NeurIPS 2020,
 * https://arxiv.org/abs/2006.09882, §3.1 and Algorithm 1; facebookresearch/swav@06b1b7c `main_swav.py`
 * `distributed_sinkhorn`, one process).
 *
 * With scores S [N, K] (N samples, K prototypes; S_nk = z_n · c_k) and ε the entropic regularisation:
 *   Q ← exp(S / ε),  Q ← Q / Σ Q
 *   repeat `iterations` times:
 *     Q_nk ← Q_nk / Σ_n' Q_n'k / K      every prototype gets total weight 1/K
 *     Q_nk ← Q_nk / Σ_k' Q_nk' / N      every sample gets total weight 1/N
 *   Q ← N · Q                            every row sums to 1: a soft assignment per sample
 * The official code keeps Q transposed ([K, N], "rows" are prototypes); here rows are samples, so its row
 * normalisation is our column (axis 0) normalisation and vice versa.
 *
 * Porting note: exp(S/ε) is taken after subtracting the global maximum of S. The first normalisation (Q / Σ Q)
 * cancels any global factor, so the result is the same; it only keeps exp finite for small ε (in float32, exp
 * overflows above 88: S/ε with cosines and ε < 0.0113), where the official code would produce inf/NaN.
 *
 * No gradient flows through this (the official function is `@torch.no_grad()`): call it on detached scores.
 */
import * as tf from '@tensorflow/tfjs';

export interface SinkhornOptions {
  /** ε, the entropic regularisation (SwAV `--epsilon`, 0.05). */
  epsilon: number;
  /** Number of (prototype, sample) normalisation rounds (SwAV `--sinkhorn_iterations`, 3). */
  iterations: number;
}

/** Scores [N, K] → codes Q [N, K], rows summing to 1, columns to about N/K (exactly after enough iterations). */
export function sinkhornKnopp(scores: tf.Tensor2D, { epsilon, iterations }: SinkhornOptions): tf.Tensor2D {
  if (!(epsilon > 0)) throw new Error(`sinkhornKnopp: epsilon must be > 0, got ${epsilon}`);
  if (!Number.isInteger(iterations) || iterations < 0) throw new Error(`sinkhornKnopp: iterations must be an integer >= 0, got ${iterations}`);
  if (scores.rank !== 2) throw new Error(`sinkhornKnopp: scores must be [N, K], got [${scores.shape.join(', ')}]`);
  const [n, k] = scores.shape;
  return tf.tidy(() => {
    let q: tf.Tensor = tf.exp(tf.div(tf.sub(scores, tf.max(scores)), epsilon)); // [N, K]
    q = tf.div(q, tf.sum(q)); // the matrix sums to 1
    for (let it = 0; it < iterations; it++) {
      q = tf.div(tf.div(q, tf.sum(q, 0, true)), k); // per prototype (official: rows of Q): total 1/K
      q = tf.div(tf.div(q, tf.sum(q, 1, true)), n); // per sample (official: columns): total 1/N
    }
    return tf.mul(q, n) as tf.Tensor2D; // rows sum to 1
  });
}
