import * as tf from '@tensorflow/tfjs';
import { BatchNorm, Conv2d, Linear, maxPool2d, type ForwardOptions } from './layers.js';
import { relu } from './native.js';
import { Initializer, ParamStore, type ParamScope } from './params.js';

/**
 * ResNet with torchvision's module tree, so every tensor has its torchvision state_dict name
 * (`conv1.weight`, `layer2.0.downsample.0.weight`, `layer4.1.bn2.running_var`, `fc.bias`).
 * Activations are NHWC inside.
 */
export interface ResNetConfig {
  /** BasicBlock (ResNet-18/34) or Bottleneck (ResNet-50/101, expansion 4). */
  block: 'basic' | 'bottleneck';
  /** Blocks per stage; 1 to 4 stages (torchvision: [2,2,2,2] for 18, [3,4,6,3] for 50). */
  layers: number[];
  /** Planes of the first stage, doubled at each later stage (torchvision: 64). */
  baseWidth: number;
  /**
   * 'imagenet': 7x7/2 conv + 3x3/2 maxpool (torchvision). 'cifar': 3x3/1 conv, no maxpool,
   * for 32-64 px inputs (the usual small-image variant; names stay `conv1`/`bn1`).
   */
  stem: 'imagenet' | 'cifar';
  /** Zero-init the last BN of each residual branch (torchvision `zero_init_residual`). */
  zeroInitResidual: boolean;
  /** Classes of the `fc` layer; 0 = backbone only (no `fc.*` tensors). */
  numClasses: number;
}

export const RESNET_PRESETS = {
  resnet18: { block: 'basic', layers: [2, 2, 2, 2], baseWidth: 64, stem: 'imagenet', zeroInitResidual: false, numClasses: 0 },
  resnet50: { block: 'bottleneck', layers: [3, 4, 6, 3], baseWidth: 64, stem: 'imagenet', zeroInitResidual: false, numClasses: 0 },
  /** CPU-sized: ResNet-18 topology at 1/4 width with the small-image stem (~0.7 M params). */
  'resnet18-w16-cifar': { block: 'basic', layers: [2, 2, 2, 2], baseWidth: 16, stem: 'cifar', zeroInitResidual: false, numClasses: 0 },
  /** Smallest useful model for tests: one BasicBlock per stage, width 8 (~0.08 M params). */
  'resnet-tiny': { block: 'basic', layers: [1, 1, 1, 1], baseWidth: 8, stem: 'cifar', zeroInitResidual: false, numClasses: 0 },
} as const satisfies Record<string, ResNetConfig>;

export type ResNetPreset = keyof typeof RESNET_PRESETS;

export interface ResNetOutput {
  /** Output of each stage (C2..C5 for a 4-stage net), NHWC. */
  stages: tf.Tensor4D[];
  /** The last stage's map (C5): what dense methods (DenseCL) use. */
  dense: tf.Tensor4D;
  /** Global average pool of `dense`: [B, C]. */
  pooled: tf.Tensor2D;
  /** `fc(pooled)` when numClasses > 0. */
  logits?: tf.Tensor2D;
}

interface Block {
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D;
}

class Downsample {
  readonly conv: Conv2d;
  readonly bn: BatchNorm;
  constructor(scope: ParamScope, init: Initializer, inC: number, outC: number, stride: number) {
    // torchvision: nn.Sequential(conv1x1, norm) => names downsample.0.* and downsample.1.*
    this.conv = new Conv2d(scope.child(0), init, { inChannels: inC, outChannels: outC, kernelSize: 1, stride, padding: 0 });
    this.bn = new BatchNorm(scope.child(1), outC);
  }
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D {
    return this.bn.apply(this.conv.apply(x), opts);
  }
}

class BasicBlock implements Block {
  static readonly expansion = 1;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm;
  readonly downsample: Downsample | null;
  constructor(scope: ParamScope, init: Initializer, inC: number, planes: number, stride: number, zeroInitResidual: boolean) {
    this.conv1 = new Conv2d(scope.child('conv1'), init, { inChannels: inC, outChannels: planes, kernelSize: 3, stride });
    this.bn1 = new BatchNorm(scope.child('bn1'), planes);
    this.conv2 = new Conv2d(scope.child('conv2'), init, { inChannels: planes, outChannels: planes, kernelSize: 3 });
    this.bn2 = new BatchNorm(scope.child('bn2'), planes, { zeroInitWeight: zeroInitResidual });
    this.downsample = stride !== 1 || inC !== planes ? new Downsample(scope.child('downsample'), init, inC, planes, stride) : null;
  }
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D {
    let out = relu(this.bn1.apply(this.conv1.apply(x), opts));
    out = this.bn2.apply(this.conv2.apply(out), opts);
    const identity = this.downsample ? this.downsample.apply(x, opts) : x;
    return relu(tf.add(out, identity)) as tf.Tensor4D;
  }
}

class Bottleneck implements Block {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm;
  readonly downsample: Downsample | null;
  constructor(scope: ParamScope, init: Initializer, inC: number, planes: number, stride: number, zeroInitResidual: boolean) {
    const out = planes * Bottleneck.expansion;
    // torchvision (ResNet v1.5) puts the stride on the 3x3 conv, not the first 1x1.
    this.conv1 = new Conv2d(scope.child('conv1'), init, { inChannels: inC, outChannels: planes, kernelSize: 1, padding: 0 });
    this.bn1 = new BatchNorm(scope.child('bn1'), planes);
    this.conv2 = new Conv2d(scope.child('conv2'), init, { inChannels: planes, outChannels: planes, kernelSize: 3, stride });
    this.bn2 = new BatchNorm(scope.child('bn2'), planes);
    this.conv3 = new Conv2d(scope.child('conv3'), init, { inChannels: planes, outChannels: out, kernelSize: 1, padding: 0 });
    this.bn3 = new BatchNorm(scope.child('bn3'), out, { zeroInitWeight: zeroInitResidual });
    this.downsample = stride !== 1 || inC !== out ? new Downsample(scope.child('downsample'), init, inC, out, stride) : null;
  }
  apply(x: tf.Tensor4D, opts: ForwardOptions): tf.Tensor4D {
    let out = relu(this.bn1.apply(this.conv1.apply(x), opts));
    out = relu(this.bn2.apply(this.conv2.apply(out), opts));
    out = this.bn3.apply(this.conv3.apply(out), opts);
    const identity = this.downsample ? this.downsample.apply(x, opts) : x;
    return relu(tf.add(out, identity)) as tf.Tensor4D;
  }
}

export class ResNet {
  readonly params: ParamStore;
  readonly config: ResNetConfig;
  /** Channels of each stage output (C2..C5). */
  readonly stageChannels: number[];
  /** Channels of `dense` / `pooled` (2048 for ResNet-50, 512 for ResNet-18). */
  readonly outChannels: number;
  /** Total stride of `dense` w.r.t. the input (32 for the imagenet stem with 4 stages). */
  readonly outputStride: number;

  private readonly conv1: Conv2d;
  private readonly bn1: BatchNorm;
  private readonly stages: Block[][] = [];
  private readonly fc: Linear | null;

  constructor(config: ResNetConfig, seed: number | string = 0, params = new ParamStore(), prefix = '') {
    validateResNetConfig(config);
    this.config = config;
    this.params = params;
    const init = new Initializer(seed);
    const root = params.scope(prefix);
    const imagenetStem = config.stem === 'imagenet';
    this.conv1 = new Conv2d(root.child('conv1'), init, {
      inChannels: 3,
      outChannels: config.baseWidth,
      kernelSize: imagenetStem ? 7 : 3,
      stride: imagenetStem ? 2 : 1,
    });
    this.bn1 = new BatchNorm(root.child('bn1'), config.baseWidth);
    const BlockClass = config.block === 'basic' ? BasicBlock : Bottleneck;
    let inC = config.baseWidth;
    let stride = imagenetStem ? 4 : 1;
    this.stageChannels = [];
    config.layers.forEach((count, s) => {
      const planes = config.baseWidth * 2 ** s;
      const blocks: Block[] = [];
      for (let b = 0; b < count; b++) {
        const blockStride = b === 0 && s > 0 ? 2 : 1;
        blocks.push(new BlockClass(root.child(`layer${s + 1}`).child(b), init, inC, planes, blockStride, config.zeroInitResidual));
        inC = planes * BlockClass.expansion;
      }
      if (s > 0) stride *= 2;
      this.stages.push(blocks);
      this.stageChannels.push(inC);
    });
    this.outChannels = inC;
    this.outputStride = stride;
    this.fc = config.numClasses > 0 ? new Linear(root.child('fc'), init, inC, config.numClasses) : null;
  }

  static preset(name: ResNetPreset, overrides: Partial<ResNetConfig> = {}, seed: number | string = 0): ResNet {
    const base = RESNET_PRESETS[name];
    if (!base) throw new Error(`unknown ResNet preset '${String(name)}' (known: ${Object.keys(RESNET_PRESETS).join(', ')})`);
    return new ResNet({ ...base, layers: [...base.layers], ...overrides }, seed);
  }

  /** Forward on NHWC float input. Call inside tf.tidy / tf.variableGrads. */
  apply(x: tf.Tensor4D, opts: ForwardOptions): ResNetOutput {
    if (x.rank !== 4 || x.shape[3] !== 3) throw new Error(`ResNet expects [B, H, W, 3] NHWC input, got [${x.shape.join(', ')}]`);
    let h = relu(this.bn1.apply(this.conv1.apply(x), opts));
    if (this.config.stem === 'imagenet') h = maxPool2d(h, 3, 2, 1);
    const stageOutputs: tf.Tensor4D[] = [];
    for (const blocks of this.stages) {
      for (const block of blocks) h = block.apply(h, opts);
      stageOutputs.push(h);
    }
    const pooled = tf.mean(h, [1, 2]) as tf.Tensor2D;
    const out: ResNetOutput = { stages: stageOutputs, dense: h, pooled };
    if (this.fc) out.logits = this.fc.apply(pooled) as tf.Tensor2D;
    return out;
  }

  dispose(): void {
    this.params.dispose();
  }
}

function validateResNetConfig(c: ResNetConfig): void {
  if (c.block !== 'basic' && c.block !== 'bottleneck') throw new Error(`resnet.block: expected 'basic' or 'bottleneck', got '${String(c.block)}'`);
  if (!Array.isArray(c.layers) || c.layers.length < 1 || c.layers.length > 4 || c.layers.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error(`resnet.layers: expected 1-4 positive integers, got ${JSON.stringify(c.layers)}`);
  }
  if (!Number.isInteger(c.baseWidth) || c.baseWidth < 1) throw new Error(`resnet.baseWidth: expected a positive integer, got ${c.baseWidth}`);
  if (c.stem !== 'imagenet' && c.stem !== 'cifar') throw new Error(`resnet.stem: expected 'imagenet' or 'cifar', got '${String(c.stem)}'`);
  if (!Number.isInteger(c.numClasses) || c.numClasses < 0) throw new Error(`resnet.numClasses: expected an integer >= 0, got ${c.numClasses}`);
}
