/**
 * The optional mask branch (Mask R-CNN's mask head, shrunk for small images): RoIAlign of the
 * finest pyramid level (P3) at `resolution` x `resolution` (aligned, 2 x 2 samples per bin), then
 * `convs` x (conv3x3 + ReLU) and a 1x1 conv to one mask logit map per class; a RoI uses the map of
 * its class. Trained on the ground-truth boxes of the batch (no proposals: the FCOS head already
 * localises, and gt boxes give the branch clean, well-aligned crops from the first step), with
 * per-pixel binary cross-entropy averaged over RoIs and pixels.
 */
import { tf } from '../../../core/tf.js';
import { roiAlign, type RoiBox } from '../../engine/ops/roi_align.js';
import { Conv2d } from '../../engine/layers.js';
import { Initializer, ParamStore } from '../../engine/params.js';
import { bceWithLogits } from './loss.js';

export interface MaskHeadConfig {
  channels: number;
  numClasses: number;
  resolution: number;
  convs: number;
  /** Stride of the pyramid level the RoIs are read from. */
  stride: number;
}

export class MaskHead {
  readonly params = new ParamStore();
  private readonly convs: Conv2d[] = [];
  private readonly predictor: Conv2d;

  constructor(
    readonly config: MaskHeadConfig,
    seed: number | string,
  ) {
    const init = new Initializer(`mask-head-${seed}`);
    const scope = this.params.scope('mask_head');
    for (let i = 0; i < config.convs; i++) {
      this.convs.push(new Conv2d(scope.child('mask_fcn').child(i), init, { inChannels: config.channels, outChannels: config.channels, kernelSize: 3, bias: true, init: 'kaiming_fan_out' }));
    }
    this.predictor = new Conv2d(scope.child('mask_logits'), init, { inChannels: config.channels, outChannels: config.numClasses, kernelSize: 1, padding: 0, bias: true, init: 'kaiming_fan_out' });
  }

  /** [K, M, M] mask logits of RoIs `boxes` ([batchIndex, x0, y0, x1, y1] in input pixels), each for its `labels[k]`. */
  apply(finest: tf.Tensor4D, boxes: RoiBox[], labels: number[]): tf.Tensor3D {
    const M = this.config.resolution;
    let h = roiAlign(finest, boxes, { outputSize: M, spatialScale: 1 / this.config.stride, samplingRatio: 2, aligned: true });
    for (const conv of this.convs) h = tf.relu(conv.apply(h));
    const logits = this.predictor.apply(h); // [K, M, M, numClasses]
    const K = this.config.numClasses;
    const select = tf.cast(tf.equal(tf.expandDims(tf.tensor1d(labels, 'int32'), 1), tf.range(0, K, 1, 'int32')), 'float32');
    return tf.sum(tf.mul(logits, tf.reshape(select, [labels.length, 1, 1, K])), 3) as tf.Tensor3D;
  }
}

/** Mean per-pixel BCE of [K, M, M] logits against [K, M, M] binary targets. */
export function maskLoss(logits: tf.Tensor3D, targets: tf.Tensor3D): tf.Scalar {
  return tf.mean(bceWithLogits(logits, targets)) as tf.Scalar;
}
