/**
 * What the methods that pretrain a whole DETR-family detector on a frozen backbone share: UP-DETR (DETR on a frozen
 * SwAV CNN, dddzg/up-detr@44c0c6e) and DETReg (Deformable DETR on a frozen SwAV ResNet, amirbar/DETReg@a4b6363, whose
 * datasets/selfdet.py, engine.py and main.py follow UP-DETR's):
 *   - the frozen backbone (`--fre_cnn` / `--lr_backbone 0`): built under `backbone.`, loaded from an earlier run's
 *     backbone file (`consumes.pretrainedBackbone`), none of its parameters trainable (BackboneBase with
 *     train_backbone False sets requires_grad False on all of them);
 *   - the view the query patches / box crops are cut from (selfdet.py's query transform);
 *   - the guard against a diverged detector, the weight_dict sum per kind of term and the step of engine.py's
 *     train_one_epoch (backward, clip_grad_norm_, optimizer.step);
 *   - the exported detector: every parameter but the backbone's.
 */
import * as tf from '@tensorflow/tfjs';
import { TrainingDivergedError } from '../../../core/errors.js';
import type { ViewSpec } from '../../data/augment.js';
import type { DetrOutputs } from '../../engine/detr/criterion.js';
import type { MatchIndices } from '../../engine/detr/matcher.js';
import { clipGradientsByGlobalNorm, namedGradients } from '../../engine/grads.js';
import type { ParamStore } from '../../engine/params.js';
import type { FeatureBackbone, MethodBuild, MethodExport, StepContext, StepResult } from './contract.js';

/** The frozen backbone's parameter prefix: `backbone.*`, never trained, never exported with the detector. */
const BACKBONE = 'backbone';
const isBackbone = (name: string): boolean => name.startsWith(`${BACKBONE}.`);

/** Builds the backbone into `store` under `backbone.`, loads the pretrained file when one is named, and freezes it. */
export function frozenBackbone(store: ParamStore, build: Pick<MethodBuild<unknown>, 'backbone' | 'seed' | 'pretrained'>): FeatureBackbone {
  const backbone = build.backbone(store, BACKBONE, build.seed);
  build.pretrained?.load(store, BACKBONE);
  for (const [name, v] of store.vars) if (isBackbone(name)) v.trainable = false;
  return backbone;
}

/** The whole image at `size` px: no crop, no flip, no colour change. */
export function wholeImageView(size: number): ViewSpec {
  return { size, scale: [1, 1], ratio: [1e-3, 1e3], flipP: 0 };
}

/**
 * The whole image with selfdet.py's query transform (ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur
 * σ ∈ [0.1, 2] p 0.5 at P px, no flip), which the patches / crops are cut from. The blur σ is given at P px on a
 * patch; cut from a view of S px a patch is about S/2 wide, so σ is scaled by (S/2)/P.
 */
export function selfdetCropSourceView(size: number, patchSize: number): ViewSpec {
  const sigma = (s: number) => (s * size) / 2 / patchSize;
  return { ...wholeImageView(size), colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 }, grayscaleP: 0.2, blur: { p: 0.5, sigma: [sigma(0.1), sigma(2)] } };
}

/**
 * A diverged detector (non-finite weights) gives non-finite costs, which the Hungarian matching cannot assign: throws
 * TrainingDivergedError (not retried) naming `method` when any layer's logits or boxes are not finite.
 */
export function assertFiniteDetections(outputs: DetrOutputs, method: string): void {
  const predictions = [outputs, ...(outputs.auxOutputs ?? [])].flatMap((o) => [o.predLogits, o.predBoxes]);
  const finite = tf.tidy(() => tf.all(tf.stack(predictions.map((t) => tf.all(tf.isFinite(t))))).dataSync()[0]);
  if (!finite) throw new TrainingDivergedError(`${method}: the detector's outputs are no longer finite (the weights diverged); nothing to match`);
}

/** What a detector method's forward pass and loss return (one step's, under the tape). */
export interface DetectorLoss<Outputs> {
  /** The detector's outputs, every decoder layer's, and the method's own predictions. */
  outputs: Outputs;
  /** Σ weight_dict[k] · loss_k: what the optimizer minimises. */
  total: tf.Scalar;
  /** Every term, under the official loss-dict names (`_i` suffixes: auxiliary decoder layer i). */
  losses: Record<string, tf.Scalar>;
  /** The weighted sums per kind over the layers (`weightedParts`): they add up to `total`. */
  parts: Record<string, tf.Scalar>;
  /** Each layer's matching: the last layer first, then aux layer 0, 1, …. */
  indices: MatchIndices[][];
}

/**
 * The weight_dict sum, grouped by kind: parts[k] = weight[loss_k] · Σ_i loss_k_i over the last layer's term and its
 * `_i` copies (kinds without a term are left out), total = Σ_k parts[k]. The parts are what the step logs.
 */
export function weightedParts(losses: Record<string, tf.Scalar>, weight: Record<`loss_${string}`, number>): { parts: Record<string, tf.Scalar>; total: tf.Scalar } {
  const parts: Record<string, tf.Scalar> = {};
  for (const [kind, w] of Object.entries(weight)) {
    const terms = Object.entries(losses).filter(([name]) => name.replace(/_\d+$/, '') === kind);
    if (terms.length) parts[kind.slice('loss_'.length)] = tf.tidy(() => tf.mul(tf.addN(terms.map(([, v]) => v)), w) as tf.Scalar);
  }
  return { parts, total: tf.addN(Object.values(parts)) as tf.Scalar };
}

/**
 * One step of engine.py's train_one_epoch: `loss` under the tape (over `params`' trainable variables),
 * clip_grad_norm_(max_norm) when `clipMaxNorm` > 0, the optimizer; the loss and its parts as numbers.
 */
export function clippedStep(
  params: Map<string, tf.Variable>,
  clipMaxNorm: number,
  ctx: Pick<StepContext, 'applyGradients'>,
  loss: () => { total: tf.Scalar; parts: Record<string, tf.Scalar> },
): StepResult {
  let parts: Record<string, tf.Scalar> = {};
  try {
    const { loss: value, grads } = namedGradients(() => {
      const out = loss();
      parts = Object.fromEntries(Object.entries(out.parts).map(([k, t]) => [k, tf.keep(t)]));
      return out.total;
    }, params);
    const clipped = clipMaxNorm > 0 ? clipGradientsByGlobalNorm(grads, clipMaxNorm) : { grads, totalNorm: null };
    ctx.applyGradients(clipped.grads);
    const result: StepResult = { loss: value.dataSync()[0]!, parts: Object.fromEntries(Object.entries(parts).map(([k, t]) => [k, t.dataSync()[0]!])) };
    tf.dispose([value, ...clipped.grads.values(), ...(clipped.totalNorm ? [clipped.totalNorm] : [])]);
    return result;
  } finally {
    tf.dispose(Object.values(parts));
  }
}

/** The detector export: every tensor of `store` but the frozen backbone's, official names, with `metadata`. */
export function detectorExport(store: ParamStore, metadata: Record<string, string>): MethodExport {
  return { store, exclude: isBackbone, metadata };
}
