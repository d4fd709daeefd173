/**
 * DenseSiam parity with ZwwWayne/DenseSiam@99f8ce1 `densesiam/models/architectures/densesiam.py` (DenseSimSiam) and
 * `picie.py` (FPNDecoder), the official modules RUN under PyTorch 1.13 on the CPU, with the official
 * ReplayRandomResizedCrop + ReplayRandomHorizontalTensorFlip replaying view 1's crop on view 2's feature map and the
 * official LossWeightStepUpdateHook setting the RegionSim weight. Reference values: test/fixtures/methods/densesiam/
 * parity.json, written by `test/fixtures/methods/densesiam/make_parity.py` (see its docstring to fetch and rerun).
 * The backbone hands given C2..C5 maps of both views (trainable here, so the gradient reaching the backbone is captured),
 * and the crops are given as our ViewGeometry, so one `step` exercises exactly the method: decoder, replay from the
 * geometry, PixSim + aux, RegionSim, self-labelling, loss weights and their schedule.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import type { ViewGeometry } from '../../stages/data/geometry.js';
import type { BackboneFactory } from '../../stages/methods/shared/contract.js';
import { DenseSiam, densesiam, lossWeights, replayOnFeatures, type DenseSiamArgs } from '../../stages/methods/densesiam.js';
import { type Json, loadFixture, nhwc, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout } from './parity-helpers.js';

const fixture = loadFixture('densesiam');
const { B, S, F, K, aux, cIn } = fixture.sizes as Record<string, number> & { cIn: number[] };
const args: DenseSiamArgs = { ...densesiam.args.parse({}), decoderChannels: F, numClasses: K, auxClasses: aux };
const geometry = fixture.inputs.geometry as ViewGeometry[][];
const measured: Record<string, number> = {};
const record = (what: string, err: number) => (measured[what] = Math.max(measured[what] ?? 0, err));
/** The biases right before BN(affine=False): their gradient is 0 in exact arithmetic, float noise in PyTorch. */
const BEFORE_PLAIN_BN = new Set(['projector.6.bias', 'aux_projector.6.bias']);

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** A "backbone" whose C2..C5 are given trainable variables `backbone.v{view}.c{2..5}`: call k reads view k mod 2. */
function givenStages(maps: tf.Tensor4D[][]): BackboneFactory {
  return (store) => {
    const vars = maps.map((view, v) => view.map((c, l) => store.add(`backbone.v${v}.c${l + 2}`, c.clone(), { layout: 'same', role: 'weight' })));
    let calls = 0;
    return {
      outChannels: cIn[3]!,
      stride: 32,
      stageChannels: cIn,
      apply: () => {
        throw new Error('DenseSiam reads applyStages');
      },
      applyStages: () => vars[calls++ % 2]!.map((v) => tf.mul(v, 1) as tf.Tensor4D),
    };
  };
}

function build(): { method: DenseSiam; maps: tf.Tensor4D[][] } {
  const maps = (fixture.inputs.maps as Json[][]).map((view) => view.map(nhwc));
  const method = new DenseSiam(args, givenStages(maps), 1);
  for (const [name, t] of Object.entries(fixture.inputs.state as Record<string, Json>)) {
    const ours = `neck.${name}`;
    const value = toOurLayout(ours, t, method.online);
    method.online.get(ours).assign(value);
    value.dispose();
  }
  return { method, maps };
}

const views = () => [tf.zeros([B, S, S, 3]), tf.zeros([B, S, S, 3])] as tf.Tensor4D[];

describe('DenseSiam parity with ZwwWayne/DenseSiam densesiam.py (official modules run under PyTorch)', () => {
  it('matches every loss term, all head gradients, the backbone gradient and the BN buffers after one step (RegionSim on)', () => {
    const { outputs } = fixture;
    const { method, maps } = build();
    const v = views();
    // epoch 8 of 10 ↔ step 8 of 10: RegionSim weight 0.1 (LossWeightStepUpdateHook steps [8, 10])
    const { result, grads } = stepCapturing(method, v, { geometry }, fixture.epoch, fixture.maxEpochs);
    const p = outputs.parts as Record<string, number>;
    record('loss', relErr(result.loss, outputs.loss));
    record('L_pix (loss_simsiam)', relErr(result.parts.pixsim!, p.loss_simsiam!));
    record('L_reg (loss_kernel_cross)', relErr(result.parts.regionsim!, p.loss_kernel_cross!));
    record('L_seg (loss_seg)', relErr(result.parts.seg!, p.loss_seg!));
    record('L_aux (loss_aux)', relErr(result.parts.aux!, p.loss_aux!));

    const headGrads = [...grads.keys()].filter((k) => k.startsWith('neck.')).sort();
    expect(headGrads).toEqual(Object.keys(outputs.grads).map((n) => `neck.${n}`).sort());
    for (const [name, t] of Object.entries(outputs.grads as Record<string, Json>)) {
      const ours = grads.get(`neck.${name}`)!;
      if (BEFORE_PLAIN_BN.has(name)) {
        const weight = grads.get(`neck.${name.replace(/bias$/, 'weight')}`)!;
        const scale = tf.tidy(() => tf.max(tf.abs(weight)).dataSync()[0]!);
        const e = tf.tidy(() => tf.max(tf.abs(ours)).dataSync()[0]!) / scale;
        record('grad bias before BN(affine=False) (|g| / |g_weight|, 0 in exact arithmetic)', e);
        expect(Math.max(...t.data.map(Math.abs)) / scale).toBeLessThan(REL_TOL);
        continue;
      }
      const expected = toOurLayout(`neck.${name}`, t, method.online);
      record(`grad ${name.split('.')[0]}`, tensorRelErr(ours, expected));
      expected.dispose();
    }
    (outputs.grad_maps as Json[][]).forEach((view, vi) =>
      view.forEach((t, l) => {
        const expected = nhwc(t);
        record('grad backbone maps', tensorRelErr(grads.get(`backbone.v${vi}.c${l + 2}`)!, expected));
        expected.dispose();
      }),
    );
    for (const [name, t] of Object.entries(outputs.buffers_after as Record<string, Json>)) {
      const expected = toOurLayout(`neck.${name}`, t, method.online);
      record('BN running stats after the step', tensorRelErr(method.online.get(`neck.${name}`), expected));
      expected.dispose();
    }
    for (const [k, e] of Object.entries(measured)) expect(e, k).toBeLessThan(REL_TOL);
    tf.dispose([...v, ...maps.flat(), ...grads.values()]);
    method.dispose();
  });

  it('before 0.8 of the run RegionSim has weight 0: same other terms, zero kernel-head gradients (epoch 7)', () => {
    const { off } = fixture.outputs;
    const { method, maps } = build();
    const v = views();
    const { result, grads } = stepCapturing(method, v, { geometry }, off.epoch, fixture.maxEpochs);
    expect(result.parts.regionsim).toBe(0);
    expect(off.parts.loss_kernel_cross).toBe(0);
    record('loss (RegionSim off)', relErr(result.loss, off.loss));
    expect(relErr(result.loss, off.loss)).toBeLessThan(REL_TOL);
    for (const name of Object.keys(off.kernel_grads)) {
      expect(tf.tidy(() => tf.max(tf.abs(grads.get(`neck.${name}`)!)).dataSync()[0]!), name).toBe(0);
    }
    tf.dispose([...v, ...maps.flat(), ...grads.values()]);
    method.dispose();
  });

  it("replays view 0's crop + flip on view 1's decoder map as the official eqv_pipeline does", () => {
    const { method, maps } = build();
    const f2 = method.head.decoder.apply(maps[1]!);
    const replayed = replayOnFeatures(f2, geometry[0]!, geometry[1]!, [f2.shape[1], f2.shape[2]]);
    const expected = nhwc(fixture.outputs.replayed);
    record('replayed view-1 map', tensorRelErr(replayed, expected));
    expect(tensorRelErr(replayed, expected)).toBeLessThan(REL_TOL);
    expect(geometry[0]!.map((g) => g.flipped)).toEqual([true, false]);
    tf.dispose([f2, replayed, expected, ...maps.flat()]);
    method.dispose();
  });

  it("uses the official 'auto' loss weights and the fixture's sizes", () => {
    const w = lossWeights(args);
    expect(relErr(w.pix, fixture.weights.simsiam)).toBeLessThan(1e-12);
    expect(relErr(w.aux, fixture.weights.aux)).toBeLessThan(1e-12);
    expect(w.pix).not.toBeCloseTo(w.aux, 2);
    expect(fixture.weights.temperature).toBe(args.regionTemperature);
    expect(fixture.weights.kernelBase).toBe(args.regionWeight);
    expect(fixture.official.commit.startsWith(densesiam.code.commit)).toBe(true);
    console.log('DenseSiam parity, max relative error per quantity:', JSON.stringify(measured));
  });
});
