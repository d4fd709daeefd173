/**
 * ViTDet's simple feature pyramid (Li, Mao, Girshick, He, "Exploring Plain Vision Transformer
 * Backbones for Object Detection", ECCV 2022, §3 and Fig. 2c; detectron2
 * modeling/backbone/vit.py `SimpleFeaturePyramid`): a plain ViT has one map, of stride p (the
 * patch size); the pyramid is built from that last map alone, with one branch per scale:
 *
 *   scale 4    ConvTranspose2d(D, D/2, 2, stride 2) -> LN -> GELU -> ConvTranspose2d(D/2, D/4, 2, stride 2)
 *   scale 2    ConvTranspose2d(D, D/2, 2, stride 2)
 *   scale 1    identity
 *   scale 1/2  MaxPool2d(2, stride 2)
 *
 * each followed in ViTDet by conv1x1 + LN and conv3x3 + LN to the pyramid width, then a max-pool P6.
 *
 * Here the branches feed the same FCOS head as a ResNet's C3-C5 (detection/head.ts), so a ViT and a
 * ResNet are scored by one detector: the scales are 2, 1, 1/2 (strides p/2, p, 2p: for p = 16 the
 * strides 8, 16, 32 of FCOS's P3-P5; ViTDet's scale-4 map is Mask R-CNN's P2, which FCOS does not
 * use), and the per-level conv1x1 / conv3x3 are the head's pyramid convs (torchvision FPN's lateral
 * and output convs: no LayerNorm, and a top-down sum ViTDet drops; its Table 1 finds FPN variants
 * with a top-down path no better than the simple pyramid). No P6/P7, as on the ResNet path.
 * Parameters are named as detectron2's (`simfp_{log2 stride}.0.weight`, PyTorch ConvTranspose2d
 * layout [in, out, 2, 2]) and initialised as PyTorch's ConvTranspose2d default
 * (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = out * 2 * 2).
 */
import { tf } from '../../../core/tf.js';
import { Initializer, ParamStore, type ParamScope } from '../../engine/params.js';

/** The scales this detector takes from the ViT map (see the file comment). */
export const SIMPLE_PYRAMID_SCALES = [2, 1, 0.5] as const;

/** ConvTranspose2d(in, out, kernel 2, stride 2) as one matMul: no two outputs share an input pixel. */
class Deconv2x2 {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly inChannels: number,
    readonly outChannels: number,
  ) {
    const bound = 1 / Math.sqrt(outChannels * 4);
    this.weight = scope.add('weight', init.uniform([inChannels, outChannels, 2, 2], bound), { layout: 'same', role: 'weight' });
    this.bias = scope.add('bias', init.uniform([outChannels], bound), { layout: 'same', role: 'bias' });
  }
  /** [B, h, w, in] -> [B, 2h, 2w, out]: out[2i + di, 2j + dj, o] = sum_c x[i, j, c] W[c, o, di, dj] + b[o]. */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    const [b, h, w, c] = x.shape;
    const o = this.outChannels;
    const y = tf.matMul(tf.reshape(x, [b * h * w, c]), tf.reshape(this.weight, [c, o * 4]));
    const blocks = tf.transpose(tf.reshape(y, [b, h, w, o, 2, 2]), [0, 1, 4, 2, 5, 3]); // [B, h, di, w, dj, o]
    return tf.add(tf.reshape(blocks, [b, 2 * h, 2 * w, o]), this.bias) as tf.Tensor4D;
  }
}

export class SimpleFeaturePyramid {
  readonly params = new ParamStore();
  /** Channels of each output level, finest first. */
  readonly outChannels: number[];
  private readonly up: Deconv2x2;

  constructor(
    readonly dim: number,
    /** Stride of the input map (the ViT's patch size), for the detectron2-style names. */
    readonly stride: number,
    seed: number | string,
  ) {
    if (dim < 2) throw new Error(`SimpleFeaturePyramid: a ${dim}-channel map cannot be halved`);
    const init = new Initializer(`simple-pyramid-${seed}`);
    const stage = Math.round(Math.log2(stride / 2));
    this.up = new Deconv2x2(this.params.scope(`simfp_${stage}`).child(0), init, dim, Math.floor(dim / 2));
    this.outChannels = [Math.floor(dim / 2), dim, dim];
  }

  /** The last ViT map [B, g, g, D] -> levels at scales 2, 1, 1/2 (finest first). */
  apply(x: tf.Tensor4D): tf.Tensor4D[] {
    return [this.up.apply(x), x, tf.maxPool(x, 2, 2, 'valid')];
  }
}
