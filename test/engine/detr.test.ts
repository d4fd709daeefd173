/**
 * The DETR engine pieces (stages/engine/detr/) against facebookresearch/detr@29901c5 run under PyTorch 1.13
 * (test/fixtures/detr/make_detr_fixtures.py): sine position encodings, box utilities, the transformer (post-norm with
 * intermediate decoder outputs, pre-norm, and every attention mask), the Hungarian matcher's costs and assignments,
 * SetCriterion with auxiliary losses, and the whole DETR head end to end; outputs and gradients w.r.t. inputs and
 * every parameter, relative error ≤ 1e-4.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import { boxCxcywhToXyxy, boxIou, boxXyxyToCxcywh, generalizedBoxIou, generalizedBoxIouPaired } from '../../stages/engine/detr/box_ops.js';
import { setCriterion, type DetrPredictions, type SetCriterionConfig } from '../../stages/engine/detr/criterion.js';
import { DetrHead, maskToFeatureSize } from '../../stages/engine/detr/detr.js';
import { hungarianMatcher, matcherCostMatrix, type DetrTarget } from '../../stages/engine/detr/matcher.js';
import { positionEmbeddingSine } from '../../stages/engine/detr/position_encoding.js';
import { DetrTransformer, type DetrTransformerConfig } from '../../stages/engine/detr/transformer.js';
import { namedGradients, disposeGradients } from '../../stages/engine/grads.js';
import { AdamW } from '../../stages/engine/optim.js';
import { ParamStore } from '../../stages/engine/params.js';
import { batchFirst, boolMask, expectClose, expectScalarClose, loadDetrFixture, loadState, nhwc, printParityReport, tensor, toOurLayout, type Json } from './detr_fixture.js';

const ref = loadDetrFixture('detr_reference.json');
/** tf.tidy for results that are plain objects / arrays of tensors (kept) with other fields. */
const keep = <T>(fn: () => T): T => tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as T;
const train = { training: true };

beforeAll(async () => {
  await initBackend('tensorflow');
});
afterAll(() => printParityReport('DETR vs facebookresearch/detr'));

/** Gradients of `loss` w.r.t. the store's parameters and the given input variables (all returned by name). */
function gradients(loss: () => tf.Scalar, store: ParamStore | null, inputs: Record<string, tf.Variable>): { value: number; grads: Map<string, tf.Tensor> } {
  const all = new Map<string, tf.Variable>([...(store ? store.trainable() : []), ...Object.entries(inputs).map(([k, v]): [string, tf.Variable] => [`input:${k}`, v])]);
  const { loss: l, grads } = namedGradients(loss, all);
  const value = l.dataSync()[0]!;
  l.dispose();
  return { value, grads };
}

/**
 * Every parameter's gradient at relative error ≤ 1e-4. Gradients that are zero in exact arithmetic hold only float32
 * rounding noise in PyTorch (~1e-8 of the largest gradient), where a relative error means nothing; they are checked
 * as zeros (both sides below 1e-6 of the model's largest gradient), and only these two may be:
 * - post-norm, first decoder layer, self_attn.in_proj_weight: its input tgt is 0, so v = b_v is the same for every
 *   key and neither the attention pattern nor W_v can change the output;
 * - pre-norm, first decoder layer, norm1.weight: LayerNorm of the zero tgt normalises to 0 before the affine.
 */
function expectParamGrads(label: string, store: ParamStore, grads: Map<string, tf.Tensor>, expected: Record<string, Json>, prefix = ''): void {
  const trainable = [...store.trainable().keys()];
  expect(trainable.sort()).toEqual(Object.keys(expected).map((n) => prefix + n).sort());
  const maxAbs = (t: Json) => t.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const largest = Math.max(...Object.values(expected).map(maxAbs));
  for (const [name, t] of Object.entries(expected)) {
    const ours = grads.get(prefix + name)!;
    if (maxAbs(t) < 1e-6 * largest) {
      expect(name).toMatch(/decoder\.layers\.0\.(self_attn\.in_proj_weight|norm1\.weight)$/);
      expect(tf.max(tf.abs(ours)).dataSync()[0]!, `${label} grad ${name} (zero in exact arithmetic)`).toBeLessThan(1e-6 * largest);
      continue;
    }
    const want = toOurLayout(store, prefix + name, t);
    expectClose(`${label} grad ${name.replace(/layers\.\d+/, 'layers.i')}`, ours, want);
    want.dispose();
  }
}

const transformerConfig = (c: { normalizeBefore: boolean; returnIntermediateDec: boolean; numEncoderLayers: number; numDecoderLayers: number }): DetrTransformerConfig => ({
  dModel: ref.sizes.dModel,
  nHead: ref.sizes.nHead,
  dimFeedforward: ref.sizes.dimFeedforward,
  numEncoderLayers: c.numEncoderLayers,
  numDecoderLayers: c.numDecoderLayers,
  dropout: 0,
  activation: 'relu',
  normalizeBefore: c.normalizeBefore,
  returnIntermediateDec: c.returnIntermediateDec,
});

describe('PositionEmbeddingSine', () => {
  for (const c of ref.positionEmbedding.cases) {
    it(`normalize=${c.normalize}, ${c.numPosFeats} features per coordinate, on a padded mask`, () => {
      const mask = boolMask(ref.positionEmbedding.mask) as tf.Tensor3D;
      const pos = positionEmbeddingSine(mask, { numPosFeats: c.numPosFeats, normalize: c.normalize });
      const want = nhwc(c.pos);
      expectClose(`position encoding normalize=${c.normalize}`, pos, want);
      tf.dispose([mask, pos, want]);
    });
  }

  it('refuses an odd feature count and a scale without normalize', () => {
    const mask = tf.zeros([1, 2, 2], 'bool') as tf.Tensor3D;
    expect(() => positionEmbeddingSine(mask, { numPosFeats: 5 })).toThrow(/even/);
    expect(() => positionEmbeddingSine(mask, { numPosFeats: 4, scale: 1 })).toThrow(/normalize/);
    mask.dispose();
  });
});

describe('box_ops', () => {
  it('cxcywh↔xyxy, pairwise IoU and GIoU, and the GIoU gradient', () => {
    const r = ref.boxOps;
    const b1 = tf.variable(tensor(r.boxes1));
    const b2 = tf.variable(tensor(r.boxes2));
    const x1 = boxCxcywhToXyxy(b1);
    expectClose('box_cxcywh_to_xyxy', x1, tensor(r.xyxy1));
    expectClose('box_xyxy_to_cxcywh', boxXyxyToCxcywh(x1), tensor(r.backToCxcywh));
    const x2 = boxCxcywhToXyxy(b2);
    expectClose('box_iou', boxIou(x1 as tf.Tensor2D, x2 as tf.Tensor2D), tensor(r.iou));
    expectClose('generalized_box_iou', generalizedBoxIou(x1 as tf.Tensor2D, x2 as tf.Tensor2D), tensor(r.giou));
    const up = tensor(r.upstream);
    const [g1, g2] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(generalizedBoxIou(boxCxcywhToXyxy(a) as tf.Tensor2D, boxCxcywhToXyxy(b) as tf.Tensor2D), up)))([b1, b2]);
    expectClose('generalized_box_iou grad boxes1', g1!, tensor(r.grad1));
    expectClose('generalized_box_iou grad boxes2', g2!, tensor(r.grad2));
    // The paired form is the diagonal of the pairwise matrix.
    const pairs = generalizedBoxIouPaired(tf.slice(x1, [0, 0], [4, 4]) as tf.Tensor2D, x2 as tf.Tensor2D);
    const full = generalizedBoxIou(tf.slice(x1, [0, 0], [4, 4]) as tf.Tensor2D, x2 as tf.Tensor2D).arraySync();
    expect(Array.from(pairs.dataSync())).toEqual(full.map((row, i) => Math.fround(row[i]!)));
    tf.dispose([b1, b2, x1, x2, up, g1!, g2!, pairs]);
  });
});

describe('DETR Transformer', () => {
  for (const key of ['transformerPostNorm', 'transformerPreNorm'] as const) {
    const c = ref[key];
    it(`${key === 'transformerPostNorm' ? 'post-norm, intermediate decoder outputs' : 'pre-norm (encoder.norm), last decoder output only'}: hs, memory, gradients w.r.t. src, queries, pos and every parameter`, () => {
      const store = new ParamStore();
      const tr = new DetrTransformer(store.scope(''), transformerConfig(c), 1);
      loadState(store, c.state);
      const src = tf.variable(nhwc(c.src));
      const pos = tf.variable(nhwc(c.pos));
      const query = tf.variable(tensor(c.query));
      const mask = boolMask(c.mask) as tf.Tensor3D;
      const upHs = tensor(c.upstreamHs);
      const upMem = nhwc(c.upstreamMemory);
      const out = keep(() => tr.apply(src as tf.Tensor4D, mask, query, pos as tf.Tensor4D, train));
      expectClose(`${key} hs`, out.hs, tensor(c.hs));
      expectClose(`${key} memory`, out.memory, nhwc(c.memory));
      const { grads } = gradients(
        () => {
          const o = tr.apply(src as tf.Tensor4D, mask, query, pos as tf.Tensor4D, train);
          return tf.add(tf.sum(tf.mul(o.hs, upHs)), tf.sum(tf.mul(o.memory, upMem))) as tf.Scalar;
        },
        store,
        { src, pos, query },
      );
      expectClose(`${key} grad src`, grads.get('input:src')!, nhwc(c.gradSrc));
      expectClose(`${key} grad pos`, grads.get('input:pos')!, nhwc(c.gradPos));
      expectClose(`${key} grad query_embed`, grads.get('input:query')!, tensor(c.gradQuery));
      expectParamGrads(key, store, grads, c.grads);
      disposeGradients(grads);
      tf.dispose([src, pos, query, mask, upHs, upMem, out.hs, out.memory]);
      store.dispose();
    });
  }

  it('encoder and decoder with bool attention masks, key-padding masks, a float −∞ block mask (UP-DETR) and per-image query positions', () => {
    const c = ref.transformerMasks;
    const store = new ParamStore();
    const tr = new DetrTransformer(store.scope(''), transformerConfig({ normalizeBefore: false, returnIntermediateDec: true, numEncoderLayers: 1, numDecoderLayers: 2 }), 2);
    loadState(store, c.state);
    const src = tf.variable(batchFirst(c.src));
    const pos = tf.variable(batchFirst(c.pos));
    const tgt = tf.variable(batchFirst(c.tgt));
    const memoryIn = tf.variable(batchFirst(c.memoryIn));
    const queryPos = tf.variable(batchFirst(c.queryPos));
    const srcMask = boolMask(c.srcMask);
    const padding = boolMask(c.padding) as tf.Tensor2D;
    const tgtMask = tf.tidy(() => {
      const m = tensor(c.tgtMask);
      return tf.where(tf.lessEqual(m, -1e30), tf.fill(m.shape, -Infinity), m);
    });
    const memoryMask = boolMask(c.memoryMask);
    const tgtPadding = boolMask(c.tgtPadding) as tf.Tensor2D;
    const upMem = batchFirst(c.upstreamMemory);
    const upHs = tf.tidy(() => tf.transpose(tensor(c.upstreamHs), [0, 2, 1, 3])); // [L, Q, B, D] → [L, B, Q, D]
    const run = () => {
      const memory = tr.encoder.apply(src as tf.Tensor3D, { mask: srcMask, srcKeyPaddingMask: padding, pos: pos as tf.Tensor3D }, train);
      const hs = tr.decoder.apply(tgt as tf.Tensor3D, memoryIn as tf.Tensor3D, { tgtMask, memoryMask, tgtKeyPaddingMask: tgtPadding, memoryKeyPaddingMask: padding, pos: pos as tf.Tensor3D, queryPos }, train);
      return { memory, hs };
    };
    const out = keep(run);
    expectClose('masks: encoder output', out.memory, batchFirst(c.memory));
    expectClose('masks: decoder hs', out.hs, tf.transpose(tensor(c.hs), [0, 2, 1, 3]));
    const { grads } = gradients(
      () => {
        const o = run();
        return tf.add(tf.sum(tf.mul(o.memory, upMem)), tf.sum(tf.mul(o.hs, upHs))) as tf.Scalar;
      },
      store,
      { src, pos, tgt, memoryIn, queryPos },
    );
    expectClose('masks: grad src', grads.get('input:src')!, batchFirst(c.gradSrc));
    expectClose('masks: grad pos', grads.get('input:pos')!, batchFirst(c.gradPos));
    expectClose('masks: grad tgt', grads.get('input:tgt')!, batchFirst(c.gradTgt));
    expectClose('masks: grad memory', grads.get('input:memoryIn')!, batchFirst(c.gradMemoryIn));
    expectClose('masks: grad query_pos', grads.get('input:queryPos')!, batchFirst(c.gradQueryPos));
    expectParamGrads('masks', store, grads, c.grads);
    disposeGradients(grads);
    tf.dispose([src, pos, tgt, memoryIn, queryPos, srcMask, padding, tgtMask, memoryMask, tgtPadding, upMem, upHs, out.memory, out.hs]);
    store.dispose();
  });

  it('has the official state_dict names in order; refuses a non-bool padding mask', () => {
    const store = new ParamStore();
    const tr = new DetrTransformer(store.scope('transformer'), transformerConfig(ref.transformerPostNorm), 0);
    expect([...store.vars.keys()]).toEqual(Object.keys(ref.transformerPostNorm.state).map((n) => `transformer.${n}`));
    const x = tf.zeros([1, 2, 2, ref.sizes.dModel]) as tf.Tensor4D;
    const m = tf.zeros([1, 2, 2]) as tf.Tensor3D;
    expect(() => tr.apply(x, m, tf.zeros([3, ref.sizes.dModel]), x, train)).toThrow(/mask must be bool/);
    tf.dispose([x, m]);
    store.dispose();
  });
});

const criterionConfig = (numClasses: number): SetCriterionConfig => ({ numClasses, eosCoef: ref.eosCoef, costs: ref.costs, weights: ref.weights });

describe('HungarianMatcher and SetCriterion', () => {
  ref.criterion.forEach((c: any, ci: number) => {
    it(`case ${ci} (targets per image ${c.counts.join(', ')}; ${c.layers.length - 1} auxiliary layers): cost matrix, assignments, every loss, gradients`, () => {
      const targets = c.targets as DetrTarget[];
      const vars = c.layers.map((l: any) => ({ predLogits: tf.variable(tensor(l.predLogits)), predBoxes: tf.variable(tensor(l.predBoxes)) }));
      const layers: DetrPredictions[] = vars.map((v: any) => ({ predLogits: v.predLogits as tf.Tensor3D, predBoxes: v.predBoxes as tf.Tensor3D }));
      const last = layers[layers.length - 1]!;
      const outputs = { ...last, auxOutputs: layers.slice(0, -1) };
      const cost = matcherCostMatrix(last.predLogits, last.predBoxes, targets, ref.costs);
      expectClose('matcher cost matrix', cost, tensor(c.cost));
      // Assignments: last layer, then aux 0, 1, … (the official order), exactly.
      const got = [last, ...layers.slice(0, -1)].map((l) => hungarianMatcher(l.predLogits, l.predBoxes, targets, ref.costs).map((m) => [m.src, m.tgt]));
      expect(got).toEqual(c.indices);
      const config = criterionConfig(c.numClasses);
      const result = keep(() => {
        const r = setCriterion(outputs, targets, config);
        return { total: r.total, losses: r.losses, logs: r.logs };
      });
      for (const [name, v] of Object.entries(result.losses)) expectScalarClose(`criterion ${name.replace(/_\d+$/, '_i')}`, v.dataSync()[0]!, c.losses[name]);
      expectScalarClose('criterion weighted total', result.total.dataSync()[0]!, c.total);
      for (const [name, v] of Object.entries(result.logs)) expect(v, name).toBeCloseTo(c.losses[name], 4);
      const expectedNames = Object.keys(c.losses).filter((k) => k.startsWith('loss_'));
      expect(Object.keys(result.losses).sort()).toEqual(expectedNames.sort());
      const inputs: Record<string, tf.Variable> = {};
      vars.forEach((v: any, i: number) => {
        inputs[`logits${i}`] = v.predLogits;
        inputs[`boxes${i}`] = v.predBoxes;
      });
      const { grads } = gradients(() => setCriterion(outputs, targets, config).total, null, inputs);
      c.grads.forEach((g: any, i: number) => {
        expectClose('criterion grad pred_logits', grads.get(`input:logits${i}`)!, tensor(g.predLogits));
        expectClose('criterion grad pred_boxes', grads.get(`input:boxes${i}`)!, tensor(g.predBoxes));
      });
      disposeGradients(grads);
      tf.dispose([cost, result.total, ...Object.values(result.losses), ...vars.flatMap((v: any) => [v.predLogits, v.predBoxes])]);
    });
  });

  it('refuses a label outside the classes and a box with negative size, naming the target', () => {
    const logits = tf.zeros([1, 2, 3]) as tf.Tensor3D;
    const boxes = tf.fill([1, 2, 4], 0.5) as tf.Tensor3D;
    const costs = ref.costs;
    expect(() => hungarianMatcher(logits, boxes, [{ labels: [2], boxes: [[0.5, 0.5, 0.1, 0.1]] }], costs)).toThrow(/targets\[0\]\.labels\[0\]: label 2 is not a class id in \[0, 2\)/);
    expect(() => hungarianMatcher(logits, boxes, [{ labels: [0], boxes: [[0.5, 0.5, -0.1, 0.1]] }], costs)).toThrow(/targets\[0\]\.boxes\[0\]: box has negative width/);
    expect(() => hungarianMatcher(logits, boxes, [], costs)).toThrow(/0 target sets for a batch of 1/);
    tf.dispose([logits, boxes]);
  });
});

describe('DETR end to end (input_proj, queries, transformer, class and box heads, criterion with auxiliary losses)', () => {
  it('matches the official DETR + SetCriterion: mask at feature size, position encoding, predictions, losses, gradients of every head parameter and of the feature map', () => {
    const c = ref.detr;
    const store = new ParamStore();
    const head = new DetrHead(store.scope(''), { backboneChannels: c.backboneChannels, numClasses: c.numClasses, numQueries: c.numQueries, auxLoss: true, transformer: transformerConfig(ref.transformerPostNorm) }, 3);
    loadState(store, c.state);
    const fmap = tf.variable(nhwc(c.featureMap));
    const [, fh, fw] = fmap.shape;
    const imageMask = boolMask(c.imageMask) as tf.Tensor3D;
    const mask = maskToFeatureSize(imageMask, fh!, fw!);
    expect(Array.from(tf.cast(mask, 'float32').dataSync())).toEqual(c.featureMask.data);
    const pos = positionEmbeddingSine(mask, { numPosFeats: ref.sizes.dModel / 2, normalize: true });
    expectClose('detr: position encoding of the feature mask', pos, nhwc(c.pos));
    const targets = c.targets as DetrTarget[];
    const config = criterionConfig(c.numClasses);
    const out = keep(() => {
      const o = head.apply(fmap as tf.Tensor4D, mask, train);
      const r = setCriterion(o, targets, config);
      return { o, total: r.total, losses: r.losses };
    });
    expectClose('detr: pred_logits', out.o.predLogits, tensor(c.predLogits));
    expectClose('detr: pred_boxes', out.o.predBoxes, tensor(c.predBoxes));
    out.o.auxOutputs!.forEach((a, i) => {
      expectClose('detr: aux pred_logits', a.predLogits, tensor(c.aux[i].predLogits));
      expectClose('detr: aux pred_boxes', a.predBoxes, tensor(c.aux[i].predBoxes));
    });
    for (const [name, v] of Object.entries(out.losses)) expectScalarClose(`detr: ${name.replace(/_\d+$/, '_i')}`, v.dataSync()[0]!, c.losses[name]);
    expectScalarClose('detr: weighted total', out.total.dataSync()[0]!, c.total);
    const { grads } = gradients(() => setCriterion(head.apply(fmap as tf.Tensor4D, mask, train), targets, config).total, store, { fmap });
    expectClose('detr: grad feature map (to the backbone)', grads.get('input:fmap')!, nhwc(c.gradFeatureMap));
    expectParamGrads('detr', store, grads, c.grads);
    disposeGradients(grads);
    tf.dispose([fmap, imageMask, mask, pos, out.total, ...Object.values(out.losses), out.o.predLogits, out.o.predBoxes, out.o.hs, ...out.o.auxOutputs!.flatMap((a) => [a.predLogits, a.predBoxes])]);
    store.dispose();
  });

  it('training steps with dropout and AdamW keep tf.memory().numTensors flat, repeat exactly from the same dropout seed, and lower the loss', () => {
    const run = () => {
      const store = new ParamStore();
      const small = transformerConfig({ normalizeBefore: false, returnIntermediateDec: true, numEncoderLayers: 1, numDecoderLayers: 2 });
      const head = new DetrHead(store.scope(''), { backboneChannels: 6, numClasses: 3, numQueries: 5, auxLoss: true, transformer: { ...small, dropout: 0.1 } }, 7);
      const opt = new AdamW(store.vars, { weightDecay: 1e-4 }, store.info);
      const fmap = tf.randomNormal([2, 4, 5, 6], 0, 1, 'float32', 11) as tf.Tensor4D;
      const mask = tf.tidy(() => tf.cast(tf.concat([tf.zeros([1, 4, 5]), tf.concat([tf.zeros([1, 3, 5]), tf.ones([1, 1, 5])], 1)], 0), 'bool')) as tf.Tensor3D;
      const targets: DetrTarget[] = [{ labels: [0, 2], boxes: [[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]] }, { labels: [1], boxes: [[0.5, 0.5, 0.4, 0.4]] }];
      const rng = new Rng(5);
      const counts: number[] = [];
      const losses: number[] = [];
      for (let i = 0; i < 4; i++) {
        const { loss, grads } = namedGradients(() => setCriterion(head.apply(fmap, mask, { training: true, rng }), targets, { ...criterionConfig(3), eosCoef: 0.1 }).total, store.vars);
        opt.step(grads, 1e-3);
        losses.push(loss.dataSync()[0]!);
        loss.dispose();
        disposeGradients(grads);
        counts.push(tf.memory().numTensors);
      }
      tf.dispose([fmap, mask]);
      opt.dispose();
      store.dispose();
      return { counts, losses };
    };
    const a = run();
    const b = run();
    expect(new Set(a.counts).size).toBe(1);
    expect(b.losses).toEqual(a.losses);
    expect(a.losses[3]!).toBeLessThan(a.losses[0]!);
    const store = new ParamStore();
    const head = new DetrHead(store.scope(''), { backboneChannels: 6, numClasses: 3, numQueries: 5, auxLoss: false, transformer: { ...transformerConfig(ref.transformerPostNorm), dropout: 0.1 } }, 7);
    const fmap = tf.zeros([1, 2, 2, 6]) as tf.Tensor4D;
    const mask = tf.zeros([1, 2, 2], 'bool') as tf.Tensor3D;
    expect(() => head.apply(fmap, mask, { training: true })).toThrow(/needs DropoutContext.rng/);
    // Dropout is live in training and off in eval.
    const logits = (ctx: { training: boolean; rng?: Rng }) => tf.tidy(() => Array.from(head.apply(tf.randomNormal([1, 2, 2, 6], 0, 1, 'float32', 3) as tf.Tensor4D, mask, ctx).predLogits.dataSync()));
    expect(logits({ training: true, rng: new Rng(1) })).not.toEqual(logits({ training: false }));
    expect(logits({ training: false })).toEqual(logits({ training: false }));
    tf.dispose([fmap, mask]);
    store.dispose();
  });
});
