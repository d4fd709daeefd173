import * as tf from '@tensorflow/tfjs';
import { Rng } from '../../core/rng.js';

/**
 * How a tensor is laid out inside the engine, so export can turn it into PyTorch's layout
 * without guessing from its shape:
 * - `hwio`: conv kernel [kh, kw, in, out] (tf.conv2d); PyTorch wants OIHW.
 * - `io`: linear weight [in, out] (x @ W); PyTorch wants [out, in].
 * - `same`: identical in both (vectors, BN statistics, tokens, position embeddings).
 */
export type ParamLayout = 'hwio' | 'io' | 'same';

/** What a tensor is, for optimizers (LARS/AdamW exclude biases and norms from decay) and export. */
export type ParamRole = 'weight' | 'bias' | 'norm' | 'buffer' | 'token';

export interface ParamInfo {
  layout: ParamLayout;
  role: ParamRole;
}

/**
 * The flat, ordered list of every tensor a model owns, keyed by its torchvision/timm
 * state_dict name (`layer1.0.conv1.weight`, `bn1.running_mean`). Trainable parameters and
 * buffers (BN running statistics, fixed position embeddings) live in the same map, in
 * registration order, exactly like a PyTorch state_dict; `variable.trainable` tells them apart.
 */
export class ParamStore {
  readonly vars = new Map<string, tf.Variable>();
  readonly info = new Map<string, ParamInfo>();

  add(name: string, value: tf.Tensor, info: ParamInfo, trainable = info.role !== 'buffer'): tf.Variable {
    if (this.vars.has(name)) throw new Error(`parameter '${name}' registered twice`);
    // Variable names are global in tfjs; a unique suffix lets two models (online + EMA) coexist.
    const v = tf.variable(value, trainable, uniqueVariableName(name), value.dtype);
    value.dispose();
    this.vars.set(name, v);
    this.info.set(name, info);
    return v;
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new Error(`no parameter named '${name}'`);
    return v;
  }

  /** The trainable subset, in order (what gradients are taken for). */
  trainable(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [k, v] of this.vars) if (v.trainable) out.set(k, v);
    return out;
  }

  /** A view of this store under a name prefix, for building submodules (`layer1.0.`). */
  scope(prefix: string): ParamScope {
    return new ParamScope(this, prefix);
  }

  /** Number of scalar values in trainable parameters (buffers excluded, like torchvision's counts). */
  countTrainable(): number {
    let n = 0;
    for (const v of this.vars.values()) if (v.trainable) n += v.size;
    return n;
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
    this.info.clear();
  }
}

let variableCounter = 0;
/** tfjs variable names are process-global; suffix a counter so two copies of a model can coexist. */
export function uniqueVariableName(base: string): string {
  variableCounter += 1;
  return `${base}#${variableCounter}`;
}

/** A prefix into a ParamStore plus the seeded RNG used for initialisation. */
export class ParamScope {
  constructor(
    readonly store: ParamStore,
    readonly prefix: string,
  ) {}

  name(local: string): string {
    return this.prefix ? `${this.prefix}.${local}` : local;
  }

  child(local: string | number): ParamScope {
    return new ParamScope(this.store, this.name(String(local)));
  }

  add(local: string, value: tf.Tensor, info: ParamInfo, trainable?: boolean): tf.Variable {
    return this.store.add(this.name(local), value, info, trainable);
  }
}

/**
 * Deterministic initial values drawn with core/rng.ts in JS, so that the same seed gives the
 * same weights on every tfjs backend (tf.randomNormal's seeding differs between backends).
 */
export class Initializer {
  readonly rng: Rng;
  constructor(seed: number | string) {
    this.rng = Rng.fromSeed('engine-init', seed);
  }

  normal(shape: number[], std: number, mean = 0): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = mean + std * this.rng.normal();
    return tf.tensor(out, shape, 'float32');
  }

  /** Normal truncated to [mean-2std, mean+2std] by redrawing, as timm/torch trunc_normal_ does. */
  truncNormal(shape: number[], std: number): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let z = this.rng.normal();
      while (z < -2 || z > 2) z = this.rng.normal();
      out[i] = std * z;
    }
    return tf.tensor(out, shape, 'float32');
  }

  uniform(shape: number[], bound: number): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.rng.uniform(-bound, bound);
    return tf.tensor(out, shape, 'float32');
  }
}
