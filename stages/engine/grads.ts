import * as tf from '@tensorflow/tfjs';

/**
 * Loss and gradients keyed by parameter NAME (tf.variableGrads keys them by the global
 * variable name, which carries a uniqueness suffix). Only trainable variables are differentiated.
 * The returned tensors are owned by the caller: dispose `loss` and every gradient after use.
 */
export function namedGradients(lossFn: () => tf.Scalar, params: Map<string, tf.Variable>): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
  const trainable = [...params.entries()].filter(([, v]) => v.trainable);
  if (trainable.length === 0) throw new Error('namedGradients: no trainable parameters given');
  const { value, grads } = tf.variableGrads(lossFn, trainable.map(([, v]) => v));
  const named = new Map<string, tf.Tensor>();
  for (const [name, v] of trainable) {
    const g = grads[v.name];
    // A parameter the loss does not reach gets a zero gradient (PyTorch would leave .grad None
    // and skip it; with weight decay the two differ only for unused parameters).
    named.set(name, g ?? tf.zerosLike(v));
  }
  return { loss: value, grads: named };
}

/**
 * torch.nn.utils.clip_grad_norm_: scale all gradients by min(1, maxNorm / (total + 1e-6)) where
 * total is the L2 norm of all gradients together. Returns new tensors (inputs are disposed)
 * and the pre-clipping total norm as a scalar tensor (caller disposes).
 */
export function clipGradientsByGlobalNorm(grads: Map<string, tf.Tensor>, maxNorm: number): { grads: Map<string, tf.Tensor>; totalNorm: tf.Scalar } {
  if (!(maxNorm > 0)) throw new Error(`clipGradientsByGlobalNorm: maxNorm must be > 0, got ${maxNorm}`);
  const totalNorm = tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))) as tf.Scalar);
  const coef = tf.tidy(() => tf.minimum(tf.div(maxNorm, tf.add(totalNorm, 1e-6)), 1));
  const clipped = new Map<string, tf.Tensor>();
  for (const [name, g] of grads) {
    clipped.set(name, tf.mul(g, coef));
    g.dispose();
  }
  coef.dispose();
  return { grads: clipped, totalNorm };
}

export function disposeGradients(grads: Map<string, tf.Tensor>): void {
  for (const g of grads.values()) g.dispose();
}
