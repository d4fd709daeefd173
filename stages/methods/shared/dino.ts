/**
 * Self-distillation with no labels (DINO, Caron et al., ICCV 2021, https://arxiv.org/abs/2104.14294) as the methods
 * built on facebookresearch/dino use it (SCFS: skyoux/scfs@7bb7c37 `models/scfs.py` `DINOHead` / `DINOLoss`,
 * `utils/utils.py` `clip_gradients`, `cancel_gradients_last_layer`; the same code as dino's `vision_transformer.py`
 * and `main_dino.py`):
 *
 *   head      g(x) = W̄ · ( mlp(x) / ‖mlp(x)‖ ),  W̄_k = γ_k · v_k / ‖v_k‖     (weight-normalised last layer, γ ≡ 1 frozen)
 *   teacher   P_t = softmax((g_t(x) − c) / τ_t)                            (centred, sharpened; no gradient)
 *   student   P_s = softmax(g_s(x) / τ_s)
 *   loss      H(P_t, P_s) = −Σ_k P_t,k · log P_s,k, mean over the batch
 *   centre    c ← m_c · c + (1 − m_c) · mean_rows g_t(x)                   (after the loss, from this step's teacher)
 *   τ_t       linear from τ_warm to τ over the first W epochs, then τ (indexed by EPOCH, as `teacher_temp_schedule`)
 *
 * Shapes: N rows, K output dimensions (prototypes), D bottleneck width, H hidden width.
 */
import * as tf from '@tensorflow/tfjs';
import type { CheckpointComponent } from '../../engine/checkpoint.js';
import { Linear } from '../../engine/layers.js';
import { Initializer, uniqueVariableName, type ParamStore } from '../../engine/params.js';
import { l2Normalize } from './contrast.js';
import { l2Norm } from '../../engine/ops/norm.js';
import { reinitialize } from './heads.js';
import type { NamedGradients } from './contract.js';

/** nn.GELU() (exact, erf form). */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))) as T);
}

export interface DinoHeadConfig {
  inDim: number;
  /** K (`--out_dim`, 65536 in DINO and SCFS). */
  outDim: number;
  /** H (`hidden_dim=2048`). */
  hiddenDim: number;
  /** D (`bottleneck_dim=256`). */
  bottleneckDim: number;
  /** Linear layers of the MLP (`nlayers=3`). */
  nlayers: number;
  /** γ frozen at 1 (`--norm_last_layer True`); otherwise γ is learnt. */
  normLastLayer: boolean;
}

/**
 * `DINOHead` with `use_bn=False`: mlp = Linear(in, H) GELU [Linear(H, H) GELU]… Linear(H, D) (torch names
 * `mlp.0`, `mlp.2`, `mlp.4`; a single Linear is `mlp`), L2 normalisation, then `last_layer` =
 * weight_norm(Linear(D, K, bias=False)) with `weight_v` (stored [D, K]) and `weight_g` (stored [1, K], torch's
 * [K, 1]; filled with 1, frozen when `normLastLayer`). Init as `_init_weights`: the MLP's weights trunc_normal_(std
 * .02) with the DEFAULT bounds a = −2, b = 2 (absolute, i.e. 100 σ: a plain normal), biases 0; `weight_v` keeps
 * nn.Linear's default init (it is built after `self.apply(self._init_weights)`).
 */
export class DinoHead {
  readonly mlp: Linear[];
  readonly weightV: tf.Variable;
  readonly weightG: tf.Variable;

  constructor(store: ParamStore, prefix: string, readonly config: DinoHeadConfig, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`dino-head:${prefix}:${seed}`);
    const layers = Math.max(config.nlayers, 1);
    const dims = layers === 1 ? [config.inDim, config.bottleneckDim] : [config.inDim, ...Array.from({ length: layers - 1 }, () => config.hiddenDim), config.bottleneckDim];
    this.mlp = dims.slice(1).map((out, i) => {
      const layer = new Linear(layers === 1 ? scope.child('mlp') : scope.child('mlp').child(2 * i), init, dims[i]!, out);
      reinitialize(layer.weight, init.normal([dims[i]!, out], 0.02));
      reinitialize(layer.bias!, tf.zeros([out]));
      return layer;
    });
    const last = scope.child('last_layer');
    this.weightG = last.add('weight_g', tf.ones([1, config.outDim]), { layout: 'io', role: 'weight' }, !config.normLastLayer);
    this.weightV = last.add('weight_v', init.uniform([config.bottleneckDim, config.outDim], 1 / Math.sqrt(config.bottleneckDim)), { layout: 'io', role: 'weight' });
  }

  /** x [N, in] → g(x) [N, K]. */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      let h: tf.Tensor2D = x;
      this.mlp.forEach((layer, i) => {
        h = layer.apply(h) as tf.Tensor2D;
        if (i < this.mlp.length - 1) h = gelu(h);
      });
      const z = l2Normalize(h, 1); // [N, D]
      // torch._weight_norm(v, g, dim=0): W̄ = v · g / ‖v‖ per output unit (no eps).
      const w = tf.mul(this.weightV, tf.div(this.weightG, l2Norm(this.weightV, 0, true))) as tf.Tensor2D; // [D, K]
      return tf.matMul(z, w);
    });
  }
}

/** `teacher_temp_schedule[epoch]`: np.linspace(warmup, final, W) for the first W epochs, then `final`. */
export function teacherTemperature(epoch: number, o: { warmupTeacherTemp: number; teacherTemp: number; warmupTeacherTempEpochs: number }): number {
  const w = o.warmupTeacherTempEpochs;
  if (epoch >= w) return o.teacherTemp;
  if (w === 1) return o.warmupTeacherTemp; // np.linspace(a, b, 1) = [a]
  return o.warmupTeacherTemp + ((o.teacherTemp - o.warmupTeacherTemp) * epoch) / (w - 1);
}

/** P_t = softmax((t − c) / τ_t) [N, K], or without centring when `center` is null (SCFS's local targets). */
export function teacherProbabilities(teacher: tf.Tensor2D, center: tf.Tensor | null, temperature: number): tf.Tensor2D {
  return tf.tidy(() => tf.softmax(tf.div(center ? tf.sub(teacher, center) : teacher, temperature)) as tf.Tensor2D);
}

/** −mean_rows Σ_k p_k · log softmax(s / τ_s)_k: targets p [N, K] (constant), student outputs s [N, K]. */
export function softCrossEntropy(targets: tf.Tensor2D, student: tf.Tensor2D, studentTemp: number): tf.Scalar {
  return tf.tidy(() => tf.mean(tf.neg(tf.sum(tf.mul(targets, tf.logSoftmax(tf.div(student, studentTemp))), 1))) as tf.Scalar);
}

/**
 * `DINOLoss.forward`: student outputs of V crops [V·N, K] (crop-major: rows v·N … v·N + N − 1), teacher outputs of
 * the 2 global crops [2N, K]. Every (teacher crop q, student crop v ≠ q) pair, averaged over the 2(V − 1) pairs.
 */
export function dinoLoss(student: tf.Tensor2D, teacher: tf.Tensor2D, center: tf.Tensor, o: { teacherTemp: number; studentTemp: number }): tf.Scalar {
  return tf.tidy(() => {
    const n = teacher.shape[0] / 2;
    const crops = student.shape[0] / n;
    const targets = tf.split(teacherProbabilities(teacher, center, o.teacherTemp), 2, 0) as tf.Tensor2D[];
    const students = tf.split(student, crops, 0) as tf.Tensor2D[];
    const terms: tf.Scalar[] = [];
    targets.forEach((q, iq) => students.forEach((s, v) => v !== iq && terms.push(softCrossEntropy(q, s, o.studentTemp))));
    return tf.div(tf.addN(terms), terms.length) as tf.Scalar;
  });
}

/**
 * The centre c [1, K] of one DINO loss (`register_buffer("center", zeros(1, out_dim))`), checkpointed with the
 * training state. `update` is `update_center` on one process: c ← m·c + (1 − m)·Σ_rows t / N.
 */
export class DinoCenter {
  readonly value: tf.Variable;

  constructor(
    readonly name: string,
    dim: number,
    readonly momentum: number,
  ) {
    const zeros = tf.zeros([1, dim]);
    this.value = tf.variable(zeros, false, uniqueVariableName(`dino.center.${name}`));
    zeros.dispose();
  }

  update(teacher: tf.Tensor2D): void {
    const next = tf.tidy(() => tf.add(tf.mul(this.value, this.momentum), tf.mul(tf.mean(teacher, 0, true), 1 - this.momentum)));
    this.value.assign(next);
    next.dispose();
  }

  dispose(): void {
    this.value.dispose();
  }
}

/** Several centres in one checkpoint component, by name. */
export function centersComponent(centers: readonly DinoCenter[]): CheckpointComponent {
  return { tensors: new Map(centers.map((c) => [c.name, c.value])) };
}

/**
 * `utils.clip_gradients`: EACH parameter's gradient on its own (not the global norm) is scaled by clip / (‖g‖ + 1e-6)
 * when that is below 1. Replaces the tensors in `grads` (the old ones are disposed).
 */
export function clipGradientsPerParameter(grads: NamedGradients, clip: number): void {
  if (!(clip > 0)) throw new Error(`clipGradientsPerParameter: clip must be > 0, got ${clip}`);
  for (const [name, g] of grads) {
    const clipped = tf.tidy(() => tf.mul(g, tf.minimum(tf.div(clip, tf.add(l2Norm(g), 1e-6)), 1)));
    g.dispose();
    grads.set(name, clipped);
  }
}

/** `utils.cancel_gradients_last_layer` while `epoch < freezeLastLayer`: the head's last layer gets no gradient (`p.grad = None`: no update, no decay). */
export function cancelLastLayerGradients(grads: NamedGradients, epoch: number, freezeLastLayer: number): void {
  if (epoch >= freezeLastLayer) return;
  for (const [name, g] of [...grads]) {
    if (!name.includes('last_layer')) continue;
    g.dispose();
    grads.delete(name);
  }
}
