/**
 * The supervised baseline on a ViT: the preset trained with a linear head on its class token and
 * AdamW (DeiT's optimizer), exported without the head under timm names, so the evaluation loads it
 * like a self-supervised ViT; the ResNet baseline's config (its cache key) is as before.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRunConfig } from '../../core/config.js';
import { localContext, runStage } from '../../core/stage.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { shardStage } from '../../stages/data/index.js';
import { loadStateDict, buildEvalBackbone } from '../../stages/downstream/backbone.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';
import type { PretrainConfig } from '../../stages/pretrain/config.js';
import { supervisedConfigFor, supervisedStage } from '../../stages/pretrain/supervised.js';

describe('supervised baseline on a ViT', () => {
  it('trains the ViT with AdamW on the class token and exports timm names without the head', async () => {
    await initBackend('tensorflow');
    const store = new FileArtifactStore(mkdtempSync(join(tmpdir(), 'dp-sup-vit-')));
    const run = parseRunConfig({ pretrain: { backbone: { arch: 'resnet-tiny' }, batchSize: 16, steps: 30, imageSize: 32, checkpointEvery: { steps: 10 } } });
    expect(supervisedConfigFor(run.pretrain)).not.toHaveProperty('optimizer');
    expect(supervisedConfigFor(run.pretrain)).toMatchObject({ baseLr: 0.1, weightDecay: 1e-4 });
    const dataset = (await runStage(shardStage, localContext(store), {}, run.data)).ref;
    // No ViT method needs to be registered for this: the baseline follows whatever arch the pretraining names.
    const pretrain = { ...run.pretrain, backbone: { arch: 'vit-micro-64' } } as PretrainConfig;
    const config = supervisedConfigFor(pretrain);
    expect(config).toMatchObject({ arch: 'vit-micro-64', optimizer: 'adamw', baseLr: 2.5e-4, weightDecay: 0.05 });
    const before = tf.memory().numTensors;
    // DeiT's lr (1.6e-5 at batch 16) barely moves 30 steps: a larger one shows the loop learns.
    const { ref } = await runStage(supervisedStage, localContext(store), { dataset }, { ...config, baseLr: 0.02 });
    expect(tf.memory().numTensors).toBe(before);
    const curve = JSON.parse(Buffer.from(await store.get(ref.result.lossCurveKey)).toString()).points as Array<{ loss: number }>;
    const mean = (xs: Array<{ loss: number }>) => xs.reduce((a, p) => a + p.loss, 0) / xs.length;
    expect(mean(curve.slice(-5))).toBeLessThan(mean(curve.slice(0, 5)));
    const bytes = await store.get(ref.result.backboneKey);
    const names = [...decodeSafetensors(new Uint8Array(bytes)).tensors.keys()];
    expect(names).toEqual(expect.arrayContaining(['patch_embed.proj.weight', 'cls_token', 'pos_embed', 'blocks.3.mlp.fc2.weight', 'norm.weight']));
    expect(names.some((n) => n.startsWith('head.'))).toBe(false);
    const model = buildEvalBackbone('vit-micro-64', 0, { imageSize: 32 });
    expect(loadStateDict(model, bytes, 'supervised.safetensors').ignored).toEqual([]);
    model.dispose();
    expect(() => supervisedStage.validate!({ dataset }, { ...config, imageSize: 36 })).toThrow(/pretrain\.imageSize|multiple/);
  });
});
