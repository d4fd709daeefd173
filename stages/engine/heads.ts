import * as tf from '@tensorflow/tfjs';
import { BatchNorm, Conv2d, Linear, type ForwardOptions } from './layers.js';
import { relu } from './native.js';
import { Initializer, ParamStore } from './params.js';

/**
 * A projection/prediction MLP built like an nn.Sequential, so tensor names are the PyTorch
 * indices: with `batchNorm` off, Linear(0) ReLU(1) Linear(2) => `0.weight`, `2.weight`
 * (MoCo v2's `fc.0` / `fc.2`); with it on, Linear(0) BN(1) ReLU(2) Linear(3) ...
 */
export interface MlpHeadConfig {
  inDim: number;
  /** Hidden widths; MoCo v2: [2048] for a ResNet-50 (the backbone width). */
  hiddenDims: number[];
  outDim: number;
  /** BatchNorm1d after each hidden Linear (BYOL/SimSiam style); MoCo v2: false. */
  batchNorm: boolean;
  /** BatchNorm1d (no affine) on the output (SimSiam projector); default false. */
  outputBatchNorm?: boolean;
}

export class MlpHead {
  private readonly steps: Array<{ kind: 'linear'; layer: Linear } | { kind: 'bn'; layer: BatchNorm } | { kind: 'relu' }> = [];

  constructor(
    readonly params: ParamStore,
    prefix: string,
    readonly config: MlpHeadConfig,
    seed: number | string = 0,
  ) {
    const scope = params.scope(prefix);
    const init = new Initializer(`mlp:${prefix}:${seed}`);
    let index = 0;
    let dim = config.inDim;
    for (const hidden of config.hiddenDims) {
      // Linear before BN carries no bias in BYOL/SimSiam; MoCo v2 (no BN) keeps it.
      this.steps.push({ kind: 'linear', layer: new Linear(scope.child(index++), init, dim, hidden, { bias: !config.batchNorm }) });
      if (config.batchNorm) this.steps.push({ kind: 'bn', layer: new BatchNorm(scope.child(index++), hidden) });
      this.steps.push({ kind: 'relu' });
      index++;
      dim = hidden;
    }
    this.steps.push({ kind: 'linear', layer: new Linear(scope.child(index++), init, dim, config.outDim) });
    if (config.outputBatchNorm) this.steps.push({ kind: 'bn', layer: new BatchNorm(scope.child(index++), config.outDim, { affine: false }) });
  }

  apply(x: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D {
    let h: tf.Tensor = x;
    for (const step of this.steps) {
      if (step.kind === 'linear') h = step.layer.apply(h);
      else if (step.kind === 'bn') h = step.layer.apply(h, opts);
      else h = relu(h);
    }
    return h as tf.Tensor2D;
  }
}

/** MoCo v2 projection head: Linear(d, d) ReLU Linear(d, 128) (moco/builder.py, `mlp=True`). */
export function mocoV2Head(params: ParamStore, prefix: string, inDim: number, outDim = 128, seed: number | string = 0): MlpHead {
  return new MlpHead(params, prefix, { inDim, hiddenDims: [inDim], outDim, batchNorm: false }, seed);
}

/**
 * A per-location MLP made of 1x1 convs: Conv(in, hidden, 1) ReLU Conv(hidden, out, 1), names
 * `0.*` and `2.*` like DenseCL's `DenseCLNeck.mlp2`. Applied to a [B, H, W, C] map it gives
 * [B, H, W, out]; DenseCL: in = hidden = 2048, out = 128.
 */
export class DenseProjectionHead {
  private readonly conv1: Conv2d;
  private readonly conv2: Conv2d;

  constructor(
    readonly params: ParamStore,
    prefix: string,
    readonly config: { inChannels: number; hiddenChannels: number; outChannels: number },
    seed: number | string = 0,
  ) {
    const scope = params.scope(prefix);
    const init = new Initializer(`dense:${prefix}:${seed}`);
    // DenseCL's neck re-initialises only Linear and norm layers, so its 1x1 convs keep PyTorch's
    // default Conv2d init; 'torch_default' reproduces that distribution.
    this.conv1 = new Conv2d(scope.child(0), init, { inChannels: config.inChannels, outChannels: config.hiddenChannels, kernelSize: 1, padding: 0, bias: true, init: 'torch_default' });
    this.conv2 = new Conv2d(scope.child(2), init, { inChannels: config.hiddenChannels, outChannels: config.outChannels, kernelSize: 1, padding: 0, bias: true, init: 'torch_default' });
  }

  apply(map: tf.Tensor4D): tf.Tensor4D {
    return this.conv2.apply(relu(this.conv1.apply(map)));
  }
}
