/**
 * Projection heads shared by several methods, in the layouts and initialisations of their official code.
 */
import * as tf from '@tensorflow/tfjs';
import type { ParamStore } from '../../engine/params.js';
import { MlpHead } from '../../engine/heads.js';

/**
 * Overwrite a freshly built variable with another initialiser's values, for the few places where the
 * authors' init differs from the engine layer's default (e.g. DenseCL's kaiming-normal neck Linear layers).
 */
export function reinitialize(variable: tf.Variable, value: tf.Tensor): void {
  variable.assign(value);
  value.dispose();
}

/**
 * MoCo v2's `--mlp` head (openselfsup `NonLinearNeckV1`): fc → ReLU → fc on the average-pooled last
 * feature map, torch names `mlp.0.*` / `mlp.2.*`; PyTorch's default nn.Linear init.
 */
export class GlobalMlpHead {
  readonly mlp: MlpHead;
  constructor(store: ParamStore, prefix: string, inChannels: number, hidden: number, out: number, seed: number | string) {
    this.mlp = new MlpHead(store, `${prefix}.mlp`, { inDim: inChannels, hiddenDims: [hidden], outDim: out, batchNorm: false }, seed);
  }

  /** feature map [B, h, w, C] → embedding [B, D] (not normalised). */
  apply(featureMap: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => this.applyPooled(tf.mean(featureMap, [1, 2]) as tf.Tensor2D)); // AdaptiveAvgPool2d(1)
  }

  /** Already pooled features [B, C] → embedding [B, D] (RegionCL pools its own regions). */
  applyPooled(pooled: tf.Tensor2D): tf.Tensor2D {
    return this.mlp.apply(pooled, { training: true });
  }
}
