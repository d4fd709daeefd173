import * as tf from '@tensorflow/tfjs';

/**
 * What happens to non-trainable tensors (BN running statistics) of the EMA model:
 * 'skip' = MoCo/BYOL (only `parameters()` are averaged; the key encoder's BN buffers follow
 * its own train-mode forwards), 'copy' = take the online values, 'ema' = average them too.
 */
export type EmaBufferMode = 'skip' | 'copy' | 'ema';

/** Fail unless both maps hold the same names with the same shapes (an EMA of another model is a bug). */
export function assertSameLayout(target: Map<string, tf.Variable>, source: Map<string, tf.Variable>, what = 'EMA'): void {
  const missing = [...source.keys()].filter((k) => !target.has(k));
  const extra = [...target.keys()].filter((k) => !source.has(k));
  const shapes = [...source]
    .filter(([k, v]) => target.has(k) && target.get(k)!.shape.join('x') !== v.shape.join('x'))
    .map(([k, v]) => `${k}: [${target.get(k)!.shape}] vs [${v.shape}]`);
  if (missing.length || extra.length || shapes.length) {
    throw new Error(
      `${what}: parameter sets differ` +
        (missing.length ? `; missing in target: ${missing.slice(0, 8).join(', ')}` : '') +
        (extra.length ? `; only in target: ${extra.slice(0, 8).join(', ')}` : '') +
        (shapes.length ? `; shape mismatch: ${shapes.slice(0, 8).join('; ')}` : ''),
    );
  }
}

/** target <- source for every tensor (MoCo's key-encoder initialisation). */
export function copyWeights(target: Map<string, tf.Variable>, source: Map<string, tf.Variable>): void {
  assertSameLayout(target, source, 'copyWeights');
  for (const [name, s] of source) target.get(name)!.assign(s);
}

/**
 * Momentum (EMA) update, in place: t = m * t + (1 - m) * s for trainable tensors of `source`
 * (MoCo: m = 0.999). Layouts are checked once per call; cheap next to a training step.
 */
export function emaUpdate(target: Map<string, tf.Variable>, source: Map<string, tf.Variable>, momentum: number, buffers: EmaBufferMode = 'skip'): void {
  if (!(momentum >= 0 && momentum <= 1)) throw new Error(`emaUpdate: momentum must be in [0, 1], got ${momentum}`);
  assertSameLayout(target, source);
  tf.tidy(() => {
    for (const [name, s] of source) {
      const t = target.get(name)!;
      const isBuffer = !s.trainable;
      if (isBuffer && buffers === 'skip') continue;
      if ((isBuffer && buffers === 'copy') || s.dtype !== 'float32') {
        t.assign(s);
        continue;
      }
      t.assign(tf.add(tf.mul(t, momentum), tf.mul(s, 1 - momentum)));
    }
  });
}
