/**
 * MoCo v2 parity with facebookresearch/moco@f515ef4 moco/builder.py on identical inputs and weights.
 * Reference values: test/fixtures/methods/mocov2/parity.json, written by
 * `/usr/bin/python3 test/fixtures/methods/make_momentum_contrast_parity.py` (see its docstring). The backbone is the
 * identity on a given feature map, so this exercises exactly the method: neck, normalisation, InfoNCE, momentum
 * update order and the queue update, through the same `step` the pretraining loop calls.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { mocov2, MoCoV2 } from '../../stages/methods/mocov2.js';
import { expectGradsMatch, expectStoreMatches, identityBackbone, loadFixture, loadNeck, loadQueue, nhwc, queueRows, REL_TOL, relErr, stepCapturing, tensorRelErr } from './parity-helpers.js';

const fixture = loadFixture('mocov2');
const { C, hidden, D, K } = fixture.sizes as Record<string, number>;

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('MoCo v2 parity with facebookresearch/moco builder.py', () => {
  it('matches loss, gradients, momentum update and queue after one step', () => {
    const { inputs, outputs } = fixture;
    const args = { ...mocov2.args.parse({}), temperature: fixture.temperature, queueSize: K, momentum: fixture.momentum, embedDim: D, hiddenDim: hidden, shuffleBnGroups: 1 };
    const method = new MoCoV2(args, () => identityBackbone(C), 1);
    loadNeck(method.online, inputs.neck_q);
    loadNeck(method.momentumEncoder, inputs.neck_k);
    const queue0 = queueRows(inputs.queue);
    loadQueue(method.queues.queue, queue0, inputs.queue_ptr);
    const [qMap, kMap] = [nhwc(inputs.q_map), nhwc(inputs.k_map)];
    const { result, grads } = stepCapturing(method, [qMap, kMap]);

    expect(relErr(result.loss, outputs.loss)).toBeLessThan(REL_TOL);
    expectGradsMatch(grads, method.online, outputs.grads);
    expectStoreMatches(method.momentumEncoder, outputs.neck_k_after);
    const expectedQueue = queueRows(outputs.queue_after);
    expect(tensorRelErr(method.queues.queue.buffer, expectedQueue)).toBeLessThan(REL_TOL);
    expect(method.queues.queue.pointer).toBe(outputs.queue_ptr_after);
    tf.dispose([queue0, qMap, kMap, expectedQueue, ...grads.values()]);
    method.dispose();
  });

  it('has the sizes the test assumes', () => {
    expect(fixture.inputs.q_map.shape[1]).toBe(C);
  });
});
