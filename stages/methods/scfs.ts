/**
 * SCFS — "Semantics-Consistent Feature Search for Self-Supervised Visual Representation Learning", Song, Zhang, An,
 * Luo, Wang, Xie, ICCV 2023, https://arxiv.org/abs/2212.06486.
 * Authors' code: skyoux/scfs@7bb7c37 `models/scfs.py` (`DINOHead`, `DINOShallowHead`, `DINOLoss`, `DINOShallowLoss`,
 * `StudentWrapper`, `TeacherWrapper`: the feature search), `main_scfs.py` (`train_one_epoch`: loss sum, gradient
 * clipping, last-layer freeze, EMA teacher), `scripts/run_pretrain.sh` (the released recipe: R50, SGD lr 0.1 B 256,
 * τ_t 0.04 → 0.07 over 50 of 200 epochs, crop scales), `augmentations/dino_augmentation.py` (DINO multi-crop). Built on
 * DINO (shared family code: ./shared/dino.ts).
 *
 * Image b gives 2 global crops x_1, x_2 and N local crops x_3 … x_{N+2}. Student θ, teacher ξ (EMA of θ). f^l is the
 * backbone's layer-l map (l ∈ {2, 3, 4}), f̄ = GAP(f^4), g the DINO head, h^l the shallow head of layer l
 * (bottleneck residual block → GAP → Linear/BN/ReLU/Linear/BN → L2). Student calls: one on the 2 global crops, one on
 * the N local crops; the teacher sees the global crops only.
 *   L_DINO = 1/(2(V−1)) Σ_{q∈{1,2}} Σ_{v≠q} H(softmax((g_ξ(f̄_q) − c) / τ_t), softmax(g_θ(f̄_v) / τ_s))       V = N + 2
 * Feature search (teacher side, no gradient), for local crop i and layer l, over the positions p of the teacher's map
 * of the FIRST global crop t^l = f^l_ξ(x_1):
 *   a_i^l(p) = ⟨ t^l(p) / ‖t^l(p)‖ , u_i^l / ‖u_i^l‖ ⟩,   u_i^l = GAP(f^l_θ(x_{i+2}))        (raw cosine; no softmax, no clamp)
 *   target y_i^l = h^l_ξ(a_i^l ⊙ t^l)
 *   L_glob^l = ½ [H(P_t(h^l_ξ(f^l_ξ(x_1)), c^l), P_s(h^l_θ(f^l_θ(x_2)))) + H(P_t(… x_2 …), P_s(… x_1 …))]
 *   L_loc^l  = 1/N Σ_i H(softmax(y_i^l / τ_t), softmax(h^l_θ(f^l_θ(x_{i+2})) / τ_s))       (local targets NOT centred)
 *   L = L_DINO + Σ_{l=2,3,4} ½ (L_glob^l + L_loc^l)
 * H(p, q) = −Σ_k p_k log q_k (mean over the batch). Centres c (DINO head) and c^l (each layer, from the global teacher
 * outputs only) move as c ← 0.9 c + 0.1 · mean_rows after the loss. τ_t follows the per-epoch warm-up schedule, the
 * EMA momentum m = 1 − (1 − m_0)(1 + cos(π·step/T))/2 per step; per-parameter gradient clipping (3.0), the DINO
 * head's last layer frozen in the first epoch, then the optimizer, then ξ ← m ξ + (1 − m) θ over all parameters.
 *
 * Shapes: B batch, N local crops, V = N + 2 crops, K DINO output dimension, D shallow output dimension, C_l channels of
 * layer l, h_l × w_l its map (of a global crop).
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError, IncompatibleArtifactError } from '../../core/errors.js';
import { VIEW_PRESETS } from '../data/augment.js';
import { paramsComponent, type CheckpointComponent } from '../engine/checkpoint.js';
import { emaUpdate } from '../engine/ema.js';
import { namedGradients } from '../engine/grads.js';
import { BatchNorm, Conv2d, Linear, type ForwardOptions } from '../engine/layers.js';
import { relu } from '../engine/native.js';
import { Initializer, type ParamStore } from '../engine/params.js';
import { cosineMomentum } from '../engine/schedule.js';
import { defineMethod, type BackboneFactory, type FeatureBackbone, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { l2Normalize } from './shared/contrast.js';
import { cancelLastLayerGradients, centersComponent, clipGradientsPerParameter, DinoCenter, DinoHead, dinoLoss, softCrossEntropy, teacherProbabilities, teacherTemperature } from './shared/dino.js';
import { buildEncoderPair, type Encoder } from './shared/momentum-encoder.js';

/** The searched layers, by their torchvision names (`tx.Extractor(…, ["layer2", "layer3", "layer4"])`). */
export const LEVELS = ['layer2', 'layer3', 'layer4'] as const;
export type Level = (typeof LEVELS)[number];

/**
 * Side of the local crops for global crops of `imageSize` pixels: `fraction` of it (96/224 officially), rounded to a
 * multiple of 8 (the small-image stem's output stride, so a local crop tiles its layer-4 map exactly), at least 8.
 */
export function localCropSize(imageSize: number, fraction: number): number {
  return Math.max(8, Math.round((imageSize * fraction) / 8) * 8);
}

const scaleRange = (what: string, dflt: [number, number]) =>
  z
    .tuple([z.number().gt(0).max(1), z.number().gt(0).max(1)])
    .refine(([lo, hi]) => lo <= hi, { message: 'the lower bound must not exceed the upper one' })
    .default(dflt)
    .describe(what);

/** SCFS's arguments: main_scfs.py's flags, defaults from scripts/run_pretrain.sh (the README's 200-epoch run) unless said. */
export const scfsArgs = z.strictObject({
  outDim: z.number().int().min(1).default(65536).describe('K, output width of the DINO head (`--out_dim 65536`)'),
  hiddenDim: z.number().int().min(1).default(2048).describe("H, hidden width of the DINO head's 3-layer MLP (`DINOHead(hidden_dim=2048)`)"),
  bottleneckDim: z.number().int().min(1).default(256).describe('D_b, bottleneck width before the weight-normalised last layer (`DINOHead(bottleneck_dim=256)`)'),
  normLastLayer: z.boolean().default(true).describe("freeze the last layer's weight-norm scale γ at 1 (`--norm_last_layer True`)"),
  shallowBottleneckDim: z.number().int().min(1).default(256).describe('bottleneck width of the shallow heads\' residual block (`DINOShallowHead(bottleneck_dim=256)`, all three layers)'),
  shallowHiddenDim: z.number().int().min(1).default(2048).describe('hidden width of the shallow heads\' MLP (`DINOShallowHead(hidden_dim=2048)`)'),
  shallowOutDim: z.number().int().min(1).default(256).describe('D, output width of the shallow heads (`DINOShallowHead(out_dim=256)`, `DINOShallowLoss(256, …)`)'),
  studentTemp: z.number().gt(0).default(0.1).describe('τ_s, student temperature of every loss (`DINOLoss(student_temp=0.1)`)'),
  warmupTeacherTemp: z.number().gt(0).default(0.04).describe('τ_t at epoch 0 (`--warmup_teacher_temp 0.04`)'),
  teacherTemp: z.number().gt(0).default(0.07).describe('τ_t after the warm-up (`--teacher_temp 0.07` in run_pretrain.sh; the parser default is 0.04)'),
  warmupTeacherTempEpochs: z.number().int().min(0).default(50).describe('W, epochs of the linear τ_t warm-up (`--warmup_teacher_temp_epochs 50` in run_pretrain.sh)'),
  epochs: z
    .number()
    .int()
    .min(1)
    .default(200)
    .describe('E, the run length in epochs the per-epoch schedules are written in (`--epoch 200`): step s of T is in epoch ⌊s·E/T⌋ (τ_t warm-up, last-layer freeze)'),
  centerMomentum: z.number().min(0).max(1).default(0.9).describe('momentum of the four centres (`DINOLoss(center_momentum=0.9)`)'),
  momentumTeacher: z.number().min(0).max(1).default(0.996).describe('m_0, EMA momentum of the teacher at step 0, rising to 1 by a cosine (`--momentum_teacher 0.996`)'),
  clipGrad: z.number().min(0).default(3).describe('per-parameter gradient-norm clip, 0 = off (`--clip_grad 3.0`, parser default kept by the script)'),
  freezeLastLayerEpochs: z.number().int().min(0).default(1).describe("epochs during which the DINO head's last layer gets no gradient (`--freeze_last_layer 1`)"),
  localCrops: z.number().int().min(1).default(8).describe('N, local crops per image beside the 2 global ones (`--local_crops_number 8`)'),
  globalCropsScale: scaleRange('RandomResizedCrop scale of the global crops (`--global_crops_scale 0.25 1` in run_pretrain.sh)', [0.25, 1]),
  localCropsScale: scaleRange('RandomResizedCrop scale of the local crops (`--local_crops_scale 0.05 0.25` in run_pretrain.sh)', [0.05, 0.25]),
  localSizeFraction: z
    .number()
    .gt(0)
    .max(1)
    .default(96 / 224)
    .describe('side of a local crop over the global side (96/224: `RandomResizedCrop(96)` vs 224), rounded to a multiple of 8 px'),
});
export type SCFSArgs = z.infer<typeof scfsArgs>;

// ------------------------------------------------------------------------------------------------
// Heads (models/scfs.py DINOShallowHead; the DINO head is shared family code)
// ------------------------------------------------------------------------------------------------

/**
 * `DINOShallowHead(in_dim=C_l, out_dim, bottleneck_dim, hidden_dim)` on a layer-l map: conv1 1×1 C→Db, bn1, ReLU, conv2
 * 3×3 (pad 1) Db→Db, bn2, ReLU, conv3 1×1 Db→C, bn3, + input, ReLU, GAP, then `mlp` = Linear(C, H) BN1d ReLU Linear(H, D)
 * BN1d (torch names `mlp.0`, `mlp.1`, `mlp.3`, `mlp.4`), then L2 normalisation. Convolutions without bias; PyTorch's
 * default init everywhere (nothing re-initialises these modules).
 */
export class ShallowHead {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm;
  readonly fc0: Linear;
  readonly bnFc1: BatchNorm;
  readonly fc3: Linear;
  readonly bnFc4: BatchNorm;

  constructor(store: ParamStore, prefix: string, inDim: number, o: { bottleneckDim: number; hiddenDim: number; outDim: number }, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`scfs-shallow:${prefix}:${seed}`);
    const conv = (name: string, cin: number, cout: number, k: number) => new Conv2d(scope.child(name), init, { inChannels: cin, outChannels: cout, kernelSize: k, padding: (k - 1) / 2, bias: false, init: 'torch_default' });
    this.conv1 = conv('conv1', inDim, o.bottleneckDim, 1);
    this.bn1 = new BatchNorm(scope.child('bn1'), o.bottleneckDim);
    this.conv2 = conv('conv2', o.bottleneckDim, o.bottleneckDim, 3);
    this.bn2 = new BatchNorm(scope.child('bn2'), o.bottleneckDim);
    this.conv3 = conv('conv3', o.bottleneckDim, inDim, 1);
    this.bn3 = new BatchNorm(scope.child('bn3'), inDim);
    const mlp = scope.child('mlp');
    this.fc0 = new Linear(mlp.child(0), init, inDim, o.hiddenDim);
    this.bnFc1 = new BatchNorm(mlp.child(1), o.hiddenDim);
    this.fc3 = new Linear(mlp.child(3), init, o.hiddenDim, o.outDim);
    this.bnFc4 = new BatchNorm(mlp.child(4), o.outDim);
  }

  /** Layer-l maps [n, h, w, C] → unit rows [n, D]; every BN with the statistics of these n rows. */
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor2D {
    return tf.tidy(() => {
      let out = relu(this.bn1.apply(this.conv1.apply(x), opts));
      out = relu(this.bn2.apply(this.conv2.apply(out), opts));
      out = relu(tf.add(this.bn3.apply(this.conv3.apply(out), opts), x)); // residual
      const pooled = tf.mean(out, [1, 2]) as tf.Tensor2D; // gap + squeeze [n, C]
      const z = this.bnFc4.apply(this.fc3.apply(relu(this.bnFc1.apply(this.fc0.apply(pooled), opts))), opts) as tf.Tensor2D;
      return l2Normalize(z, 1);
    });
  }
}

/** Everything on top of the backbone, under `neck.*`: `head` (DINO) and `layer2_head` … `layer4_head` (torch names). */
export class SCFSHeads {
  readonly head: DinoHead;
  readonly shallow: ShallowHead[];

  constructor(store: ParamStore, prefix: string, backbone: FeatureBackbone, args: SCFSArgs, seed: number | string) {
    const channels = levelChannels(backbone);
    this.head = new DinoHead(store, `${prefix}.head`, { inDim: channels[2]!, outDim: args.outDim, hiddenDim: args.hiddenDim, bottleneckDim: args.bottleneckDim, nlayers: 3, normLastLayer: args.normLastLayer }, seed);
    this.shallow = LEVELS.map((level, l) => new ShallowHead(store, `${prefix}.${level}_head`, channels[l]!, { bottleneckDim: args.shallowBottleneckDim, hiddenDim: args.shallowHiddenDim, outDim: args.shallowOutDim }, seed));
  }
}

/** Channels of layer2..layer4: the backbone's last three stages. */
function levelChannels(backbone: FeatureBackbone): number[] {
  const channels = backbone.stageChannels;
  if (!backbone.applyStages || !channels || channels.length < 3) throw new Error('SCFS needs a backbone with at least three stages (applyStages, stageChannels): its shallow heads read layer2..layer4');
  return channels.slice(-3);
}

// ------------------------------------------------------------------------------------------------
// Forward passes (StudentWrapper.forward, TeacherWrapper.forward)
// ------------------------------------------------------------------------------------------------

export interface WrapperOutputs {
  /** g(f̄) [n·B, K]. */
  out: tf.Tensor2D;
  /** h^l(f^l) [n·B, D] per level. */
  shallow: tf.Tensor2D[];
  /** f^l [n·B, h_l, w_l, C_l] per level. */
  maps: tf.Tensor4D[];
}

/** One wrapper call: the crops (of one size) concatenated in crop order, ONE trunk pass (BN over them all), every head. */
export function wrapperForward(enc: Encoder<SCFSHeads>, crops: readonly tf.Tensor4D[], opts: ForwardOptions): WrapperOutputs {
  return tf.tidy(() => {
    const x = crops.length === 1 ? crops[0]! : tf.concat([...crops], 0);
    const maps = enc.backbone.applyStages!(x, opts).slice(-3);
    const out = enc.head.head.apply(tf.mean(maps[2]!, [1, 2]) as tf.Tensor2D); // avgpool + fc = Identity
    const shallow = enc.head.shallow.map((h, l) => h.apply(maps[l]!, opts));
    return { out, shallow, maps };
  });
}

/**
 * The feature search of one layer: the teacher's map of the first global crop t [B, h, w, C] and the student's pooled
 * local-crop features u [N·B, C] (crop-major) → a_i ⊙ t for every local crop i, [N·B, h, w, C] (crop-major), with
 * a_i(p) = ⟨t(p)/‖t(p)‖, u_i/‖u_i‖⟩ (`attention_map_l* * f_layer*.chunk(2)[0]`).
 */
export function featureSearch(teacherMap: tf.Tensor4D, pooledLocal: tf.Tensor2D): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = teacherMap.shape;
    const crops = pooledLocal.shape[0] / b;
    const u = tf.reshape(l2Normalize(pooledLocal, 1), [crops, b, 1, 1, c]); // [N, B, 1, 1, C]
    const t = tf.expandDims(teacherMap, 0); // [1, B, h, w, C]
    const a = tf.sum(tf.mul(tf.expandDims(l2Normalize(teacherMap, 3), 0), u), 4, true); // [N, B, h, w, 1]
    return tf.reshape(tf.mul(a, t), [crops * b, h, w, c]) as tf.Tensor4D;
  });
}

/**
 * `with torch.no_grad()` inside the taped loss: `fn` runs as one untaped op (tfjs records nothing inside a customGrad
 * forward) on a copy of `x` cut off from the tape (`.detach()`), so nothing of it is kept for, or reached by, backprop.
 */
function noGrad<T extends tf.Tensor>(x: tf.Tensor, fn: (x: tf.Tensor) => T): T {
  const detached = tf.tensor(x.dataSync(), x.shape, x.dtype);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const input = args[0] as tf.Tensor;
    return { value: tf.tidy(() => fn(input)), gradFunc: () => tf.zerosLike(input) };
  }) as (x: tf.Tensor) => T;
  const out = op(detached);
  detached.dispose();
  return out;
}

// ------------------------------------------------------------------------------------------------
// SCFS
// ------------------------------------------------------------------------------------------------

/** The parts of the loss as logged, each already weighted (they add up to the loss). */
export const LOSS_PARTS = ['dino', ...LEVELS.flatMap((l) => [`${l}Global`, `${l}Local`])] as const;

export class SCFS implements MethodInstance<SCFSArgs> {
  readonly online: ParamStore;
  readonly teacher: ParamStore;
  /** The teacher's backbone is the one evaluated (README: `eval_linear.py` / `eval_knn.py --checkpoint_key teacher`). */
  readonly exported: ParamStore;
  readonly student: Encoder<SCFSHeads>;
  readonly teacherEncoder: Encoder<SCFSHeads>;
  /** c of the DINO head and c^l of each layer's shallow loss. */
  readonly centers: { dino: DinoCenter; levels: DinoCenter[] };
  readonly state: Record<string, CheckpointComponent>;
  /** Parameters (not BN buffers) of both networks, in the same order: what the EMA averages, frozen γ included. */
  private readonly emaPairs: { teacher: Map<string, tf.Variable>; student: Map<string, tf.Variable> };

  constructor(
    readonly args: SCFSArgs,
    backboneFactory: BackboneFactory,
    seed: number,
    readonly totalSteps: number,
  ) {
    // The teacher starts as a copy of the student (`teacher_without_ddp.load_state_dict(student.module.state_dict())`).
    const { q, k } = buildEncoderPair(backboneFactory, (store, prefix, _c, s, backbone) => new SCFSHeads(store, prefix, backbone, args, s), seed);
    [this.student, this.teacherEncoder, this.online, this.teacher, this.exported] = [q, k, q.store, k.store, k.store];
    const params = (store: ParamStore) => new Map([...store.vars].filter(([name]) => store.info.get(name)?.role !== 'buffer'));
    this.emaPairs = { teacher: params(k.store), student: params(q.store) };
    this.centers = {
      dino: new DinoCenter('dino', args.outDim, args.centerMomentum),
      levels: LEVELS.map((l) => new DinoCenter(l, args.shallowOutDim, args.centerMomentum)),
    };
    this.state = {
      teacher: paramsComponent(k.store),
      centers: centersComponent([this.centers.dino, ...this.centers.levels]),
      schedule: this.scheduleComponent(),
    };
  }

  /** The epoch the per-epoch schedules see at `step` (`epoch` of train_one_epoch). */
  epochAt(step: number, totalSteps = this.totalSteps): number {
    return Math.floor((step * this.args.epochs) / totalSteps);
  }

  /** τ_t, m and the epoch at `step`: pure functions of (step, T, args), restored with the step on resume. */
  schedules(step: number, totalSteps = this.totalSteps): { epoch: number; teacherTemp: number; momentum: number } {
    const epoch = this.epochAt(step, totalSteps);
    return { epoch, teacherTemp: teacherTemperature(epoch, this.args), momentum: cosineMomentum(step, this.args.momentumTeacher, totalSteps) };
  }

  /** The schedules' clock in the checkpoint: a state written for another run length (T) is refused, not silently re-timed. */
  private scheduleComponent(): CheckpointComponent {
    return {
      tensors: new Map(),
      counters: () => ({ totalSteps: this.totalSteps }),
      loadCounters: (c) => {
        if (c.totalSteps !== this.totalSteps) throw new IncompatibleArtifactError(`the schedules (τ_t warm-up, EMA momentum, last-layer freeze) were timed for ${String(c.totalSteps)} steps, this run has ${this.totalSteps}`, 'checkpoint');
      },
    };
  }

  /** The teacher on the 2 global crops, no gradient: g_ξ [2B, K], h^l_ξ [2B, D], and its maps of the first crop [B, …]. */
  teacherGlobal(globals: readonly tf.Tensor4D[]): { out: tf.Tensor2D; shallow: tf.Tensor2D[]; firstCrop: tf.Tensor4D[] } {
    return tf.tidy(() => {
      const b = globals[0]!.shape[0];
      const t = wrapperForward(this.teacherEncoder, globals, { training: true }); // the teacher runs in train mode, as officially
      return { out: t.out, shallow: t.shallow, firstCrop: t.maps.map((m) => tf.slice(m, 0, b)) };
    });
  }

  /** The searched targets y^l_i = h^l_ξ(a^l_i ⊙ t^l) for every layer, stacked [3, N·B, D]; `pooled` = [u^2 | u^3 | u^4] [N·B, ΣC]. */
  searchTargets(firstCrop: readonly tf.Tensor4D[], pooled: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => {
      const channels = firstCrop.map((m) => m.shape[3]);
      const perLevel = tf.split(pooled, channels, 1) as tf.Tensor2D[];
      return tf.stack(LEVELS.map((_, l) => this.teacherEncoder.head.shallow[l]!.apply(featureSearch(firstCrop[l]!, perLevel[l]!), { training: true }))) as tf.Tensor3D;
    });
  }

  step({ views }: MethodBatch, { step, totalSteps, applyGradients }: StepContext): StepResult {
    if (views.length < 3) throw new Error(`SCFS needs 2 global crops and at least one local crop per image, got ${views.length} views`);
    const globals = views.slice(0, 2);
    const locals = views.slice(2);
    for (const group of [globals, locals]) {
      if (group.some((v) => v.shape[1] !== group[0]!.shape[1] || v.shape[2] !== group[0]!.shape[2])) throw new Error('SCFS: the global crops, and the local crops, must each share one size (one trunk call per group)');
    }
    const { args } = this;
    const { epoch, teacherTemp, momentum } = this.schedules(step, totalSteps);
    const temps = { teacherTemp, studentTemp: args.studentTemp };
    // 1. teacher on the global crops (no gradient; its shallow heads see the global maps before the searched ones).
    const teacher = this.teacherGlobal(globals);
    // 2. student on the global crops, then on the local crops; the search; the loss, under the tape.
    const parts: Record<string, tf.Scalar> = {};
    const { loss, grads } = namedGradients(() => {
      const sg = wrapperForward(this.student, globals, { training: true });
      const sl = wrapperForward(this.student, locals, { training: true });
      const pooled = tf.concat(sl.maps.map((m) => tf.mean(m, [1, 2])), 1) as tf.Tensor2D; // [N·B, ΣC]
      const searched = noGrad(pooled, (u) => this.searchTargets(teacher.firstCrop, u as tf.Tensor2D)); // [3, N·B, D]
      const terms: Record<string, tf.Scalar> = { dino: dinoLoss(tf.concat([sg.out, sl.out], 0) as tf.Tensor2D, teacher.out, this.centers.dino.value, temps) };
      LEVELS.forEach((level, l) => {
        // global: teacher crop 1 → student crop 2 and teacher crop 2 → student crop 1, centred targets
        const [t1, t2] = tf.split(teacherProbabilities(teacher.shallow[l]!, this.centers.levels[l]!.value, teacherTemp), 2, 0) as tf.Tensor2D[];
        const [s1, s2] = tf.split(sg.shallow[l]!, 2, 0) as tf.Tensor2D[];
        const global = tf.mul(tf.add(softCrossEntropy(t1!, s2!, args.studentTemp), softCrossEntropy(t2!, s1!, args.studentTemp)), 0.5);
        // local: crop i against its own searched target, not centred; the mean over the N crops of per-crop means
        const targets = teacherProbabilities(tf.squeeze(tf.slice(searched, [l, 0, 0], [1, -1, -1]), [0]) as tf.Tensor2D, null, teacherTemp);
        const local = softCrossEntropy(targets, sl.shallow[l]!, args.studentTemp);
        terms[`${level}Global`] = tf.mul(global, 0.5) as tf.Scalar;
        terms[`${level}Local`] = tf.mul(local, 0.5) as tf.Scalar;
      });
      for (const [k, t] of Object.entries(terms)) parts[k] = tf.keep(t);
      return tf.addN(Object.values(terms)) as tf.Scalar;
    }, this.online.trainable());
    // 3. centres, from this step's global teacher outputs (the loss above used the old ones).
    this.centers.dino.update(teacher.out);
    this.centers.levels.forEach((c, l) => c.update(teacher.shallow[l]!));
    // 4. per-parameter clipping, the last layer's gradient dropped in the first epoch(s), the optimizer.
    if (args.clipGrad > 0) clipGradientsPerParameter(grads, args.clipGrad);
    cancelLastLayerGradients(grads, epoch, args.freezeLastLayerEpochs);
    applyGradients(grads);
    // 5. EMA teacher over every parameter (BN buffers follow the teacher's own forwards).
    emaUpdate(this.emaPairs.teacher, this.emaPairs.student, momentum, 'ema');
    const result: StepResult = { loss: loss.dataSync()[0]!, parts: Object.fromEntries(Object.entries(parts).map(([k, t]) => [k, t.dataSync()[0]!])) };
    tf.dispose([loss, ...grads.values(), ...Object.values(parts), teacher.out, ...teacher.shallow, ...teacher.firstCrop]);
    return result;
  }

  dispose(): void {
    this.online.dispose();
    this.teacher.dispose();
    this.centers.dino.dispose();
    for (const c of this.centers.levels) c.dispose();
  }
}

export const scfs = defineMethod({
  name: 'scfs',
  title: 'SCFS: DINO self-distillation with multi-crop plus a semantics-consistent feature search at layers 2-4 (shallow heads)',
  paper: {
    citation: 'Song, Zhang, An, Luo, Wang, Xie. Semantics-Consistent Feature Search for Self-Supervised Visual Representation Learning. ICCV 2023',
    url: 'https://arxiv.org/abs/2212.06486',
  },
  code: { repo: 'skyoux/scfs', commit: '7bb7c37' },
  args: scfsArgs,
  // augmentations/dino_augmentation.py with the script's scales: 2 × RRC(224, (0.25, 1)) + 8 × RRC(96, (0.05, 0.25)), bicubic.
  consumes: {
    views: (imageSize, args) => VIEW_PRESETS.dinoMultiCrop(imageSize, localCropSize(imageSize, args.localSizeFraction), args.localCrops, args.globalCropsScale, args.localCropsScale),
    geometry: false,
  },
  // scripts/run_pretrain.sh: SGD momentum 0.9 (main_scfs.py), lr 0.1 at B 256 (32 × 8 GPUs) → min_lr 0.0048, wd 1e-4
  // constant, 10 warm-up epochs (parser default) of 200, cosine; biases and 1-D parameters not decayed (get_params_groups).
  optimizer: { kind: 'sgd', baseLr: 0.1, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 10 / 200, sgdNoDecay: 'biasAndNorm' },
  smallScale: {
    args: {
      outDim: 4096,
      hiddenDim: 512,
      bottleneckDim: 128,
      shallowBottleneckDim: 32,
      shallowHiddenDim: 512,
      localCrops: 4,
      localSizeFraction: 0.5,
      epochs: 8,
      warmupTeacherTempEpochs: 2,
    },
    why:
      'synthetic-small (4000 images, 8 classes) at batch 32, 64 px, 1000 steps = 8 epochs: the per-epoch schedules in those 8 epochs (τ_t warm-up 2 = 50/200 of them, ' +
      'last layer frozen for 1 epoch as officially); 4 local crops (8 officially) to keep 6 crops per image affordable on CPU; local crops of 32 px = half the global side ' +
      '(96/224 would give 24 px): the largest local region (scale 0.25 of a 64 px image) is 32 px, so the crop keeps its pixels instead of being downsampled; ' +
      'K 4096 (65536 for ImageNet), MLP widths 512/128 (2048/256) for a 64-channel resnet-tiny C5 (2048 on ResNet-50); shallow heads: bottleneck 32 ' +
      '(256 = half of ResNet-50\'s 512 layer-2 channels; resnet-tiny has 16/32/64, and a 256-wide 3x3 conv over 32x32 layer-2 maps would cost ~40 GMAC per step) and hidden 512',
  },
  claims: [
    { metric: 'knn.top1', over: 'mocov2', paper: 'README (R50, IN-1k, 200 ep, B 256): k-NN 65.5 vs DINO 64.0 (+1.5); 800 ep: 68.5 vs 67.5. The README reports no MoCo v2 k-NN number' },
    { metric: 'linear.top1', over: 'mocov2', paper: 'README (R50, 200 ep, B 256): linear 73.9 vs DINO 73.0 (MoCo v2 at 200 ep: 67.5 in its own paper); 800 ep: 75.7 vs 75.3' },
    {
      metric: 'semseg.mIoU',
      over: 'mocov2',
      paper: 'no semantic-segmentation number in the README or abstract ("state-of-the-art performance on different downstream tasks"; the paper transfers to detection/instance segmentation): issue 14 asks dense tasks over MoCo v2',
    },
  ],
  validate: (args) => {
    if (args.warmupTeacherTempEpochs > args.epochs) throw new BadInputError(`${args.warmupTeacherTempEpochs} warm-up epochs exceed the ${args.epochs} epochs of the schedule (teacher_temp_schedule would be longer than the run)`, 'args.warmupTeacherTempEpochs');
  },
  create: ({ args, backbone, seed, totalSteps }) => new SCFS(args, backbone, seed, totalSteps),
});
