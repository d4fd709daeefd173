/**
 * The DETR detector on top of a backbone feature map (facebookresearch/detr@29901c5, models/detr.py `DETR` and
 * `MLP`, with the position encoding that models/backbone.py `Joiner` adds): everything of the official model but
 * the backbone itself, under the official names (`transformer.*`, `class_embed`, `bbox_embed.layers.{0,1,2}`,
 * `query_embed.weight`, `input_proj`).
 *
 *   h = Transformer(input_proj(f), mask, query_embed, PositionEmbeddingSine(mask))      [L, B, Q, D]
 *   logits = class_embed(h)  [L, B, Q, C + 1],   boxes = sigmoid(bbox_embed(h))  [L, B, Q, 4] (cx, cy, w, h)
 * The last layer is the prediction; with `auxLoss` the first L − 1 are `auxOutputs` for the criterion.
 *
 * Shape legend: B images, H×W feature map of Cb backbone channels, D hidden width, Q queries, C classes.
 */
import * as tf from '@tensorflow/tfjs';
import { Conv2d, Linear } from '../layers.js';
import { relu } from '../native.js';
import { Initializer, type ParamScope } from '../params.js';
import type { DropoutContext } from './attention.js';
import type { DetrOutputs } from './criterion.js';
import { positionEmbeddingSine } from './position_encoding.js';
import { DetrTransformer, type DetrTransformerConfig } from './transformer.js';

/** DETR's `MLP` (the box head): Linear layers `layers.{i}` with ReLU between them. */
export class DetrMlp {
  readonly layers: Linear[] = [];
  constructor(scope: ParamScope, init: Initializer, inputDim: number, hiddenDim: number, outputDim: number, numLayers: number) {
    const dims = [inputDim, ...new Array<number>(numLayers - 1).fill(hiddenDim), outputDim];
    for (let i = 0; i < numLayers; i++) this.layers.push(new Linear(scope.child('layers').child(i), init, dims[i]!, dims[i + 1]!));
  }

  apply(x: tf.Tensor): tf.Tensor {
    let h = x;
    this.layers.forEach((layer, i) => (h = i < this.layers.length - 1 ? relu(layer.apply(h)) : layer.apply(h)));
    return h;
  }
}

export interface DetrHeadConfig {
  /** Cb, the backbone's output channels (ResNet-50: 2048). */
  backboneChannels: number;
  /** C, object classes (the no-object logit is added). */
  numClasses: number;
  /** Q, num_queries (DETR main.py: 100). */
  numQueries: number;
  /** aux_loss (main.py: on): return the earlier decoder layers' predictions. */
  auxLoss: boolean;
  transformer: DetrTransformerConfig;
}

export interface DetrHeadOutput extends DetrOutputs {
  /** The decoder outputs [L, B, Q, D] (UP-DETR's feature reconstruction reads them). */
  hs: tf.Tensor4D;
}

export class DetrHead {
  readonly transformer: DetrTransformer;
  readonly classEmbed: Linear;
  readonly bboxEmbed: DetrMlp;
  readonly queryEmbed: tf.Variable;
  readonly inputProj: Conv2d;

  constructor(
    scope: ParamScope,
    readonly config: DetrHeadConfig,
    seed: number | string = 0,
  ) {
    const d = config.transformer.dModel;
    if (d % 2 !== 0) throw new Error(`DetrHead: hidden width ${d} must be even (half of it encodes y, half x)`);
    this.transformer = new DetrTransformer(scope.child('transformer'), config.transformer, seed);
    const init = new Initializer(`detr-head:${scope.prefix}:${seed}`);
    this.classEmbed = new Linear(scope.child('class_embed'), init, d, config.numClasses + 1);
    this.bboxEmbed = new DetrMlp(scope.child('bbox_embed'), init, d, d, 4, 3);
    // nn.Embedding: N(0, 1).
    this.queryEmbed = scope.child('query_embed').add('weight', init.normal([config.numQueries, d], 1), { layout: 'same', role: 'token' });
    this.inputProj = new Conv2d(scope.child('input_proj'), init, { inChannels: config.backboneChannels, outChannels: d, kernelSize: 1, padding: 0, bias: true, init: 'torch_default' });
  }

  /**
   * features [B, H, W, Cb] (the backbone's last map), mask [B, H, W] bool (true = padding, the image mask brought to
   * this size with `maskToFeatureSize`). `queries` replaces the shared object queries (UP-DETR: per-image
   * `query_embed + patch features`, [B, Q, D]) and `decoderMask` is the decoder self-attention mask (UP-DETR's groups).
   */
  apply(features: tf.Tensor4D, mask: tf.Tensor3D, ctx: DropoutContext, options: { queries?: tf.Tensor; decoderMask?: tf.Tensor } = {}): DetrHeadOutput {
    const d = this.config.transformer.dModel;
    const pos = positionEmbeddingSine(mask, { numPosFeats: d / 2, normalize: true });
    const { hs } = this.transformer.apply(this.inputProj.apply(features), mask, options.queries ?? this.queryEmbed, pos, ctx, options.decoderMask);
    const logits = this.classEmbed.apply(hs) as tf.Tensor4D;
    const boxes = tf.sigmoid(this.bboxEmbed.apply(hs)) as tf.Tensor4D;
    const layers = hs.shape[0];
    const at = (t: tf.Tensor4D, l: number): tf.Tensor3D => tf.squeeze(tf.slice(t, [l, 0, 0, 0], [1, -1, -1, -1]), [0]) as tf.Tensor3D;
    const out: DetrHeadOutput = { predLogits: at(logits, layers - 1), predBoxes: at(boxes, layers - 1), hs };
    if (this.config.auxLoss) out.auxOutputs = Array.from({ length: layers - 1 }, (_, l) => ({ predLogits: at(logits, l), predBoxes: at(boxes, l) }));
    return out;
  }
}

/**
 * The padding mask at a feature map's size, as the official Backbone does it:
 * `F.interpolate(mask[None].float(), size=(h, w)).to(torch.bool)[0]` (nearest: source index ⌊i · H / h⌋).
 * mask [B, H, W] bool → [B, h, w] bool.
 */
export function maskToFeatureSize(mask: tf.Tensor3D, h: number, w: number): tf.Tensor3D {
  const [, sh, sw] = mask.shape;
  const pick = (n: number, src: number): number[] => Array.from({ length: n }, (_, i) => Math.min(Math.floor(i * (src / n)), src - 1));
  return tf.tidy(() => tf.gather(tf.gather(mask, tf.tensor1d(pick(h, sh), 'int32'), 1), tf.tensor1d(pick(w, sw), 'int32'), 2) as tf.Tensor3D);
}
