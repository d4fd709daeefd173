/**
 * Projection heads shared by several methods, in the layouts and initialisations of their official code.
 */
import * as tf from '@tensorflow/tfjs';
import { BatchNorm, Linear, type ForwardOptions } from '../../engine/layers.js';
import { relu } from '../../engine/native.js';
import { Initializer, type ParamStore } from '../../engine/params.js';
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

/**
 * BYOL's projector / predictor MLP (deepmind-research byol/utils/networks.py `MLP`): Linear(in, H) with bias →
 * BatchNorm → ReLU → Linear(H, out) without bias; torch names `${prefix}.0.*`, `.1.*`, `.3.weight` (an nn.Sequential
 * with the ReLU at index 2). PyTorch's default init, BN eps 1e-5 / momentum 0.1 (SCRL's TwoLayerLinearHead is the same
 * layout). `applyMap` runs it per location of a feature map, i.e. as 1×1 convolutions with BatchNorm2d statistics over
 * B·h·w (LC-loss's local projector).
 */
export class ByolMlpHead {
  readonly fc1: Linear;
  readonly bn: BatchNorm;
  readonly fc2: Linear;

  constructor(store: ParamStore, prefix: string, inDim: number, hidden: number, outDim: number, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`byol-mlp:${prefix}:${seed}`);
    this.fc1 = new Linear(scope.child(0), init, inDim, hidden, { bias: true, init: 'torch_default' });
    this.bn = new BatchNorm(scope.child(1), hidden);
    this.fc2 = new Linear(scope.child(3), init, hidden, outDim, { bias: false, init: 'torch_default' });
  }

  /** [N, in] → [N, out]; BN over the N rows of this call. */
  apply(x: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D {
    return tf.tidy(() => this.fc2.apply(relu(this.bn.apply(this.fc1.apply(x), opts))) as tf.Tensor2D);
  }

  /** [B, h, w, in] → [B, h, w, out], per location (1×1 convs; BN statistics over the B·h·w locations of this call). */
  applyMap(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D {
    return tf.tidy(() => {
      const [b, h, w, c] = x.shape;
      return tf.reshape(this.apply(tf.reshape(x, [b * h * w, c]) as tf.Tensor2D, opts), [b, h, w, this.fc2.outFeatures]) as tf.Tensor4D;
    });
  }
}

/**
 * MoCo v3's `_build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn)` (facebookresearch/moco-v3
 * moco/builder.py): L × Linear(bias=False); after every Linear but the last, BatchNorm1d → ReLU; after the last, with
 * `lastBn`, BatchNorm1d(affine=False) (SimCLR's design without γ). Torch names as in the nn.Sequential: Linear l at
 * `${prefix}.${3l}`, its BN at `${3l+1}` (the ReLU at 3l+2 has no tensors). PyTorch's default Linear init, BN eps 1e-5 /
 * momentum 0.1. MoCo v3's ViT projector is (3, D, 4096, 256), its predictor (2, 256, 4096, 256), both with `lastBn`.
 */
export class MocoV3Mlp {
  private readonly layers: Array<{ linear: Linear; bn: BatchNorm | null; relu: boolean }> = [];

  constructor(store: ParamStore, prefix: string, numLayers: number, inDim: number, mlpDim: number, outDim: number, lastBn: boolean, seed: number | string) {
    const scope = store.scope(prefix);
    const init = new Initializer(`mocov3-mlp:${prefix}:${seed}`);
    for (let l = 0; l < numLayers; l++) {
      const last = l === numLayers - 1;
      const out = last ? outDim : mlpDim;
      const linear = new Linear(scope.child(3 * l), init, l === 0 ? inDim : mlpDim, out, { bias: false, init: 'torch_default' });
      const bn = !last ? new BatchNorm(scope.child(3 * l + 1), out) : lastBn ? new BatchNorm(scope.child(3 * l + 1), out, { affine: false }) : null;
      this.layers.push({ linear, bn, relu: !last });
    }
  }

  /** [N, in] → [N, out]; BN statistics over the N rows of this call (`opts.training`). */
  apply(x: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D {
    return tf.tidy(() => {
      let h: tf.Tensor = x;
      for (const { linear, bn, relu: withRelu } of this.layers) {
        h = linear.apply(h);
        if (bn) h = bn.apply(h, opts);
        if (withRelu) h = relu(h);
      }
      return h as tf.Tensor2D;
    });
  }
}
