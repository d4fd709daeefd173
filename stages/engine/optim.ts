import * as tf from '@tensorflow/tfjs';
import { uniqueVariableName, type ParamInfo } from './params.js';
import { l2Norm } from './ops/norm.js';

/** Which parameters skip weight decay (and, for LARS, trust-ratio adaptation). */
export type ParamFilter = (name: string, info: ParamInfo | undefined, variable: tf.Variable) => boolean;

/** The usual exclusion: biases, norm affine parameters and tokens/position embeddings (ndim <= 1 or role). */
export const excludeBiasAndNorm: ParamFilter = (_name, info, v) =>
  info ? info.role === 'bias' || info.role === 'norm' || info.role === 'token' : v.rank <= 1;

export const excludeNothing: ParamFilter = () => false;

/** timm's `param_groups_weight_decay`: no decay for tensors of rank ≤ 1 and `.bias`; tokens (rank 3) are decayed. */
export const excludeRankOneAndBias: ParamFilter = (name, _info, v) => v.rank <= 1 || name.endsWith('.bias');

/**
 * A per-parameter learning-rate multiple for `AdamWOptions.lrScale`: `scale` for names containing one of `match`, 1
 * otherwise (Deformable DETR's `match_name_keywords`, a substring test; `OptimizerDefaults.lrMultiplier`).
 */
export function lrMultiplierOf(m: { match: readonly string[]; scale: number }): (name: string) => number {
  return (name) => (m.match.some((k) => name.includes(k)) ? m.scale : 1);
}

/**
 * Shared shape of the optimizers: explicit named parameters, per-step learning rate (from a
 * schedule), slot variables created eagerly so a checkpoint taken before the first step has the
 * same tensor set as any later one, and a step counter carried in `counters()`.
 */
export abstract class Optimizer {
  protected readonly params: Map<string, tf.Variable>;
  protected readonly slotVars = new Map<string, tf.Variable>();
  /** Number of completed `step` calls (AdamW bias correction; checkpointed). */
  stepCount = 0;

  constructor(
    params: Map<string, tf.Variable>,
    protected readonly infos: Map<string, ParamInfo> = new Map(),
  ) {
    this.params = new Map([...params].filter(([, v]) => v.trainable));
    if (this.params.size === 0) throw new Error(`${this.constructor.name}: no trainable parameters`);
  }

  /** Apply one update with learning rate `lr`. Gradients are read, not disposed. */
  step(grads: Map<string, tf.Tensor>, lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new Error(`${this.constructor.name}.step: learning rate must be finite and >= 0, got ${lr}`);
    for (const name of grads.keys()) {
      if (!this.params.has(name)) throw new Error(`${this.constructor.name}.step: gradient for unknown parameter '${name}'`);
    }
    this.stepCount += 1;
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) continue; // like PyTorch: a parameter without .grad is not touched
      tf.tidy(() => this.update(name, p, g, lr));
    }
  }

  /** Slot tensors by checkpoint name (`<slot>/<param name>`). */
  slots(): Map<string, tf.Variable> {
    return this.slotVars;
  }

  counters(): Record<string, number> {
    return { stepCount: this.stepCount };
  }

  loadCounters(c: Record<string, number>): void {
    const n = c.stepCount;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new Error(`optimizer counters: stepCount missing or invalid (${String(n)})`);
    this.stepCount = n;
  }

  dispose(): void {
    for (const v of this.slotVars.values()) v.dispose();
    this.slotVars.clear();
  }

  protected slot(kind: string, name: string, like: tf.Variable): tf.Variable {
    const key = `${kind}/${name}`;
    let v = this.slotVars.get(key);
    if (!v) {
      // tf.variable keeps its own reference to the data; the temporary must be disposed or it leaks.
      const zeros = tf.zerosLike(like);
      v = tf.variable(zeros, false, uniqueVariableName(`${this.constructor.name}.${key}`));
      zeros.dispose();
      this.slotVars.set(key, v);
    }
    return v;
  }

  protected abstract update(name: string, p: tf.Variable, g: tf.Tensor, lr: number): void;
}

export interface SgdOptions {
  momentum?: number;
  weightDecay?: number;
  nesterov?: boolean;
  /** Parameters that get no weight decay; default none (torch.optim.SGD with one param group, as MoCo). */
  noDecay?: ParamFilter;
}

/**
 * torch.optim.SGD (dampening 0): d = g + wd * p; buf = momentum * buf + d; p -= lr * buf
 * (or d + momentum * buf with Nesterov). PyTorch initialises buf = d on the first step; with
 * dampening 0 that equals momentum * 0 + d, so a zero-initialised buffer is exact.
 */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  private readonly noDecay: ParamFilter;

  constructor(params: Map<string, tf.Variable>, options: SgdOptions = {}, infos?: Map<string, ParamInfo>) {
    super(params, infos);
    this.momentum = options.momentum ?? 0;
    this.weightDecay = options.weightDecay ?? 0;
    this.nesterov = options.nesterov ?? false;
    this.noDecay = options.noDecay ?? excludeNothing;
    if (this.nesterov && this.momentum <= 0) throw new Error('SGD: nesterov requires momentum > 0');
    if (this.momentum > 0) for (const [name, p] of this.params) this.slot('momentum_buffer', name, p);
  }

  protected update(name: string, p: tf.Variable, g: tf.Tensor, lr: number): void {
    let d = g;
    if (this.weightDecay !== 0 && !this.noDecay(name, this.infos.get(name), p)) d = tf.add(d, tf.mul(p, this.weightDecay));
    if (this.momentum > 0) {
      const buf = this.slot('momentum_buffer', name, p);
      const next = tf.add(tf.mul(buf, this.momentum), d);
      buf.assign(next);
      d = this.nesterov ? tf.add(d, tf.mul(next, this.momentum)) : next;
    }
    p.assign(tf.sub(p, tf.mul(d, lr)));
  }
}

export interface LarsOptions {
  momentum?: number;
  weightDecay?: number;
  /** Trust coefficient (eta); 0.001 in MoCo v3 / BYOL's LARS. */
  trustCoefficient?: number;
  /** Parameters excluded from BOTH decay and trust-ratio scaling; default biases and norms. */
  exclude?: ParamFilter;
}

/**
 * LARS as in MoCo v3 / BYOL: for non-excluded parameters d = g + wd * p, then
 * d *= eta * ||p|| / ||d|| (1 when either norm is 0); buf = momentum * buf + d; p -= lr * buf.
 */
export class LARS extends Optimizer {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly trustCoefficient: number;
  private readonly exclude: ParamFilter;

  constructor(params: Map<string, tf.Variable>, options: LarsOptions = {}, infos?: Map<string, ParamInfo>) {
    super(params, infos);
    this.momentum = options.momentum ?? 0.9;
    this.weightDecay = options.weightDecay ?? 0;
    this.trustCoefficient = options.trustCoefficient ?? 0.001;
    this.exclude = options.exclude ?? excludeBiasAndNorm;
    for (const [name, p] of this.params) this.slot('momentum_buffer', name, p);
  }

  protected update(name: string, p: tf.Variable, g: tf.Tensor, lr: number): void {
    let d = g;
    if (!this.exclude(name, this.infos.get(name), p)) {
      if (this.weightDecay !== 0) d = tf.add(d, tf.mul(p, this.weightDecay));
      const pNorm = l2Norm(p);
      const dNorm = l2Norm(d);
      const ratio = tf.where(
        tf.logicalAnd(tf.greater(pNorm, 0), tf.greater(dNorm, 0)),
        tf.div(tf.mul(pNorm, this.trustCoefficient), tf.maximum(dNorm, 1e-30)),
        tf.onesLike(pNorm),
      );
      d = tf.mul(d, ratio);
    }
    const buf = this.slot('momentum_buffer', name, p);
    const next = tf.add(tf.mul(buf, this.momentum), d);
    buf.assign(next);
    p.assign(tf.sub(p, tf.mul(next, lr)));
  }
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Parameters with no decay; default biases, norms and tokens (MAE's param groups). */
  noDecay?: ParamFilter;
  /**
   * Per-parameter multiple of the step's learning rate (a torch param group with its own lr: decay and update both use
   * it); default 1 for every parameter. Deformable DETR's `lr_linear_proj_mult` (DetReg).
   */
  lrScale?: (name: string) => number;
}

/**
 * torch.optim.AdamW (amsgrad off): p *= 1 - lr * wd (decoupled); m, v moments;
 * p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
export class AdamW extends Optimizer {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly noDecay: ParamFilter;
  private readonly lrScale: (name: string) => number;

  constructor(params: Map<string, tf.Variable>, options: AdamWOptions = {}, infos?: Map<string, ParamInfo>) {
    super(params, infos);
    this.lrScale = options.lrScale ?? (() => 1);
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    this.noDecay = options.noDecay ?? excludeBiasAndNorm;
    for (const [name, p] of this.params) {
      this.slot('exp_avg', name, p);
      this.slot('exp_avg_sq', name, p);
    }
  }

  protected update(name: string, p: tf.Variable, g: tf.Tensor, stepLr: number): void {
    const t = this.stepCount;
    const lr = stepLr * this.lrScale(name);
    let decayed: tf.Tensor = p;
    if (this.weightDecay !== 0 && !this.noDecay(name, this.infos.get(name), p)) decayed = tf.mul(p, 1 - lr * this.weightDecay);
    const m = this.slot('exp_avg', name, p);
    const v = this.slot('exp_avg_sq', name, p);
    const mNext = tf.add(tf.mul(m, this.beta1), tf.mul(g, 1 - this.beta1));
    const vNext = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
    m.assign(mNext);
    v.assign(vNext);
    const biasCorrection1 = 1 - this.beta1 ** t;
    const biasCorrection2 = 1 - this.beta2 ** t;
    const denom = tf.add(tf.div(tf.sqrt(vNext), Math.sqrt(biasCorrection2)), this.eps);
    p.assign(tf.sub(decayed, tf.mul(tf.div(mNext, denom), lr / biasCorrection1)));
  }
}
