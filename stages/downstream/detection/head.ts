/**
 * The FCOS detector on top of a backbone's last three stages (C3-C5): a feature pyramid
 * (engine's torchvision-named FeaturePyramid, P3-P5) and one head shared by all levels:
 *   classification tower (conv3x3 + GroupNorm + ReLU) x towerConvs -> conv3x3 -> K class logits
 *   regression tower     (conv3x3 + GroupNorm + ReLU) x towerConvs -> conv3x3 -> 4 ltrb
 *                                                                 \-> conv3x3 -> 1 centerness logit
 * (FCOS with centerness on the regression branch, FCOS-imprv). ltrb = exp(scale_level * x), in
 * stride units, with one learned scale per level (FCOS's `Scale` modules). exp rather than
 * FCOS-imprv's relu: with relu, a coordinate whose output starts below zero gets no gradient, and
 * on these small heads (16-32 channels, few steps) the boxes stayed collapsed; exp starts every box
 * at one stride per side and always has a gradient. Head convs start from
 * N(0, 0.01) with zero bias and the class bias at -log((1 - 0.01) / 0.01), so every location starts
 * at probability 0.01 and the focal loss of the many background locations does not swamp the start.
 */
import { tf } from '../../../core/tf.js';
import { FeaturePyramid } from '../../engine/fpn.js';
import { Conv2d } from '../../engine/layers.js';
import { Initializer, ParamStore, type ParamScope } from '../../engine/params.js';

export interface FcosHeadConfig {
  /** Channels of the backbone stages fed to the pyramid, finest first. */
  inChannels: number[];
  numClasses: number;
  /** Pyramid and head width. */
  channels: number;
  /** conv + GN + ReLU blocks per tower (FCOS: 4; small images need fewer). */
  towerConvs: number;
  /** GroupNorm groups (FCOS: 32 at 256 channels). */
  groups: number;
  /** Initial foreground probability of every location. */
  priorProbability: number;
}

export interface FcosOutput {
  /** [B, N, K] class logits over all locations (level by level, row-major). */
  classLogits: tf.Tensor3D;
  /** [B, N, 4] positive ltrb distances in stride units. */
  ltrb: tf.Tensor3D;
  /** [B, N] centerness logits. */
  centernessLogits: tf.Tensor2D;
  /** [height, width] of each level. */
  mapSizes: Array<[number, number]>;
  /** The pyramid maps P3.. (finest first), for the mask branch. */
  pyramid: tf.Tensor4D[];
}

/** GroupNorm (eps 1e-5) with per-channel affine weight/bias, NHWC. */
class GroupNorm {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor(
    scope: ParamScope,
    readonly channels: number,
    readonly groups: number,
  ) {
    if (channels % groups !== 0) throw new Error(`GroupNorm: ${channels} channels do not split into ${groups} groups`);
    this.weight = scope.add('weight', tf.ones([channels]), { layout: 'same', role: 'norm' });
    this.bias = scope.add('bias', tf.zeros([channels]), { layout: 'same', role: 'norm' });
  }
  apply(x: tf.Tensor4D): tf.Tensor4D {
    const [b, h, w, c] = x.shape;
    const grouped = tf.reshape(x, [b, h, w, this.groups, c / this.groups]);
    const { mean, variance } = tf.moments(grouped, [1, 2, 4], true);
    const normed = tf.reshape(tf.div(tf.sub(grouped, mean), tf.sqrt(tf.add(variance, 1e-5))), [b, h, w, c]);
    return tf.add(tf.mul(normed, this.weight), this.bias) as tf.Tensor4D;
  }
}

class Tower {
  private readonly blocks: Array<{ conv: Conv2d; norm: GroupNorm }> = [];
  constructor(scope: ParamScope, init: Initializer, channels: number, depth: number, groups: number) {
    for (let i = 0; i < depth; i++) {
      this.blocks.push({ conv: headConv(scope.child(i).child('conv'), init, channels, channels, 0), norm: new GroupNorm(scope.child(i).child('gn'), channels, groups) });
    }
  }
  apply(x: tf.Tensor4D): tf.Tensor4D {
    let h = x;
    for (const b of this.blocks) h = tf.relu(b.norm.apply(b.conv.apply(h)));
    return h;
  }
}

/** A 3x3 conv with FCOS's head init: weights N(0, 0.01), bias constant. */
function headConv(scope: ParamScope, init: Initializer, inChannels: number, outChannels: number, biasValue: number): Conv2d {
  const conv = new Conv2d(scope, init, { inChannels, outChannels, kernelSize: 3, bias: true, init: 'torch_default' });
  // Conv2d has no N(0, 0.01) option; overwrite its default draw with FCOS's init (same seeded RNG).
  const w = init.normal([3, 3, inChannels, outChannels], 0.01);
  conv.weight.assign(w);
  w.dispose();
  const b = tf.fill([outChannels], biasValue);
  conv.bias!.assign(b);
  b.dispose();
  return conv;
}

export class FcosHead {
  readonly params = new ParamStore();
  private readonly fpn: FeaturePyramid;
  private readonly clsTower: Tower;
  private readonly boxTower: Tower;
  private readonly clsLogits: Conv2d;
  private readonly boxPred: Conv2d;
  private readonly centerness: Conv2d;
  private readonly scales: tf.Variable[];

  constructor(
    readonly config: FcosHeadConfig,
    seed: number | string,
  ) {
    if (config.inChannels.length < 1) throw new Error('FcosHead: need at least one input level');
    this.fpn = new FeaturePyramid(this.params, 'fpn', { inChannels: config.inChannels, outChannels: config.channels, extraMaxPool: false }, seed);
    const init = new Initializer(`fcos-head-${seed}`);
    const head = this.params.scope('head');
    this.clsTower = new Tower(head.child('cls_tower'), init, config.channels, config.towerConvs, config.groups);
    this.boxTower = new Tower(head.child('bbox_tower'), init, config.channels, config.towerConvs, config.groups);
    const prior = -Math.log((1 - config.priorProbability) / config.priorProbability);
    this.clsLogits = headConv(head.child('cls_logits'), init, config.channels, config.numClasses, prior);
    this.boxPred = headConv(head.child('bbox_pred'), init, config.channels, 4, 0);
    this.centerness = headConv(head.child('centerness'), init, config.channels, 1, 0);
    this.scales = config.inChannels.map((_, i) => head.child('scales').child(i).add('scale', tf.ones([1]), { layout: 'same', role: 'norm' }));
  }

  /** Backbone stage maps (finest first) -> per-location outputs, flattened over levels. */
  apply(stages: tf.Tensor4D[]): FcosOutput {
    const pyramid = this.fpn.apply(stages);
    const cls: tf.Tensor3D[] = [];
    const box: tf.Tensor3D[] = [];
    const ctr: tf.Tensor2D[] = [];
    pyramid.forEach((p, i) => {
      const [b, h, w] = p.shape;
      const c = this.clsTower.apply(p);
      const r = this.boxTower.apply(p);
      cls.push(tf.reshape(this.clsLogits.apply(c), [b, h * w, this.config.numClasses]));
      // The clamp only stops an overflow to Infinity (e^10 strides is far outside any image).
      box.push(tf.reshape(tf.exp(tf.minimum(tf.mul(this.boxPred.apply(r), this.scales[i]!), 10)), [b, h * w, 4]));
      ctr.push(tf.reshape(this.centerness.apply(r), [b, h * w]));
    });
    return {
      classLogits: tf.concat(cls, 1),
      ltrb: tf.concat(box, 1),
      centernessLogits: tf.concat(ctr, 1),
      mapSizes: pyramid.map((p) => [p.shape[1], p.shape[2]] as [number, number]),
      pyramid,
    };
  }
}
