/**
 * DenseCL parity with WXinlong/DenseCL@b64bbb6 openselfsup/models/densecl.py on identical inputs and weights.
 * Reference values: test/fixtures/methods/densecl/parity.json, written by
 * `/usr/bin/python3 test/fixtures/methods/make_momentum_contrast_parity.py` (see its docstring). The backbone is the
 * identity on a given feature map, so this exercises exactly the method: neck, normalisation, correspondence,
 * both InfoNCE terms, λ weighting, momentum update order and both queue updates, through `step`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { densecl, DenseCL, denseclEmbed, denseclLoss, matchByBackboneSimilarity } from '../../stages/methods/densecl.js';
import { expectGradsMatch, expectStoreMatches, identityBackbone, loadFixture, loadNeck, loadQueue, nhwc, queueRows, REL_TOL, relErr, stepCapturing, tensorRelErr } from './parity-helpers.js';

const fixture = loadFixture('densecl');
const { B, C, h, w, hidden, D, K } = fixture.sizes as Record<string, number>;
const args = { ...densecl.args.parse({}), temperature: fixture.temperature, queueSize: K, momentum: fixture.momentum, embedDim: D, hiddenDim: hidden, shuffleBnGroups: 1, lossLambda: fixture.lossLambda };

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('DenseCL parity with WXinlong/DenseCL densecl.py', () => {
  it('matches both loss terms, gradients, momentum update and both queues after one step', () => {
    const { inputs, outputs } = fixture;
    const method = new DenseCL(args, () => identityBackbone(C), 1);
    loadNeck(method.online, inputs.neck_q);
    loadNeck(method.momentumEncoder, inputs.neck_k);
    const q0 = queueRows(inputs.queue);
    const q20 = queueRows(inputs.queue2);
    loadQueue(method.queues.queue, q0, inputs.queue_ptr);
    loadQueue(method.queues.queue2, q20, inputs.queue_ptr);
    const [qMap, kMap] = [nhwc(inputs.q_map), nhwc(inputs.k_map)];
    const { result, grads } = stepCapturing(method, [qMap, kMap]);

    expect(relErr(result.loss, outputs.loss)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.single!, outputs.loss_single)).toBeLessThan(REL_TOL);
    expect(relErr(result.parts.dense!, outputs.loss_dense)).toBeLessThan(REL_TOL);
    expectGradsMatch(grads, method.online, outputs.grads);
    expectStoreMatches(method.momentumEncoder, outputs.neck_k_after);
    const [eq, eq2] = [queueRows(outputs.queue_after), queueRows(outputs.queue2_after)];
    expect(tensorRelErr(method.queues.queue.buffer, eq)).toBeLessThan(REL_TOL);
    expect(tensorRelErr(method.queues.queue2.buffer, eq2)).toBeLessThan(REL_TOL);
    expect(method.queues.queue2.pointer).toBe(outputs.queue_ptr_after);
    tf.dispose([q0, q20, qMap, kMap, eq, eq2, ...grads.values()]);
    method.dispose();
  });

  it('matches the argmax correspondence and the gradient reaching the backbone feature map', () => {
    const { inputs, outputs } = fixture;
    const method = new DenseCL(args, () => identityBackbone(C), 1);
    loadNeck(method.online, inputs.neck_q);
    loadNeck(method.momentumEncoder, outputs.neck_k_after); // the keys come from the updated momentum neck
    const [qMap, kMap] = [nhwc(inputs.q_map), nhwc(inputs.k_map)];
    const [queue, queue2] = [queueRows(inputs.queue), queueRows(inputs.queue2)];
    const keys = denseclEmbed(method.k.head, kMap);
    const q = denseclEmbed(method.q.head, qMap);
    const match = matchByBackboneSimilarity(q.backbone, keys.backbone);
    expect(Array.from(match.dataSync())).toEqual(outputs.match);
    const gradQMap = tf.grad((x: tf.Tensor) => denseclLoss(denseclEmbed(method.q.head, x as tf.Tensor4D), keys, queue, queue2, fixture.temperature, fixture.lossLambda).loss)(qMap);
    const expected = nhwc(outputs.grad_q_map);
    expect(tensorRelErr(gradQMap, expected)).toBeLessThan(REL_TOL);
    tf.dispose([qMap, kMap, queue, queue2, match, gradQMap, expected, ...Object.values(keys), ...Object.values(q)]);
    method.dispose();
  });

  it('has the sizes the tests assume', () => {
    expect([B, C, h, w]).toEqual(fixture.inputs.q_map.shape);
  });
});
