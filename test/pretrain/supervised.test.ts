import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileArtifactStore } from '../../core/store/index.js';
import { localContext, runStage, checkpointIO, stageHash } from '../../core/stage.js';
import { parseRunConfig } from '../../core/config.js';
import { shardStage } from '../../stages/data/index.js';
import { supervisedConfigFor, supervisedStage } from '../../stages/pretrain/supervised.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';
import { initBackend, tf } from '../../core/tf.js';

describe('supervised baseline stage', () => {
  it('learns the multi-label task, exports a backbone without the classifier, and resumes from its checkpoint', async () => {
    await initBackend('tensorflow');
    const store = new FileArtifactStore(mkdtempSync(join(tmpdir(), 'dp-sup-')));
    const run = parseRunConfig({ pretrain: { backbone: { arch: 'resnet-tiny' }, batchSize: 16, steps: 30, imageSize: 32, checkpointEvery: { steps: 10 } } });
    const dataset = (await runStage(shardStage, localContext(store), {}, run.data)).ref;
    const config = supervisedConfigFor(run.pretrain);
    const before = tf.memory().numTensors;
    const full = await runStage(supervisedStage, localContext(store), { dataset }, config);
    expect(tf.memory().numTensors).toBe(before);
    const curve = JSON.parse(Buffer.from(await store.get(full.ref.result.lossCurveKey)).toString()).points as Array<{ loss: number }>;
    const mean = (xs: Array<{ loss: number }>) => xs.reduce((a, p) => a + p.loss, 0) / xs.length;
    expect(mean(curve.slice(-5))).toBeLessThan(mean(curve.slice(0, 5)));
    const weights = decodeSafetensors(await store.get(full.ref.result.backboneKey));
    const names = [...weights.tensors.keys()];
    expect(names).toContain('conv1.weight');
    expect(names.some((n) => n.startsWith('fc.'))).toBe(false);

    // Drop the output, keep the step-20 checkpoint: a rerun resumes there and ends on the same loss.
    const hash = stageHash(supervisedStage, { dataset }, config);
    await store.delete(full.ref.manifestKey);
    const ckpt = checkpointIO(store, `checkpoints/pretrain-supervised/${hash}`);
    const latest = await ckpt.latest();
    expect(latest?.step).toBe(30);
    const dir = (await store.list(`checkpoints/pretrain-supervised/${hash}/`)).filter((k) => k.includes('step-000000030'));
    for (const key of dir) await store.delete(key);
    await store.put(`checkpoints/pretrain-supervised/${hash}/latest.json`, JSON.stringify({ step: 20, dir: 'step-000000020', files: ['state.safetensors'], meta: {} }));
    const resumed = await runStage(supervisedStage, localContext(store), { dataset }, config);
    expect(resumed.ref.result.resumedFromStep).toBe(20);
    expect(resumed.ref.result.finalLoss).toBeCloseTo(full.ref.result.finalLoss, 5);
  });
});
