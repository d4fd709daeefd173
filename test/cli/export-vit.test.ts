/**
 * `densepipe export` of a ViT: the safetensors file carries timm's state_dict names, so timm's
 * VisionTransformer loads it with strict=True and computes the same class token as the engine.
 *
 * Always: against the timm fixture test/fixtures/engine/vit_fpn_reference.json (a timm 0.9.16
 * VisionTransformer's state_dict, input and forward_features output; make_vit_fpn_fixtures.py
 * beside it says how it was made): timm's weights loaded into the engine and exported again give
 * a file whose tensors are exactly timm's (every name, no extra one, shapes in PyTorch layout,
 * values bit for bit), which is what strict=True checks, and the evaluation backbone loaded from
 * that file gives timm's class token.
 * Where timm is importable (under /usr/bin/python3, or DENSEPIPE_TIMM_PYTHON): the generated
 * loader itself builds timm's module, loads the exported preset with strict=True, and matches the
 * engine's class token. Nothing is installed by the test.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportBackboneFiles, loaderPathFor } from '../../cli/export.js';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import { loadStateDict, VitBackbone } from '../../stages/downstream/backbone.js';
import { exportStateDict, importStateDict, type TorchTensor } from '../../stages/engine/export.js';
import { decodeSafetensors, typedArrayOf } from '../../stages/engine/safetensors.js';
import { VisionTransformer, VIT_PRESETS } from '../../stages/engine/vit.js';
import { backboneMetadata, readBackboneCard } from '../../stages/pretrain/backbone-card.js';
import { IMAGENET_MEAN, IMAGENET_STD } from '../../stages/pretrain/feeder.js';
import ref from '../fixtures/engine/vit_fpn_reference.json' with { type: 'json' };

const PYTHON = process.env.DENSEPIPE_TIMM_PYTHON ?? '/usr/bin/python3';
const hasTimm = spawnSync(PYTHON, ['-c', 'import torch, timm'], { encoding: 'utf8' }).status === 0;

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'dp-export-vit-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('ViT export against timm (fixture)', () => {
  it("the exported file holds exactly timm's state_dict, and the evaluation backbone loaded from it gives timm's class token", async () => {
    const timm = ref.vit.stateDict as Record<string, TorchTensor>;
    const engine = new VisionTransformer(ref.vit.config, 0);
    importStateDict(engine.params, new Map(Object.entries(timm)), { source: 'timm fixture' });
    const bytes = await exportStateDict(engine.params);
    engine.dispose();
    const { tensors } = decodeSafetensors(new Uint8Array(bytes));
    // strict=True: no missing and no unexpected key.
    expect([...tensors.keys()].sort()).toEqual(Object.keys(timm).sort());
    for (const [name, t] of tensors) {
      expect(t.shape, name).toEqual(timm[name]!.shape);
      expect(Array.from(typedArrayOf(t) as Float32Array), name).toEqual(Array.from(Float32Array.from(timm[name]!.values as number[])));
    }
    const model = new VitBackbone(new VisionTransformer(ref.vit.config, 'other'));
    loadStateDict(model, bytes, 'exported.safetensors');
    const x = tf.tidy(() => tf.transpose(tf.tensor(ref.vit.input as number[][][][]), [0, 2, 3, 1]) as tf.Tensor4D);
    const pooled = tf.tidy(() => model.apply(x, { training: false }).pooled.dataSync());
    const timmCls = (ref.vit.tokens as number[][][]).map((tokens) => tokens[0]!).flat();
    expect(maxAbs(pooled, timmCls)).toBeLessThan(1e-4);
    x.dispose();
    model.dispose();
  });
});

describe('ViT export: card and loader', () => {
  it('describes the ViT, writes a timm loader by default, and refuses a torchvision loader naming --format', async () => {
    const vit = new VisionTransformer({ ...VIT_PRESETS['vit-micro-64'], imageSize: 32 }, 'card');
    const bytes = await exportStateDict(vit.params, { metadata: backboneMetadata({ arch: 'vit-micro-64', method: 'siameseim', steps: 3, imageSize: 32 }) });
    vit.dispose();
    const card = readBackboneCard(decodeSafetensors(bytes).metadata)!;
    expect(card.architecture).toEqual({ family: 'vit', patchSize: 8, embedDim: 96, depth: 4, numHeads: 3, mlpRatio: 4, imageSize: 32, pooling: 'cls', head: 'none' });
    const out = join(dir, 'card.safetensors');
    const written = exportBackboneFiles(bytes, { out, source: out, fallback: { arch: 'vit-micro-64', method: 'siameseim', steps: 3 } });
    expect(written.format).toBe('timm');
    expect(written.loader).toBe(loaderPathFor(out));
    const loader = readFileSync(written.loader, 'utf8');
    expect(loader).toContain('VisionTransformer(img_size=32, patch_size=8, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4,');
    expect(loader).toContain('strict=True');
    expect(() => exportBackboneFiles(bytes, { out, format: 'torchvision', source: out, fallback: { arch: 'vit-micro-64', method: 'siameseim', steps: 3 } })).toThrow(/--format timm/);
    // A file without a card (written before cards existed) gets a ViT card from the run's config.
    const bare = await (async () => {
      const v = new VisionTransformer({ ...VIT_PRESETS['vit-micro-64'], imageSize: 16 }, 'bare');
      const b = await exportStateDict(v.params);
      v.dispose();
      return b;
    })();
    const filled = exportBackboneFiles(bare, { out: join(dir, 'bare.safetensors'), source: 'bare', fallback: { arch: 'vit-micro-64', method: 'mocov3', steps: 1, imageSize: 16 } });
    expect(filled.cardAdded).toBe(true);
    expect(filled.card.architecture).toMatchObject({ family: 'vit', imageSize: 16 });
  });
});

describe.skipIf(!hasTimm)(`ViT loader under ${PYTHON} with timm${hasTimm ? '' : ' (skipped: timm is not importable there; set DENSEPIPE_TIMM_PYTHON to a Python that has it)'}`, () => {
  it("loads the exported vit-micro-64 into timm's VisionTransformer with strict=True and matches the engine's class token", async () => {
    const size = 32;
    const vit = new VisionTransformer({ ...VIT_PRESETS['vit-micro-64'], imageSize: size }, 'export-vit');
    // MAE's init leaves biases and LayerNorms at 0 / 1: perturb every tensor but the fixed pos_embed so all are tested.
    const rng = Rng.fromSeed('export-vit', 0);
    for (const [name, v] of vit.params.vars) {
      if (name === 'pos_embed') continue;
      const noise = tf.tensor(Float32Array.from({ length: v.size }, () => 0.05 * rng.normal()), v.shape);
      v.assign(tf.add(v, noise));
      noise.dispose();
    }
    const x = tf.tidy(() => tf.randomUniform([2, size, size, 3], 0, 1, 'float32', 3).sub(tf.tensor1d([...IMAGENET_MEAN])).div(tf.tensor1d([...IMAGENET_STD])) as tf.Tensor4D);
    const expected = tf.tidy(() => vit.apply(x).cls.dataSync() as Float32Array);
    const input = tf.tidy(() => x.transpose([0, 3, 1, 2]).dataSync() as Float32Array);
    const bytes = await exportStateDict(vit.params, { metadata: backboneMetadata({ arch: 'vit-micro-64', method: 'siameseim', steps: 5, imageSize: size }) });
    x.dispose();
    vit.dispose();
    const out = join(dir, 'vit-micro-64.safetensors');
    const written = exportBackboneFiles(bytes, { out, source: out, fallback: { arch: 'vit-micro-64', method: 'siameseim', steps: 5 } });
    writeFileSync(join(dir, 'input.bin'), input);
    writeFileSync(join(dir, 'expected.bin'), expected);
    const driver = `import importlib.util, json, torch
spec = importlib.util.spec_from_file_location('vit_loader', ${JSON.stringify(written.loader)})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
net = mod.load_backbone()  # strict=True inside
x = torch.frombuffer(bytearray(open(${JSON.stringify(join(dir, 'input.bin'))}, 'rb').read()), dtype=torch.float32).reshape(2, 3, ${size}, ${size})
want = torch.frombuffer(bytearray(open(${JSON.stringify(join(dir, 'expected.bin'))}, 'rb').read()), dtype=torch.float32).reshape(2, 96)
with torch.no_grad():
    got = net(x)
print(json.dumps({'relErr': float((got - want).abs().max() / want.abs().max()), 'keys': len(net.state_dict())}))`;
    const run = spawnSync(PYTHON, ['-c', driver], { encoding: 'utf8', timeout: 300_000 });
    expect(run.status, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout.trim().split('\n').pop()!) as { relErr: number; keys: number };
    expect(result.keys).toBe(decodeSafetensors(bytes).tensors.size);
    expect(result.relErr).toBeLessThan(1e-4);
    const standalone = spawnSync(PYTHON, [written.loader], { encoding: 'utf8', timeout: 120_000 });
    expect(standalone.status, standalone.stderr).toBe(0);
    expect(standalone.stdout).toContain('torch.Size([2, 96])');
  });
});
