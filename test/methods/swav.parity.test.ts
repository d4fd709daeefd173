/**
 * SwAV parity with facebookresearch/swav@06b1b7c: the official `main_swav.train` (one iteration) and
 * `src/resnet50.py` `ResNet.forward` / `forward_head`, run under PyTorch on identical weights and inputs.
 * Reference values: test/fixtures/methods/swav/parity.json, written by test/fixtures/methods/swav/make_parity.py (see
 * its docstring). The backbone is the identity on given C5 maps (2 global crops 3×3, 3 local crops 2×2), so this
 * exercises exactly the method: grouping by resolution, head + BN over all crops, L2 normalisation, prototype
 * normalisation and freeze, Sinkhorn codes with and without the queue, the swapped loss, and the queue update.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { multiCropForward, resolutionGroups, SwAV, swav, swavCodes, swappedPredictionLoss } from '../../stages/methods/swav.js';
import { expectStoreMatches, identityBackbone, loadFixture, loadNeck, nhwc, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout, type Json } from './parity-helpers.js';

interface Scenario {
  args: { cropsForAssign: number[]; temperature: number; epsilon: number; sinkhornIterations: number; freezePrototypesSteps: number };
  step: number;
  queue: Json | null;
  outputs: {
    loss: number;
    codes: Json[];
    sinkhornRows: number[];
    grads: Record<string, Json>;
    prototypesFrozen: boolean;
    gradMaps: Json[];
    prototypesAfter: Json;
    bnAfter: Record<string, Json>;
    queueAfter: Json | null;
  };
}

const fixture = loadFixture('swav');
const { B, C, hidden, D, K, L } = fixture.sizes as Record<string, number>;
const scenarios = fixture.scenarios as Record<string, Scenario>;
const TOTAL_STEPS = 100;
/** Largest relative error per quantity over all scenarios (printed at the end, for the card). */
const worst: Record<string, number> = {};
const note = (what: string, err: number) => {
  worst[what] = Math.max(worst[what] ?? 0, err);
  return err;
};

function build(sc: Scenario): SwAV {
  const args = { ...swav.args.parse({}), ...sc.args, featDim: D, nmbPrototypes: K, hiddenMlp: hidden, queueLength: sc.queue ? L : 0, queueStartFraction: 0 };
  const method = new SwAV(args, () => identityBackbone(C), 1, B, TOTAL_STEPS);
  loadNeck(method.online, fixture.inputs.head);
  if (sc.queue) {
    const q = tf.tensor3d(sc.queue.data, sc.queue.shape as [number, number, number]);
    method.queue!.buffer.assign(q);
    q.dispose();
  }
  return method;
}

const maps = () => (fixture.inputs.maps as Json[]).map(nhwc);
const t2 = (j: Json) => tf.tensor2d(j.data, j.shape as [number, number]);

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('SwAV parity with facebookresearch/swav main_swav.train', () => {
  for (const [name, sc] of Object.entries(scenarios)) {
    it(`${name}: loss, gradients, prototypes, BN statistics and queue after one step`, () => {
      const method = build(sc);
      const views = maps();
      const { result, grads } = stepCapturing(method, views, {}, sc.step, TOTAL_STEPS);
      expect(note('loss', relErr(result.loss, sc.outputs.loss))).toBeLessThan(REL_TOL);
      // every head parameter and (unless frozen) the prototypes; nothing else
      expect(grads.has('neck.prototypes.weight')).toBe(!sc.outputs.prototypesFrozen);
      expect([...grads.keys()].sort()).toEqual(Object.keys(sc.outputs.grads).map((n) => `neck.${n}`).sort());
      const scale = Math.max(...sc.outputs.grads['projection_head.0.weight']!.data.map(Math.abs));
      for (const [n, t] of Object.entries(sc.outputs.grads)) {
        const [ours, ref] = [grads.get(`neck.${n}`)!, toOurLayout(`neck.${n}`, t, method.online)];
        if (n === 'projection_head.0.bias') {
          // A bias right before a train-mode BatchNorm has a zero gradient (BN subtracts the batch mean): both sides
          // hold float32 rounding noise only, so compare them to the scale of the layer's weight gradient instead.
          const noise = tf.tidy(() => Math.max(tf.max(tf.abs(ours)).dataSync()[0]!, tf.max(tf.abs(ref)).dataSync()[0]!));
          expect(noise / scale, `grad ${n} (zero up to rounding)`).toBeLessThan(1e-5);
        } else {
          expect(note(n.startsWith('prototypes') ? 'grad prototypes' : 'grad projection head', tensorRelErr(ours, ref)), `grad ${n}`).toBeLessThan(REL_TOL);
        }
        ref.dispose();
      }
      const protos = toOurLayout('neck.prototypes.weight', sc.outputs.prototypesAfter, method.online);
      expect(note('prototypes after normalisation', tensorRelErr(method.online.get('neck.prototypes.weight'), protos))).toBeLessThan(REL_TOL);
      expectStoreMatches(method.online, sc.outputs.bnAfter);
      if (sc.outputs.queueAfter) {
        const q = tf.tensor3d(sc.outputs.queueAfter.data, sc.outputs.queueAfter.shape as [number, number, number]);
        expect(note('queue after', tensorRelErr(method.queue!.buffer, q))).toBeLessThan(REL_TOL);
        q.dispose();
      }
      expect(Object.keys(result.parts)).toEqual(sc.args.cropsForAssign.map((a) => `assign${a}`));
      expect(Object.values(result.parts).reduce((a, b) => a + b, 0)).toBeCloseTo(result.loss, 5);
      tf.dispose([protos, ...views, ...grads.values()]);
      method.dispose();
    });

    it(`${name}: codes q (Sinkhorn on the assign crops, queue rows in front when used) and the gradient reaching the feature maps`, () => {
      const method = build(sc);
      const views = maps();
      method.head.normalizePrototypes();
      const queueScores = method.queueScores(sc.step);
      expect(queueScores.map((s) => (s ? s.shape[0] + B : B))).toEqual(sc.outputs.sinkhornRows);
      const out = multiCropForward(method.backbone, method.head, views, { training: true });
      const codes = swavCodes(out.scores, B, sc.args.cropsForAssign, queueScores, sc.args);
      codes.forEach((q, i) => {
        const ref = t2(sc.outputs.codes[i]!);
        expect(note('codes q', tensorRelErr(q, ref)), `codes of crop ${sc.args.cropsForAssign[i]}`).toBeLessThan(REL_TOL);
        ref.dispose();
      });
      const lossOfMaps = (...xs: tf.Tensor[]) => swappedPredictionLoss(multiCropForward(method.backbone, method.head, xs as tf.Tensor4D[], { training: true }).scores, codes, sc.args.cropsForAssign, B, sc.args.temperature).loss;
      const gradMaps = tf.grads(lossOfMaps)(views);
      gradMaps.forEach((g, v) => {
        const ref = nhwc(sc.outputs.gradMaps[v]!);
        expect(note('grad feature maps', tensorRelErr(g, ref)), `gradient at crop ${v}'s map`).toBeLessThan(REL_TOL);
        ref.dispose();
      });
      tf.dispose([...views, out.z, out.scores, ...codes, ...gradMaps, ...queueScores.filter((s): s is tf.Tensor2D => s !== null)]);
      method.dispose();
    });
  }

  it('groups crops by resolution as unique_consecutive does', () => {
    const views = maps();
    expect(resolutionGroups(views)).toEqual([[0, 2], [2, 5]]);
    const [a, b] = [tf.zeros([1, 4, 4, 3]), tf.zeros([1, 2, 2, 3])] as tf.Tensor4D[];
    expect(resolutionGroups([a!, b!, a!])).toEqual([[0, 1], [1, 2], [2, 3]]);
    tf.dispose([...views, a!, b!]);
  });

  it('does not touch the queue before it starts, then fills it; leaks no tensors across steps', () => {
    const sc = scenarios.queueFilling!;
    const args = { ...swav.args.parse({}), ...sc.args, featDim: D, nmbPrototypes: K, hiddenMlp: hidden, queueLength: L + 1, queueStartFraction: 0.5 };
    const method = new SwAV(args, () => identityBackbone(C), 1, B, 4); // L + 1 rounds down to L; starts at step 2
    loadNeck(method.online, fixture.inputs.head);
    expect(method.queue!.length).toBe(L);
    const views = maps();
    const sumAbs = () => tf.tidy(() => tf.sum(tf.abs(method.queue!.buffer)).dataSync()[0]!);
    const counts: number[] = [];
    for (let step = 0; step < 4; step++) {
      const { grads } = stepCapturing(method, views, {}, step, 4);
      tf.dispose([...grads.values()]);
      counts.push(tf.memory().numTensors);
      if (step < 2) expect(sumAbs()).toBe(0);
      // step 2 fills rows [0, B) of every slot, step 3 shifts them to [B, 2B): full, read from step 4 on
      if (step === 3) {
        const read = method.queueScores(4);
        expect(read.every((s) => s !== null)).toBe(true);
        tf.dispose(read.filter((s): s is tf.Tensor2D => s !== null));
      }
    }
    expect(sumAbs()).toBeGreaterThan(0);
    expect(new Set(counts.slice(1)).size).toBe(1);
    tf.dispose(views);
    method.dispose();
  });

  it('has the sizes the tests assume', () => {
    expect(fixture.official.commit).toBe(swav.code.commit);
    expect(fixture.inputs.maps.length).toBe((fixture.sizes.nmbCrops as number[]).reduce((a, b) => a + b, 0));
    console.log('SwAV parity, max relative error per quantity:', JSON.stringify(worst));
  });
});
