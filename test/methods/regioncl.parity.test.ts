/**
 * RegionCL-M parity with Annbless/RegionCL@61bbcab openselfsup/models/RegionCLM.py on identical inputs and weights.
 * Reference values: test/fixtures/methods/regioncl/parity.json, written by running the OFFICIAL module (with light
 * stubs for mmcv and the registry) in `/usr/bin/python3 test/fixtures/methods/regioncl/make_parity.py`. The backbone is
 * the identity on a given feature map and the box is injected, so the region swap runs on feature maps at stride 1 and
 * this exercises exactly the method: swap, canvas/paste pooling, neck, both InfoNCE terms with the detached
 * intra-composite negatives, momentum update order and the queue update, through `step`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { Rng } from '../../core/rng.js';
import type { NamedGradients } from '../../stages/methods/shared/contract.js';
import { alignedBox, boxCellRange, partnerIndex, regioncl, RegionCL, regionclLoss, regionSwap, sampleRegionBox, type RegionBox } from '../../stages/methods/regioncl.js';
import { expectGradsMatch, expectStoreMatches, identityBackbone, loadFixture, loadNeck, loadQueue, nhwc, queueRows, REL_TOL, relErr, tensorRelErr } from './parity-helpers.js';

const fixture = loadFixture('regioncl');
const { B, C, h, w, hidden, D, K } = fixture.sizes as Record<string, number>;
const args = {
  ...regioncl.args.parse({}),
  temperature: fixture.temperature,
  regionTemperature: fixture.regionTemperature,
  queueSize: K,
  momentum: fixture.momentum,
  embedDim: D,
  hiddenDim: hidden,
  shuffleBnGroups: 1,
};
/** The official box, on the feature map itself (stride 1): one box for the whole batch. */
const boxes: RegionBox[] = Array.from({ length: B }, () => alignedBox(fixture.outputs.box, 1));

beforeAll(async () => {
  await initBackend('tensorflow');
});

function built(): RegionCL {
  const method = new RegionCL(args, () => identityBackbone(C), 1);
  loadNeck(method.online, fixture.inputs.neck_q);
  loadNeck(method.momentumEncoder, fixture.inputs.neck_k);
  return method;
}

describe('RegionCL-M parity with Annbless/RegionCL RegionCLM.py', () => {
  it('matches both loss terms, neck gradients, momentum update and queue after one step', () => {
    const { inputs, outputs } = fixture;
    const method = built();
    const queue0 = queueRows(inputs.queue);
    loadQueue(method.queues.queue, queue0, inputs.queue_ptr);
    const [qMap, kMap] = [nhwc(inputs.q_map), nhwc(inputs.k_map)];
    let grads: NamedGradients = new Map();
    const result = method.step(
      { views: [qMap, kMap], geometry: [] },
      { step: 0, totalSteps: 1, rng: new Rng(1), applyGradients: (g) => (grads = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]))) },
      { boxes },
    );

    expect(relErr(result.loss, outputs.loss)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.instance!, outputs.loss_instance)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.region!, outputs.loss_region)).toBeLessThan(REL_TOL);
    expectGradsMatch(grads, method.online, outputs.grads);
    expectStoreMatches(method.momentumEncoder, outputs.neck_k_after);
    const queueAfter = queueRows(outputs.queue_after);
    expect(tensorRelErr(method.queues.queue.buffer, queueAfter)).toBeLessThan(REL_TOL);
    expect(method.queues.queue.pointer).toBe(outputs.queue_ptr_after);
    tf.dispose([queue0, qMap, kMap, queueAfter, ...grads.values()]);
    method.dispose();
  });

  it('builds the same composite and sends the same gradients to both backbone feature maps', () => {
    const { inputs, outputs } = fixture;
    const method = built();
    loadNeck(method.momentumEncoder, outputs.neck_k_after); // the keys come from the updated momentum neck
    const [qMap, kMap, queue] = [nhwc(inputs.q_map), nhwc(inputs.k_map), queueRows(inputs.queue)];
    const k = tf.tidy(() => {
      const z = method.k.head.apply(kMap);
      return tf.div(z, tf.norm(z, 'euclidean', 1, true)) as tf.Tensor2D;
    });
    const partner = partnerIndex(B, 1);
    expect(partner).toEqual(outputs.partner);

    // The swap, at stride 1 on the feature map, equals the official composite's feature map (exactly: a copy).
    const swapped = regionSwap(qMap, boxes, partner);
    const expectedSwapped = nhwc(outputs.swapped_map);
    expect(tensorRelErr(swapped, expectedSwapped)).toBe(0);

    const loss = (a: tf.Tensor, b: tf.Tensor) =>
      regionclLoss(method.q.head, a as tf.Tensor4D, b as tf.Tensor4D, boxes, partner, k, queue, fixture.temperature, fixture.regionTemperature).loss;
    // Gradients at the two feature maps the official backbone produced (plain query, composite).
    const [gDirect, gSwapped] = tf.grads(loss)([qMap, swapped]);
    const [eDirect, eSwapped] = [nhwc(outputs.grad_q_map_direct), nhwc(outputs.grad_swapped_map)];
    expect(tensorRelErr(gDirect!, eDirect)).toBeLessThan(REL_TOL);
    expect(tensorRelErr(gSwapped!, eSwapped)).toBeLessThan(REL_TOL);
    // The total gradient reaching the query view's features, through both paths and the swap.
    const gTotal = tf.grad((x: tf.Tensor) => loss(x, regionSwap(x as tf.Tensor4D, boxes, partner)))(qMap);
    const eTotal = nhwc(outputs.grad_q_map);
    expect(tensorRelErr(gTotal, eTotal)).toBeLessThan(REL_TOL);
    tf.dispose([qMap, kMap, queue, k, swapped, expectedSwapped, gDirect!, gSwapped!, eDirect, eSwapped, gTotal, eTotal]);
    method.dispose();
  });

  it('has the sizes the tests assume', () => {
    expect([B, C, h, w]).toEqual(fixture.inputs.q_map.shape);
  });
});

describe('RegionCL-M box rule (RegionSwapping)', () => {
  it('scales the paper\'s 3–5 of 7 cells to the grid', () => {
    const a = regioncl.args.parse({});
    expect(boxCellRange(a, 7)).toEqual([3, 5]);
    expect(boxCellRange(a, 8)).toEqual([3, 6]);
    expect(boxCellRange(a, 4)).toEqual([2, 3]);
    expect(() => boxCellRange(a, 1)).toThrow();
  });

  it('draws boxes as the official code at 224 px / stride 32: sides 96–160 px, starts on the grid or clipped to 223 − side', () => {
    const rng = new Rng(7);
    const sides = new Set<number>();
    for (let i = 0; i < 500; i++) {
      const box = sampleRegionBox(rng, { height: 224, width: 224, stride: 32, cellRange: [3, 5] }, 'official');
      const { pixel, cells } = box;
      sides.add(pixel.w);
      expect([96, 128, 160]).toContain(pixel.w);
      expect([96, 128, 160]).toContain(pixel.h);
      for (const [start, side, cell] of [[pixel.x0, pixel.w, cells.x0], [pixel.y0, pixel.h, cells.y0]] as const) {
        expect(start === 223 - side || start % 32 === 0).toBe(true);
        expect(start + side).toBeLessThanOrEqual(223);
        expect(cell).toBe(Math.floor(start / 32)); // `randStartW.long()` after dividing by 32
        expect(cell + side / 32).toBeLessThanOrEqual(7);
      }
    }
    expect(sides.size).toBe(3);
  });

  it('keeps a clipped box on the grid with the aligned rule', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 200; i++) {
      const { pixel, cells } = sampleRegionBox(rng, { height: 64, width: 64, stride: 8, cellRange: [3, 6] }, 'aligned');
      expect(pixel).toEqual(alignedBox(cells, 8).pixel);
      expect(cells.x0 + cells.w).toBeLessThanOrEqual(8);
    }
  });

  it('pairs within each emulated GPU\'s batch', () => {
    expect(partnerIndex(4, 1)).toEqual([3, 2, 1, 0]);
    expect(partnerIndex(8, 2)).toEqual([3, 2, 1, 0, 7, 6, 5, 4]);
  });
});
