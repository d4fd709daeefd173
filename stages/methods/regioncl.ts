/**
 * RegionCL-M — "RegionCL: Exploring Contrastive Region Pairs for Self-Supervised Representation Learning", Xu, Zhang,
 * Zhang, Tao, ECCV 2022, https://arxiv.org/abs/2111.12309 (the MoCo v2 variant; only its code is released).
 * Authors' code: Annbless/RegionCL@61bbcab `openselfsup/models/RegionCLM.py` (RegionSwapping, forward_train),
 * `openselfsup/models/necks.py` (RegionCLNonLinearNeckV1), `openselfsup/models/heads/contrastive_head.py`,
 * `configs/selfsup/regionCL-M/regionCLM-r50.py`.
 *
 * Region swapping (query view only): with partner π(i) = the reversed batch order (self-inverse) and one box R aligned
 * to the C5 grid, the composite x̃_i = x_i outside R and x_π(i) inside R. On its C5 map f̃ = f_θ(x̃):
 *
 *   c_i = normalize(g_θ(mean_{s∉R} f̃_i,s))      canvas of composite i (image i's content)
 *   p_i = normalize(g_θ(mean_{s∈R} f̃_π(i),s))   paste from image i, which sits in composite π(i)
 *
 * Loss:  L = L_ins + L_reg
 *   L_ins = MoCo v2's InfoNCE of q = normalize(g_θ(avgpool f_θ(x_i))) against k_i and the queue, τ (see mocov2.ts)
 *   L_reg = −1/(2B) Σ_i [ log( e^{c_i·k_i/τ'} / (e^{c_i·k_i/τ'} + e^{c_i·sg(p_π(i))/τ'} + Σ_j e^{c_i·queue_j/τ'}) )
 *                       + log( e^{p_i·k_i/τ'} / (e^{p_i·k_i/τ'} + e^{p_i·sg(c_π(i))/τ'} + Σ_j e^{p_i·queue_j/τ'}) ) ]
 * where p_π(i) is the paste inside composite i and c_π(i) the canvas that p_i sits in (the one intra-composite
 * negative, detached: sg), k = normalize(g_ξ(avgpool f_ξ(view1))) from the momentum encoder, τ = τ' = 0.2.
 *
 * Shapes: B batch, H×W view, h×w last feature map (C5), s = H/h stride, C backbone channels, D embedding, K queue length.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { BadInputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import { VIEW_PRESETS } from '../data/augment.js';
import { paramsComponent, queuesComponent } from '../engine/checkpoint.js';
import { Initializer, type ParamStore } from '../engine/params.js';
import { MemoryQueue } from '../engine/queue.js';
import { defineMethod, type BackboneFactory, type MethodBatch, type MethodInstance, type StepContext, type StepResult } from './shared/contract.js';
import { enqueueKeys, infoNce, l2Normalize, queueInfoNce } from './shared/contrast.js';
import { GlobalMlpHead, reinitialize } from './shared/heads.js';
import { buildEncoderPair, encodeShuffled, momentumContrastArgs, momentumStep, validateMomentumContrast, type Encoder, type MomentumContrastArgs } from './shared/momentum-encoder.js';

/** RegionCL-M's arguments: MoCo v2's plus the region-swapping box (configs/selfsup/regionCL-M/regionCLM-r50.py). */
export const regionclArgs = momentumContrastArgs.extend({
  regionTemperature: z
    .number()
    .gt(1e-4)
    .default(0.2)
    .describe('τ\' of the region InfoNCE (`head2`, which the released code uses but never builds; taken as a second ContrastiveHead(T=0.2))'),
  boxCellsMin: z.number().int().min(1).default(3).describe('smallest box side in C5 cells on the paper\'s 7-cell grid (`cutMixLower=3`: 96 px at stride 32)'),
  boxCellsMax: z.number().int().min(1).default(5).describe('largest box side in C5 cells on the paper\'s grid (`cutMixUpper=6`, exclusive in torch.randint: 160 px)'),
  boxReferenceGrid: z
    .number()
    .int()
    .min(2)
    .default(7)
    .describe('C5 cells per side the box range refers to (224 px / 32); on an h-cell grid the range is scaled to round(min·h/7)..round(max·h/7)'),
  boxClip: z
    .enum(['official', 'aligned'])
    .default('official')
    .describe('`official`: start clipped to W−1−size px as RegionSwapping does (a clipped box is swapped 1 px off the grid while the pooled cells are floor(start/s): the two disagree by a cell); `aligned`: clipped to W−size, swap and pooling agree'),
});
export type RegionCLArgs = MomentumContrastArgs & {
  hiddenDim: number;
  regionTemperature: number;
  boxCellsMin: number;
  boxCellsMax: number;
  boxReferenceGrid: number;
  boxClip: 'official' | 'aligned';
};

// ------------------------------------------------------------------------------------------------
// Region swapping (RegionSwapping in RegionCLM.py)
// ------------------------------------------------------------------------------------------------

/** An axis-aligned rectangle [x0, x0+w) × [y0, y0+h). */
export interface Rect {
  x0: number;
  y0: number;
  w: number;
  h: number;
}

/** The swap box of one composite: the pixels replaced by the partner's, and the C5 cells pooled as "paste". */
export interface RegionBox {
  pixel: Rect;
  cells: Rect;
}

/** A box given in cells, swapped exactly on those cells at stride `stride` (the `aligned` rule; tests inject these). */
export function alignedBox(cells: Rect, stride: number): RegionBox {
  return { cells: { ...cells }, pixel: { x0: cells.x0 * stride, y0: cells.y0 * stride, w: cells.w * stride, h: cells.h * stride } };
}

/** torch.round: half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The box side range [lo, hi] in cells on an `grid`-cell C5 map: the paper's 3–5 of 7 cells, scaled. */
export function boxCellRange(args: Pick<RegionCLArgs, 'boxCellsMin' | 'boxCellsMax' | 'boxReferenceGrid'>, grid: number): [number, number] {
  if (grid < 2) throw new BadInputError(`RegionCL needs a C5 map of at least 2×2 cells to swap a region, got ${grid}; use a larger imageSize`, 'pretrain.imageSize');
  const scale = (cells: number) => Math.min(grid - 1, Math.max(1, Math.round((cells * grid) / args.boxReferenceGrid)));
  const lo = scale(args.boxCellsMin);
  return [lo, Math.max(lo, scale(args.boxCellsMax))];
}

/**
 * One box, drawn as RegionSwapping draws it (in its order: width, height, x start, y start): side = s·randint(lo, hi],
 * start = round(randint(0, W)/s)·s clipped to W−1−side (`official`) or W−side (`aligned`); the pooled cells are
 * floor(start/s) (`randStartW.long()` of the pixel start divided by 32).
 */
export function sampleRegionBox(rng: Rng, sizes: { height: number; width: number; stride: number; cellRange: [number, number] }, clip: 'official' | 'aligned'): RegionBox {
  const { height, width, stride, cellRange } = sizes;
  const [lo, hi] = cellRange;
  const wCells = rng.int(lo, hi + 1);
  const hCells = rng.int(lo, hi + 1);
  const margin = clip === 'official' ? 1 : 0;
  const start = (extent: number, side: number) => Math.max(0, Math.min(roundHalfEven(rng.int(0, extent) / stride) * stride, extent - margin - side));
  const x0 = start(width, wCells * stride);
  const y0 = start(height, hCells * stride);
  return {
    pixel: { x0, y0, w: wCells * stride, h: hCells * stride },
    cells: { x0: Math.floor(x0 / stride), y0: Math.floor(y0 / stride), w: wCells, h: hCells },
  };
}

/**
 * π: the reversed order within each of `groups` consecutive groups of B/G (`arange(B−1, −1, −1)` on each GPU's own
 * batch; with one group, the reversed batch). Self-inverse.
 */
export function partnerIndex(batch: number, groups: number): number[] {
  const n = batch / groups;
  return Array.from({ length: batch }, (_, i) => Math.floor(i / n) * n + (n - 1 - (i % n)));
}

/** [B, H, W, 1] indicator of each sample's rectangle. */
function rectMask(rects: Rect[], height: number, width: number): tf.Tensor4D {
  return tf.tidy(() => {
    const rows = new Float32Array(rects.length * height);
    const cols = new Float32Array(rects.length * width);
    rects.forEach((r, b) => {
      for (let y = r.y0; y < Math.min(height, r.y0 + r.h); y++) rows[b * height + y] = 1;
      for (let x = r.x0; x < Math.min(width, r.x0 + r.w); x++) cols[b * width + x] = 1;
    });
    return tf.mul(tf.tensor4d(rows, [rects.length, height, 1, 1]), tf.tensor4d(cols, [rects.length, 1, width, 1])) as tf.Tensor4D;
  });
}

/**
 * x̃_i = x_i outside box_i.pixel, x_π(i) inside (`img_mix[..., box] = img[randperm, ..., box]`): images [B, H, W, C] →
 * [B, H, W, C]. Images are anything on the pixel grid of the boxes (feature maps in the parity test, with stride 1).
 */
export function regionSwap(images: tf.Tensor4D, boxes: RegionBox[], partner: number[]): tf.Tensor4D {
  return tf.tidy(() => {
    const [, height, width] = images.shape;
    const m = rectMask(boxes.map((b) => b.pixel), height, width); // [B, H, W, 1]
    const partnerImages = tf.gather(images, tf.tensor1d(partner, 'int32')); // [B, H, W, C]
    return tf.add(tf.mul(images, tf.sub(1, m)), tf.mul(partnerImages, m)) as tf.Tensor4D; // exact for m ∈ {0, 1}
  });
}

// ------------------------------------------------------------------------------------------------
// Embeddings (RegionCLNonLinearNeckV1) and loss (forward_train)
// ------------------------------------------------------------------------------------------------

/** Identity forward, zero gradient (`.detach()`). */
const detach = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const x = args[0] as tf.Tensor;
  return { value: tf.clone(x), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
}) as <T extends tf.Tensor>(x: T) => T;

/** The four region embeddings, L2-normalised, [B, D] each (names as in forward_train). */
export interface RegionEmbeddings {
  /** c_i: canvas of composite i (`q_canvas`). */
  canvas: tf.Tensor2D;
  /** c_π(i): the canvas of composite π(i), which hosts p_i (`q_canvas_shuffle`). */
  canvasShuffle: tf.Tensor2D;
  /** p_i: the paste cut from image i, which sits in composite π(i) (`q_paste`). */
  paste: tf.Tensor2D;
  /** p_π(i): the paste inside composite i (`q_paste_shuffle`). */
  pasteShuffle: tf.Tensor2D;
}

/**
 * Canvas = mean of the C5 cells outside the box, paste = mean of the cells inside (the neck's mask on the feature map,
 * whole cells only), both through the one MLP in a single 2B-row batch, then normalised. swappedMap [B, h, w, C].
 */
export function regionEmbed(head: GlobalMlpHead, swappedMap: tf.Tensor4D, boxes: RegionBox[], partner: number[]): RegionEmbeddings {
  return tf.tidy(() => {
    const [b, h, w] = swappedMap.shape;
    const m = rectMask(boxes.map((x) => x.cells), h, w); // [B, h, w, 1]
    const outside = tf.sub(1, m);
    const canvasPooled = tf.div(tf.sum(tf.mul(swappedMap, outside), [1, 2]), tf.sum(outside, [1, 2])) as tf.Tensor2D; // [B, C]
    const pastePooled = tf.div(tf.sum(tf.mul(swappedMap, m), [1, 2]), tf.sum(m, [1, 2])) as tf.Tensor2D; // [B, C]
    const z = head.applyPooled(tf.concat([canvasPooled, pastePooled], 0)); // [2B, D]
    const canvas = l2Normalize(tf.slice(z, [0, 0], [b, -1]), 1); // [B, D]
    const pasteShuffle = l2Normalize(tf.slice(z, [b, 0], [b, -1]), 1); // [B, D], in composite order
    const pi = tf.tensor1d(partner, 'int32');
    return { canvas, canvasShuffle: tf.gather(canvas, pi), paste: tf.gather(pasteShuffle, pi), pasteShuffle };
  });
}

export interface RegionCLLossParts {
  /** L_ins + L_reg */
  loss: tf.Scalar;
  /** L_ins (`loss_contra_instance`) */
  instance: tf.Scalar;
  /** L_reg (`loss_contra_region`) */
  region: tf.Scalar;
}

/**
 * Both InfoNCE terms from the two online C5 maps (plain query and composite) and the keys k [B, D]; queue [K, D].
 * Region rows are [canvas; paste] (2B), logits [positive, intra-composite negative, queue].
 */
export function regionclLoss(
  head: GlobalMlpHead,
  qMap: tf.Tensor4D,
  swappedMap: tf.Tensor4D,
  boxes: RegionBox[],
  partner: number[],
  k: tf.Tensor2D,
  queue: tf.Tensor2D,
  temperature: number,
  regionTemperature: number,
): RegionCLLossParts {
  return tf.tidy(() => {
    // instance: l_pos = q·k, l_neg = q·queue
    const q = l2Normalize(head.apply(qMap), 1); // [B, D]
    const instance = queueInfoNce(q, k, queue, temperature);
    // region: positives c_i·k_i and p_i·k_i
    const r = regionEmbed(head, swappedMap, boxes, partner);
    const dot = (a: tf.Tensor2D, b: tf.Tensor2D) => tf.sum(tf.mul(a, b), 1, true) as tf.Tensor2D; // [B, 1]
    const lPos = tf.concat([dot(r.canvas, k), dot(r.paste, k)], 0) as tf.Tensor2D; // [2B, 1]
    // negatives: the other half of the same composite (detached), then the queue
    const lNegCanvas = tf.concat([dot(r.canvas, detach(r.pasteShuffle)), tf.matMul(r.canvas, queue, false, true)], 1); // [B, 1+K]
    const lNegPaste = tf.concat([dot(r.paste, detach(r.canvasShuffle)), tf.matMul(r.paste, queue, false, true)], 1); // [B, 1+K]
    const region = infoNce(lPos, tf.concat([lNegCanvas, lNegPaste], 0) as tf.Tensor2D, regionTemperature); // over 2B rows
    return { loss: tf.add(instance, region) as tf.Scalar, instance, region };
  });
}

// ------------------------------------------------------------------------------------------------
// The method
// ------------------------------------------------------------------------------------------------

/** Overrides for tests: the boxes (one per sample) instead of drawing them. */
export interface RegionCLStepOverride {
  boxes?: RegionBox[];
}

export class RegionCL implements MethodInstance<RegionCLArgs> {
  readonly online: ParamStore;
  readonly momentumEncoder: ParamStore;
  readonly queues: { queue: MemoryQueue };
  readonly state;
  /** Online (query) encoder. */
  readonly q: Encoder<GlobalMlpHead>;
  /** Momentum (key) encoder. */
  readonly k: Encoder<GlobalMlpHead>;

  constructor(
    readonly args: RegionCLArgs,
    backboneFactory: BackboneFactory,
    seed: number,
  ) {
    const head = (store: ParamStore, prefix: string, c: number, s: number | string) => {
      const h = new GlobalMlpHead(store, prefix, c, args.hiddenDim, args.embedDim, s);
      // RegionCLM.init_weights: neck.init_weights(init_linear='kaiming') → every Linear kaiming-normal (fan_in, relu), bias 0.
      const init = new Initializer(`regioncl-neck:${prefix}:${s}`);
      for (const layer of ['0', '2']) {
        const weight = store.get(`${prefix}.mlp.${layer}.weight`);
        const [fanIn, fanOut] = weight.shape as [number, number]; // stored [in, out]
        reinitialize(weight, init.normal([fanIn, fanOut], Math.sqrt(2 / fanIn)));
        reinitialize(store.get(`${prefix}.mlp.${layer}.bias`), tf.zeros([fanOut]));
      }
      return h;
    };
    ({ q: this.q, k: this.k } = buildEncoderPair(backboneFactory, head, seed));
    this.online = this.q.store;
    this.momentumEncoder = this.k.store;
    this.queues = { queue: new MemoryQueue(args.queueSize, args.embedDim, seed, 'queue') };
    this.state = { momentum: paramsComponent(this.momentumEncoder), queues: queuesComponent([this.queues.queue]) };
  }

  /** One box per group of B/G (each emulated GPU swaps within its own batch), repeated for its samples. */
  drawBoxes(rng: Rng, batch: number, sizes: { height: number; width: number; stride: number; grid: number }): RegionBox[] {
    const groups = this.args.shuffleBnGroups;
    const cellRange = boxCellRange(this.args, sizes.grid);
    const perGroup = Array.from({ length: groups }, () => sampleRegionBox(rng, { ...sizes, cellRange }, this.args.boxClip));
    return Array.from({ length: batch }, (_, i) => perGroup[Math.floor(i / (batch / groups))]!);
  }

  /** Query (and its composite) from view 0, key from view 1, one direction (as forward_train). */
  step({ views: [view0, view1] }: MethodBatch, { rng, applyGradients }: StepContext, override: RegionCLStepOverride = {}): StepResult {
    const groups = this.args.shuffleBnGroups;
    const queue = this.queues.queue;
    const boxRng = rng.fork('regioncl-box'); // the box stream, independent of the shuffle-BN permutation
    return momentumStep<{ k: tf.Tensor2D }>(
      {
        online: this.online,
        momentumEncoder: this.momentumEncoder,
        momentum: this.args.momentum,
        encodeKeys: () => encodeShuffled(view1!, groups, rng, (x, opts) => ({ k: l2Normalize(this.k.head.apply(this.k.backbone.apply(x, opts)), 1) })),
        loss: ({ k }) => {
          const [b, height, width] = view0!.shape;
          // Two backbone passes, as forward_train: the plain query, then the composite (each with its own BN statistics).
          const qMap = this.q.backbone.apply(view0!, { training: true, bnGroups: groups }); // [B, h, w, C]
          const [, h, w] = qMap.shape;
          const stride = height / h; // from the shapes (FeatureBackbone.stride is not trusted)
          if (!Number.isInteger(stride) || width / w !== stride) {
            throw new BadInputError(`RegionCL needs a C5 grid that tiles the view: ${height}×${width} px over ${h}×${w} cells`, 'pretrain.imageSize');
          }
          const partner = partnerIndex(b, groups);
          const boxes = override.boxes ?? this.drawBoxes(boxRng, b, { height, width, stride, grid: Math.min(h, w) });
          const composite = regionSwap(view0!, boxes, partner); // [B, H, W, 3]
          const swappedMap = this.q.backbone.apply(composite, { training: true, bnGroups: groups }); // [B, h, w, C]
          const parts = regionclLoss(this.q.head, qMap, swappedMap, boxes, partner, k, queue.buffer as tf.Tensor2D, this.args.temperature, this.args.regionTemperature);
          return { loss: parts.loss, parts: { instance: parts.instance, region: parts.region } };
        },
        afterStep: ({ k }) => enqueueKeys(queue, k),
      },
      applyGradients,
    );
  }

  dispose(): void {
    this.online.dispose();
    this.momentumEncoder.dispose();
    this.queues.queue.dispose();
  }
}

export const regioncl = defineMethod({
  name: 'regioncl',
  title: 'RegionCL-M: MoCo v2 plus canvas/paste contrast on region-swapped composites',
  paper: {
    citation: 'Xu, Zhang, Zhang, Tao. RegionCL: Exploring Contrastive Region Pairs for Self-Supervised Representation Learning. ECCV 2022',
    url: 'https://arxiv.org/abs/2111.12309',
  },
  code: { repo: 'Annbless/RegionCL', commit: '61bbcab' },
  args: regionclArgs,
  consumes: { views: VIEW_PRESETS.mocoV2, geometry: false },
  // regionCLM-r50.py: SGD lr 0.15 at batch 1024 (128×8) → 0.0375 at 256, momentum 0.9, wd 1e-4, cosine to 0, no warm-up.
  optimizer: { kind: 'sgd', baseLr: 0.0375, momentum: 0.9, weightDecay: 1e-4, warmupFraction: 0 },
  smallScale: {
    args: { queueSize: 1024, momentum: 0.99 },
    optimizer: { baseLr: 0.3 },
    why: 'as MoCo v2 (docs/EXPERIMENTS.md §1): at 0.999 the key encoder barely leaves its init in a few thousand steps; K scaled to ~1 epoch of synthetic-small; lr 0.3 @256',
  },
  claims: [{ metric: 'linear.top1', over: 'mocov2', paper: 'README (R50, IN-1k 200 ep): linear top-1 69.4 vs MoCo v2 67.5' }],
  validate: (args, sizes) => {
    validateMomentumContrast(args, sizes);
    if (args.boxCellsMin > args.boxCellsMax) throw new BadInputError(`boxCellsMin ${args.boxCellsMin} > boxCellsMax ${args.boxCellsMax}`, 'args.boxCellsMin');
    if (args.boxCellsMax >= args.boxReferenceGrid) throw new BadInputError(`a box of ${args.boxCellsMax} cells does not fit a ${args.boxReferenceGrid}-cell grid`, 'args.boxCellsMax');
  },
  create: ({ args, backbone, backboneChannels, seed }) => new RegionCL({ ...args, hiddenDim: args.hiddenDim ?? backboneChannels }, backbone, seed),
});
