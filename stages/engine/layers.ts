import * as tf from '@tensorflow/tfjs';
import { fusedBatchNormTrain, nativeKernelsAvailable } from './native.js';
import type { Initializer, ParamScope } from './params.js';

/**
 * Forward-pass switches shared by every module.
 * - `training`: BatchNorm uses batch statistics and updates its running statistics (PyTorch
 *   `model.train()`); otherwise it normalises with the running statistics (`model.eval()`).
 * - `bnGroups`: single-device substitute for MoCo's shuffle-BN / SyncBN-free multi-GPU BN. The
 *   batch is cut into this many equal groups and each group is normalised with its own
 *   statistics, as each GPU would with its own shard. Together with a batch permutation of the
 *   key views (see `shuffleBatch`) this prevents the intra-batch statistics leak that shuffle-BN
 *   exists to prevent. Default 1 = plain BatchNorm over the whole batch.
 */
export interface ForwardOptions {
  training: boolean;
  bnGroups?: number;
}

/** PyTorch nn.Conv2d defaults used by torchvision's ResNet: symmetric zero padding k//2 per side. */
export interface Conv2dArgs {
  inChannels: number;
  outChannels: number;
  kernelSize: number;
  stride?: number;
  /** Per-side padding; default kernelSize // 2 (PyTorch's, not TF's asymmetric 'same'). */
  padding?: number;
  bias?: boolean;
  /** 'kaiming_fan_out' = torchvision ResNet convs; 'kaiming_uniform_a1' = torchvision FPN convs. */
  init?: 'kaiming_fan_out' | 'kaiming_uniform_a1' | 'xavier_uniform' | 'torch_default';
}

/** A conv2d whose kernel is HWIO inside (tf.conv2d) and OIHW on export. NHWC activations. */
export class Conv2d {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable | null;
  readonly stride: number;
  readonly padding: number;

  constructor(scope: ParamScope, init: Initializer, args: Conv2dArgs) {
    const k = args.kernelSize;
    this.stride = args.stride ?? 1;
    this.padding = args.padding ?? Math.floor(k / 2);
    const shape = [k, k, args.inChannels, args.outChannels];
    const fanIn = args.inChannels * k * k;
    const fanOut = args.outChannels * k * k;
    let w: tf.Tensor;
    switch (args.init ?? 'kaiming_fan_out') {
      case 'kaiming_fan_out':
        // nn.init.kaiming_normal_(w, mode='fan_out', nonlinearity='relu'): std = sqrt(2 / fan_out).
        w = init.normal(shape, Math.sqrt(2 / fanOut));
        break;
      case 'kaiming_uniform_a1':
        // nn.init.kaiming_uniform_(w, a=1): gain 1, bound = sqrt(3 / fan_in).
        w = init.uniform(shape, Math.sqrt(3 / fanIn));
        break;
      case 'xavier_uniform':
        w = init.uniform(shape, Math.sqrt(6 / (fanIn + fanOut)));
        break;
      case 'torch_default':
        // What an nn.Conv2d that nobody re-initialises gets: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
        w = init.uniform(shape, 1 / Math.sqrt(fanIn));
        break;
    }
    this.weight = scope.add('weight', w, { layout: 'hwio', role: 'weight' });
    const biasValue = args.init === 'torch_default' ? init.uniform([args.outChannels], 1 / Math.sqrt(fanIn)) : tf.zeros([args.outChannels]);
    if (!args.bias) biasValue.dispose();
    this.bias = args.bias ? scope.add('bias', biasValue, { layout: 'same', role: 'bias' }) : null;
  }

  apply(x: tf.Tensor4D): tf.Tensor4D {
    const p = this.padding;
    const k = this.weight.shape[0]!;
    let y: tf.Tensor4D;
    if (k === 1 && p === 0) y = pointwiseConv(x, this.weight as tf.Tensor4D, this.stride);
    else if (p === 0) y = tf.conv2d(x, this.weight as tf.Tensor4D, this.stride, 'valid');
    else if (this.stride === 1 && k === 3 && p === 1 && x.shape[1] === 2 && x.shape[2] === 2 && nativeKernelsAvailable()) {
      y = conv3x3On2x2(x, this.weight as tf.Tensor4D);
    }
    // Stride 1, odd kernel, p = k//2: TF's 'same' pads (k-1)/2 per side, i.e. exactly PyTorch's.
    else if (this.stride === 1 && k % 2 === 1 && p === (k - 1) / 2) y = tf.conv2d(x, this.weight as tf.Tensor4D, 1, 'same');
    else {
      // Strided: TF's 'same' would pad bottom/right only. The native backend has no gradient for
      // explicit conv padding, so pad first (its gradient is a slice) and convolve 'valid'.
      const padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]);
      y = tf.conv2d(padded, this.weight as tf.Tensor4D, this.stride, 'valid');
    }
    return this.bias ? tf.add(y, this.bias) : y;
  }
}

/**
 * For each output position (i, j) of a 3x3 / stride 1 / pad 1 convolution of a 2x2 map, the kernel
 * tap that meets input position (a, b) is (a − i + 1, b − j + 1); listed in (i, j, a, b) order.
 */
const TAPS_3X3_ON_2X2: readonly number[] = [0, 1].flatMap((i) => [0, 1].flatMap((j) => [0, 1].flatMap((a) => [0, 1].map((b) => (a - i + 1) * 3 + (b - j + 1)))));

/**
 * A 3x3 / stride 1 / pad 1 convolution of a 2x2 feature map (ResNet's last stage at 64 px input) as
 * one batched matMul: y[:, i, j] = [x(0,0) x(0,1) x(1,0) x(1,1)] · [W(tap(i,j,a,b))] stacked over (a, b).
 *
 * Why: 5 of the 9 taps of every output fall on padding, and the native Conv2D and its two gradient
 * kernels are 3-4x slower per FLOP on a 2x2 map than on 4x4 (measured: 15-24 ms forward, 45-58 ms
 * forward+backward per [32,2,2,512]·[3,3,512,512] conv on 2 cores, vs 5 ms and 25 ms here); this form
 * computes only the 16 tap products that touch the image (268 instead of 604 MFLOP at 512 channels).
 * Same sums in a different order: results agree with Conv2D to float rounding (~2e-6 relative).
 */
export function conv3x3On2x2(x: tf.Tensor4D, kernel: tf.Tensor4D): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const [kh, kw, kc, out] = kernel.shape;
  if (h !== 2 || w !== 2 || kh !== 3 || kw !== 3 || kc !== c) throw new Error(`conv3x3On2x2: expected [N,2,2,C] and [3,3,C,O], got [${x.shape}] and [${kernel.shape}]`);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [xs, ks, save] = args as [tf.Tensor4D, tf.Tensor4D, tf.GradSaveFunc];
    const pixels = tf.reshape(xs, [1, n, 4 * c]); // [1, N, (a,b,c)], broadcast over (i,j)
    const indices = tf.tensor1d(TAPS_3X3_ON_2X2 as number[], 'int32');
    const blocks = tf.reshape(tf.gather(tf.reshape(ks, [9, c, out]), indices), [4, 4 * c, out]); // [(i,j), (a,b,c), O]
    indices.dispose();
    save([pixels, blocks]);
    const y = tf.matMul(tf.broadcastTo(pixels, [4, n, 4 * c]), blocks); // [(i,j), N, O]
    return {
      value: tf.transpose(tf.reshape(y, [2, 2, n, out]), [2, 0, 1, 3]) as tf.Tensor4D,
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [px, bl] = saved as [tf.Tensor3D, tf.Tensor3D];
        const dyBlocks = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [4, n, out]); // [(i,j), N, O]
        const dx = tf.reshape(tf.sum(tf.matMul(dyBlocks, bl, false, true), 0), [n, 2, 2, c]);
        // Gradient of each of the 16 blocks, then summed per kernel tap with plain adds: the
        // gather's own gradient (UnsortedSegmentSum) is a single-threaded scatter, ~7 ms here.
        const dBlocks = tf.reshape(tf.matMul(tf.broadcastTo(px, [4, n, 4 * c]), dyBlocks, true, false), [16, c, out]);
        const byTap: tf.Tensor[][] = Array.from({ length: 9 }, () => []);
        TAPS_3X3_ON_2X2.forEach((tap, block) => byTap[tap]!.push(tf.slice(dBlocks, [block, 0, 0], [1, c, out])));
        const dKernel = tf.reshape(tf.concat(byTap.map((parts) => (parts.length === 1 ? parts[0]! : tf.addN(parts))), 0), [3, 3, c, out]);
        return [dx, dKernel];
      },
    };
  });
  return op(x, kernel) as tf.Tensor4D;
}

/**
 * A 1x1 convolution as subsampling + matMul. Besides being the cheapest form, it avoids the
 * native Conv2DBackpropFilter kernel for 1x1/stride-2 convolutions, which corrupts the heap
 * (malloc "unaligned tcache chunk" / "invalid next size") for inputs of 64 px and more with
 * libtensorflow 2.21 + tfjs-node 4.22 (docs/ENGINE.md, "Known native-backend issue").
 */
export function pointwiseConv(x: tf.Tensor4D, kernel: tf.Tensor4D, stride: number): tf.Tensor4D {
  let input = x;
  if (stride > 1) {
    // Pad to a multiple of the stride (the padding rows are never picked: only index 0 of each
    // stride group is kept), then pick every stride-th row/column with reshape + slice.
    const [b, h, w, c] = x.shape;
    const ph = (stride - (h % stride)) % stride;
    const pw = (stride - (w % stride)) % stride;
    const padded = ph || pw ? tf.pad(x, [[0, 0], [0, ph], [0, pw], [0, 0]]) : x;
    const oh = (h + ph) / stride;
    const ow = (w + pw) / stride;
    const grouped = tf.reshape(padded, [b, oh, stride, ow, stride, c]);
    input = tf.reshape(tf.slice(grouped, [0, 0, 0, 0, 0, 0], [b, oh, 1, ow, 1, c]), [b, oh, ow, c]);
  }
  const [b, h, w, c] = input.shape;
  const out = kernel.shape[3];
  const y = tf.matMul(tf.reshape(input, [b * h * w, c]), tf.reshape(kernel, [c, out]));
  return tf.reshape(y, [b, h, w, out]);
}

/**
 * BatchNorm with PyTorch's conventions: eps 1e-5, momentum 0.1 meaning
 * running = 0.9 * running + 0.1 * batch, and the running variance updated with the
 * UNBIASED batch variance (n / (n - 1)) while normalisation uses the biased one.
 * Works on [N, C] and [N, H, W, C] (channels last).
 */
export class BatchNorm {
  readonly weight: tf.Variable | null;
  readonly bias: tf.Variable | null;
  readonly runningMean: tf.Variable;
  readonly runningVar: tf.Variable;
  readonly numBatchesTracked: tf.Variable;

  constructor(
    scope: ParamScope,
    readonly channels: number,
    options: { affine?: boolean; zeroInitWeight?: boolean; eps?: number; momentum?: number } = {},
  ) {
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    const affine = options.affine ?? true;
    this.weight = affine
      ? scope.add('weight', options.zeroInitWeight ? tf.zeros([channels]) : tf.ones([channels]), { layout: 'same', role: 'norm' })
      : null;
    this.bias = affine ? scope.add('bias', tf.zeros([channels]), { layout: 'same', role: 'norm' }) : null;
    this.runningMean = scope.add('running_mean', tf.zeros([channels]), { layout: 'same', role: 'buffer' });
    this.runningVar = scope.add('running_var', tf.ones([channels]), { layout: 'same', role: 'buffer' });
    // int64 in PyTorch; int32 here (tfjs has no int64), widened on export.
    this.numBatchesTracked = scope.add('num_batches_tracked', tf.scalar(0, 'int32'), { layout: 'same', role: 'buffer' });
  }

  readonly eps: number;
  readonly momentum: number;

  /**
   * Use TensorFlow's fused kernels when the native backend is active (default). Switching it off
   * forces the op-by-op path that the cpu/wasm backends take; tests compare the two.
   */
  static useFusedKernels = true;

  apply<T extends tf.Tensor>(x: T, opts: ForwardOptions): T {
    if (!opts.training) {
      // One fused kernel (FusedBatchNorm on the native backend) instead of five elementwise passes.
      return tf.batchNorm(x as tf.Tensor, this.runningMean, this.runningVar, this.bias ?? undefined, this.weight ?? undefined, this.eps) as T;
    }
    const groups = opts.bnGroups ?? 1;
    const n = x.shape[0]!;
    if (!Number.isInteger(groups) || groups < 1 || n % groups !== 0) throw new Error(`bnGroups=${groups} must divide the batch size ${n}`);
    if ((x.rank === 4 || x.rank === 2) && BatchNorm.useFusedKernels && nativeKernelsAvailable()) return this.applyFused(x, groups);
    const perGroup = n / groups;
    const grouped = tf.reshape(x, [groups, perGroup, ...x.shape.slice(1)]);
    const axes = Array.from({ length: grouped.rank - 2 }, (_, i) => i + 1); // all but group and channel
    const { mean, variance } = tf.moments(grouped, axes, true);
    const y = tf.reshape(this.normalize(grouped, mean, variance), x.shape) as T;
    this.updateRunningStats(mean, variance, x.size / this.channels / groups);
    return y;
  }

  /**
   * Same math through TensorFlow's fused kernels (see native.ts); [N, C] runs as [N, 1, 1, C].
   * Groups become extra channels: [G*m, H, W, C] -> [m, H, W, G*C] with the affine parameters
   * tiled G times, so one fused call normalises every group with its own statistics.
   */
  private applyFused<T extends tf.Tensor>(x: T, groups: number): T {
    const c = this.channels;
    const x4 = (x.rank === 4 ? x : tf.reshape(x, [x.shape[0]!, 1, 1, c])) as tf.Tensor4D;
    const [n, h, w] = x4.shape;
    const m = n / groups;
    const packed = groups === 1 ? x4 : (tf.reshape(tf.transpose(tf.reshape(x4, [groups, m, h, w, c]), [1, 2, 3, 0, 4]), [m, h, w, groups * c]) as tf.Tensor4D);
    const tileGroups = (v: tf.Tensor1D): tf.Tensor1D => (groups === 1 ? v : tf.tile(v, [groups]));
    const scale = tileGroups((this.weight ?? tf.ones([c])) as tf.Tensor1D);
    const offset = tileGroups((this.bias ?? tf.zeros([c])) as tf.Tensor1D);
    const { y, mean, unbiasedVariance } = fusedBatchNormTrain(packed, scale, offset, this.eps);
    // Per-group statistics [G*C] -> running stats take their mean over groups (as the op path does).
    this.updateRunningStats(mean, unbiasedVariance, 1);
    tf.dispose([mean, unbiasedVariance]);
    const unpacked = groups === 1 ? y : tf.reshape(tf.transpose(tf.reshape(y, [m, h, w, groups, c]), [3, 0, 1, 2, 4]), [n, h, w, c]);
    return (x.rank === 4 ? unpacked : tf.reshape(unpacked, x.shape)) as T;
  }

  private normalize(x: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor): tf.Tensor {
    const inv = tf.rsqrt(tf.add(variance, this.eps));
    const scale = this.weight ? tf.mul(inv, this.weight) : inv;
    const shifted = tf.mul(tf.sub(x, mean), scale);
    return this.bias ? tf.add(shifted, this.bias) : shifted;
  }

  /** `countPerGroup` turns biased variances into unbiased ones (pass 1 when already unbiased). */
  private updateRunningStats(mean: tf.Tensor, variance: tf.Tensor, countPerGroup: number): void {
    tf.tidy(() => {
      const m = this.momentum;
      // Statistics are not differentiated through: they only feed the running buffers.
      const batchMean = tf.reshape(tf.mean(tf.reshape(mean, [-1, this.channels]), 0), [this.channels]);
      const unbiased = countPerGroup > 1 ? countPerGroup / (countPerGroup - 1) : 1;
      const batchVar = tf.reshape(tf.mul(tf.mean(tf.reshape(variance, [-1, this.channels]), 0), unbiased), [this.channels]);
      this.runningMean.assign(tf.add(tf.mul(this.runningMean, 1 - m), tf.mul(batchMean, m)));
      this.runningVar.assign(tf.add(tf.mul(this.runningVar, 1 - m), tf.mul(batchVar, m)));
      this.numBatchesTracked.assign(tf.add(this.numBatchesTracked, tf.scalar(1, 'int32')));
    });
  }
}

/**
 * nn.Linear. Weight stored [in, out] (x @ W) and exported as PyTorch's [out, in].
 * Default init is PyTorch's: kaiming_uniform(a=sqrt(5)) => U(-1/sqrt(in), 1/sqrt(in)) for
 * weight and bias; 'xavier_uniform' with zero bias is the MAE/timm ViT convention.
 */
export class Linear {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable | null;

  constructor(
    scope: ParamScope,
    init: Initializer,
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: { bias?: boolean; init?: 'torch_default' | 'xavier_uniform' } = {},
  ) {
    const bound = 1 / Math.sqrt(inFeatures);
    const xavier = options.init === 'xavier_uniform';
    const w = xavier ? init.uniform([inFeatures, outFeatures], Math.sqrt(6 / (inFeatures + outFeatures))) : init.uniform([inFeatures, outFeatures], bound);
    this.weight = scope.add('weight', w, { layout: 'io', role: 'weight' });
    this.bias =
      options.bias === false
        ? null
        : scope.add('bias', xavier ? tf.zeros([outFeatures]) : init.uniform([outFeatures], bound), { layout: 'same', role: 'bias' });
  }

  /** Accepts [..., in]; leading dims are flattened around the matMul. */
  apply(x: tf.Tensor): tf.Tensor {
    const lead = x.shape.slice(0, -1);
    const flat = x.rank === 2 ? (x as tf.Tensor2D) : tf.reshape(x, [-1, this.inFeatures]) as tf.Tensor2D;
    let y: tf.Tensor = tf.matMul(flat, this.weight as tf.Tensor2D);
    if (this.bias) y = tf.add(y, this.bias);
    return x.rank === 2 ? y : tf.reshape(y, [...lead, this.outFeatures]);
  }
}

/** nn.LayerNorm over the last axis (MAE uses eps 1e-6). */
export class LayerNorm {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor(
    scope: ParamScope,
    readonly dim: number,
    readonly eps = 1e-6,
  ) {
    this.weight = scope.add('weight', tf.ones([dim]), { layout: 'same', role: 'norm' });
    this.bias = scope.add('bias', tf.zeros([dim]), { layout: 'same', role: 'norm' });
  }

  apply(x: tf.Tensor): tf.Tensor {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.eps))), this.weight), this.bias);
  }
}

/** PyTorch MaxPool2d(kernel, stride, padding) with -inf padding (TF's 'same' pads asymmetrically). */
export function maxPool2d(x: tf.Tensor4D, kernel: number, stride: number, padding: number): tf.Tensor4D {
  const padded = padding > 0 ? tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]], -Infinity) : x;
  return tf.maxPool(padded, kernel, stride, 'valid');
}

/**
 * A permutation of the batch and its inverse, for shuffle-BN style key encoding:
 * encode `gather(x, perm)` with `bnGroups > 1`, then `gather(keys, inverse)`.
 */
export function shuffleBatch(n: number, rng: { next(): number }): { perm: tf.Tensor1D; inverse: tf.Tensor1D } {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const inverse = new Array<number>(n);
  order.forEach((src, dst) => (inverse[src] = dst));
  return { perm: tf.tensor1d(order, 'int32'), inverse: tf.tensor1d(inverse, 'int32') };
}
