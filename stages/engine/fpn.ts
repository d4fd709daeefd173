import * as tf from '@tensorflow/tfjs';
import { Conv2d } from './layers.js';
import { Initializer, ParamStore } from './params.js';

/**
 * torchvision.ops.FeaturePyramidNetwork with names `inner_blocks.{i}.0.*` (1x1 lateral) and
 * `layer_blocks.{i}.0.*` (3x3 output), kaiming_uniform(a=1) weights and zero biases. Top-down:
 * last = inner[-1](C_last); each lower level adds nearest-upsampled `last` to its lateral.
 * `extraMaxPool` appends torchvision's LastLevelMaxPool (P6 = max_pool2d(P5, 1, stride 2)).
 */
export interface FpnConfig {
  inChannels: number[];
  outChannels: number;
  extraMaxPool: boolean;
}

export class FeaturePyramid {
  private readonly inner: Conv2d[] = [];
  private readonly layer: Conv2d[] = [];

  constructor(
    readonly params: ParamStore,
    prefix: string,
    readonly config: FpnConfig,
    seed: number | string = 0,
  ) {
    if (config.inChannels.length < 1) throw new Error('fpn.inChannels: need at least one level');
    const scope = params.scope(prefix);
    const init = new Initializer(`fpn:${prefix}:${seed}`);
    config.inChannels.forEach((c, i) => {
      this.inner.push(new Conv2d(scope.child('inner_blocks').child(i).child(0), init, { inChannels: c, outChannels: config.outChannels, kernelSize: 1, padding: 0, bias: true, init: 'kaiming_uniform_a1' }));
      this.layer.push(new Conv2d(scope.child('layer_blocks').child(i).child(0), init, { inChannels: config.outChannels, outChannels: config.outChannels, kernelSize: 3, bias: true, init: 'kaiming_uniform_a1' }));
    });
  }

  /** Inputs finest first (C2..C5); outputs P2..P5 (+ P6 with extraMaxPool), same order. */
  apply(features: tf.Tensor4D[]): tf.Tensor4D[] {
    if (features.length !== this.inner.length) throw new Error(`FPN built for ${this.inner.length} levels, got ${features.length}`);
    const last = features.length - 1;
    let top = this.inner[last]!.apply(features[last]!);
    const results: tf.Tensor4D[] = [this.layer[last]!.apply(top)];
    for (let i = last - 1; i >= 0; i--) {
      const lateral = this.inner[i]!.apply(features[i]!);
      // F.interpolate(mode='nearest', size=...) picks src = floor(dst * in / out), as resizeNearestNeighbor without half-pixel centres.
      const upsampled = tf.image.resizeNearestNeighbor(top, [lateral.shape[1], lateral.shape[2]], false, false);
      top = tf.add(lateral, upsampled);
      results.unshift(this.layer[i]!.apply(top));
    }
    if (this.config.extraMaxPool) results.push(tf.maxPool(results[results.length - 1]!, 1, 2, 'valid'));
    return results;
  }
}
