/**
 * A method that builds on an earlier run's backbone (`consumes.pretrainedBackbone`, UP-DETR's frozen CNN): the pretrain
 * stage reads the file named by the argument, the method trains its detector on it without changing it (the exported
 * backbone is the file, tensor for tensor), exports the detector beside it (`exports.detector`), and a missing file or
 * a file of another architecture is refused, naming the argument or the file.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../../cli/env.js';
import { loadRunConfig } from '../../core/config.js';
import { BadInputError, IncompatibleArtifactError } from '../../core/errors.js';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { initBackend } from '../../core/tf.js';
import { shardConfigSchema, shardStage } from '../../stages/data/index.js';
import { exportStateDict } from '../../stages/engine/export.js';
import { ResNet } from '../../stages/engine/resnet.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';
import { backboneMetadata } from '../../stages/pretrain/backbone-card.js';
import { pretrainConfigSchema, pretrainStage, type PretrainConfig } from '../../stages/pretrain/index.js';

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'pretrained-backbone-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function updetrConfig(args: Record<string, unknown>): Promise<PretrainConfig> {
  const { config } = await loadRunConfig(join(projectRoot(), 'configs', 'methods', 'updetr.yaml'));
  return pretrainConfigSchema.parse({ ...config.pretrain, args: { ...config.pretrain.args, ...args }, steps: 2, backend: 'tensorflow' });
}

describe('a frozen backbone from an earlier run (UP-DETR)', () => {
  it('trains on the file without changing it, and exports the detector beside it', async () => {
    const store = new FileArtifactStore(join(dir, 'store'));
    const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref;
    // "An earlier run": a resnet-tiny with BN statistics and weights of its own, as a pretrain stage writes it.
    const earlier = ResNet.preset('resnet-tiny', {}, 'an-earlier-run');
    for (const [name, v] of earlier.params.vars) if (name.endsWith('running_var')) v.assign(v.add(0.5));
    const key = 'artifacts/pretrain/earlier/backbone.safetensors';
    await store.put(key, await exportStateDict(earlier.params, { metadata: backboneMetadata({ method: 'mocov2', arch: 'resnet-tiny', steps: 10 }) }));
    earlier.params.dispose();

    const { ref } = await runStage(pretrainStage, localContext(store), { dataset }, await updetrConfig({ backboneKey: key }));
    const given = decodeSafetensors(new Uint8Array(await store.get(key))).tensors;
    const exported = decodeSafetensors(new Uint8Array(await store.get(ref.result.backboneKey))).tensors;
    expect([...exported.keys()].sort()).toEqual([...given.keys()].sort());
    for (const [name, t] of given) expect(Buffer.from(exported.get(name)!.data).equals(Buffer.from(t.data)), name).toBe(true);
    const detector = decodeSafetensors(new Uint8Array(await store.get(ref.result.exports!.detector!)));
    expect(detector.metadata.schema).toBe('densepipe.detr/v1');
    expect(detector.tensors.has('query_embed.weight')).toBe(true);

    // The same run on the random-init CNN trains a different detector (the file was used).
    const other = await runStage(pretrainStage, localContext(store), { dataset }, await updetrConfig({}));
    expect(other.ref.result.finalLoss).not.toBe(ref.result.finalLoss);
  });

  it('refuses a key the store does not hold (naming the argument) and a backbone of another architecture (naming the file)', async () => {
    const store = new FileArtifactStore(join(dir, 'refuse'));
    const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref;
    await expect(runStage(pretrainStage, localContext(store), { dataset }, await updetrConfig({ backboneKey: 'artifacts/nothing/backbone.safetensors' }))).rejects.toThrow(
      expect.objectContaining({ name: BadInputError.name, message: expect.stringMatching(/pretrain\.args\.backboneKey/) }),
    );
    const wide = ResNet.preset('resnet18-w16-cifar', {}, 0);
    const key = 'artifacts/pretrain/wide/backbone.safetensors';
    await store.put(key, await exportStateDict(wide.params, { metadata: backboneMetadata({ method: 'mocov2', arch: 'resnet18-w16-cifar', steps: 1 }) }));
    wide.params.dispose();
    await expect(runStage(pretrainStage, localContext(store), { dataset }, await updetrConfig({ backboneKey: key }))).rejects.toThrow(IncompatibleArtifactError);
  });
});
