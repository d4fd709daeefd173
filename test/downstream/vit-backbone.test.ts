/**
 * The ViT evaluation backbone (stages/downstream/backbone.ts) and ViTDet's simple feature pyramid
 * (detection/simple-pyramid.ts): pooled / dense features as the ViT computes them, loading an
 * exported file (position embedding resampled bicubically as torch's F.interpolate, checked
 * against torch where /usr/bin/python3 has it), the pyramid's transposed conv against its
 * definition, and the detector's levels on a ViT.
 */
import { spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import { buildEvalBackbone, loadStateDict, resampleGridBicubic, VitBackbone } from '../../stages/downstream/backbone.js';
import { SimpleFeaturePyramid } from '../../stages/downstream/detection/simple-pyramid.js';
import { buildDetector, disposeDetector } from '../../stages/downstream/detection/train.js';
import { exportStateDict } from '../../stages/engine/export.js';
import { sincosPositionEmbedding2d, VisionTransformer, VIT_PRESETS } from '../../stages/engine/vit.js';

const PYTHON = '/usr/bin/python3';
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;

beforeAll(async () => {
  await initBackend('tensorflow');
});

const randomInput = (b: number, size: number, seed: number) => tf.tidy(() => tf.randomNormal([b, size, size, 3], 0, 1, 'float32', seed) as tf.Tensor4D);

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('ViT evaluation backbone', () => {
  it('pools the class token (default) or the mean patch token, and lays the patch tokens out as a row-major [g, g, D] map', () => {
    const model = buildEvalBackbone('vit-micro-64', 3, { imageSize: 32 }) as VitBackbone;
    expect(model.family).toBe('vit');
    expect(model.pooling).toBe('cls');
    expect([model.outChannels, model.stageChannels, model.patchSize]).toEqual([96, [96], 8]);
    const x = randomInput(2, 32, 1);
    const [cls, patches, pooled, dense, stages, meanPooled] = tf.tidy(() => {
      const raw = model.vit.apply(x);
      const out = model.apply(x, { training: false });
      const mean = new VitBackbone(model.vit, 'mean').apply(x, { training: false }).pooled;
      return [raw.cls, raw.patches, out.pooled, out.dense, out.stages, mean].map((t) => (Array.isArray(t) ? t.map((s) => s.shape) : t));
    }) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, number[][], tf.Tensor];
    expect(dense.shape).toEqual([2, 4, 4, 96]);
    expect(stages).toEqual([[2, 4, 4, 96]]);
    expect(maxAbs(pooled.dataSync(), cls.dataSync())).toBe(0);
    // Token 1 + 4 * i + j is the patch at row i, column j.
    const p = patches.arraySync() as number[][][];
    const d = dense.arraySync() as number[][][][];
    expect(d[1]![2]![3]).toEqual(p[1]![2 * 4 + 3]);
    const want = p.map((tokens) => tokens[0]!.map((_, c) => tokens.reduce((a, t) => a + t[c]!, 0) / tokens.length));
    expect(maxAbs(meanPooled.dataSync(), want.flat())).toBeLessThan(1e-5);
    tf.dispose([cls, patches, pooled, dense, meanPooled, x]);
    model.dispose();
  });

  it('refuses an image size that is not a multiple of the patch size, naming the field', () => {
    expect(() => buildEvalBackbone('vit-micro-64', 0, { imageSize: 36 })).toThrow(/evaluation\.imageSize|multiple/);
    expect(() => buildEvalBackbone('vit-huge', 0, { imageSize: 32 })).toThrow(/vit-huge.*vit-micro-64/);
  });

  it('loads an exported ViT (timm names) and resamples a position embedding made for another grid', async () => {
    // A "pretrained" ViT at 16 px (2x2 grid), exported as the pretrain stage does; evaluated at 32 px (4x4 grid).
    const source = new VisionTransformer({ ...VIT_PRESETS['vit-micro-64'], imageSize: 16 }, 'pretrained');
    const bytes = await exportStateDict(source.params);
    const same = buildEvalBackbone('vit-micro-64', 1, { imageSize: 16 });
    const r1 = loadStateDict(same, bytes, 'same.safetensors');
    expect(r1.resampled).toEqual([]);
    expect(r1.loaded).toBe(source.params.vars.size);
    for (const [name, v] of source.params.vars) expect(maxAbs(same.params.get(name).dataSync(), v.dataSync()), name).toBe(0);
    const x = randomInput(2, 16, 2);
    const [a, b] = tf.tidy(() => [source.apply(x).cls.dataSync(), same.apply(x, { training: false }).pooled.dataSync()]);
    expect(maxAbs(a!, b!)).toBe(0);

    const bigger = buildEvalBackbone('vit-micro-64', 1, { imageSize: 32 });
    const r2 = loadStateDict(bigger, bytes, 'bigger.safetensors');
    expect(r2.resampled).toEqual(['pos_embed [1,5,96] -> [1,17,96]']);
    const pos = bigger.params.get('pos_embed').dataSync() as Float32Array;
    const src = source.params.get('pos_embed').dataSync() as Float32Array;
    expect(maxAbs(pos.subarray(0, 96), src.subarray(0, 96))).toBe(0); // the class row is kept
    expect(maxAbs(pos.subarray(96), resampleGridBicubic(src.subarray(96), 2, 4, 96))).toBe(0);
    // Not the 4x4 sin-cos table: the run's 2x2 table, interpolated.
    expect(maxAbs(pos.subarray(96), sincosPositionEmbedding2d(96, 4, false))).toBeGreaterThan(0.1);
    tf.dispose(x);
    [source, same, bigger].forEach((m) => m.dispose());
  });

  it('bicubic resampling is the identity at the same size and keeps a constant field', () => {
    const rng = Rng.fromSeed('resample', 0);
    const v = Float32Array.from({ length: 3 * 3 * 5 }, () => rng.normal());
    expect(maxAbs(resampleGridBicubic(v, 3, 3, 5), v)).toBe(0);
    const constant = new Float32Array(2 * 2 * 3).fill(0.7);
    expect(maxAbs(resampleGridBicubic(constant, 2, 5, 3), new Float32Array(25 * 3).fill(0.7))).toBeLessThan(1e-6);
  });

  it.skipIf(!hasTorch)(`bicubic resampling equals torch F.interpolate(mode='bicubic', align_corners=False) (under ${PYTHON})`, () => {
    const rng = Rng.fromSeed('resample', 1);
    const dim = 3;
    const cases = ([
      [2, 4],
      [4, 7],
      [14, 8],
    ] as const).map(([gIn, gOut]) => ({ gIn, gOut, v: Float32Array.from({ length: gIn * gIn * dim }, () => rng.normal()) }));
    const code = `import json, sys, torch
out = []
for c in json.loads(sys.argv[1]):
    v = torch.tensor(c['v']).reshape(1, c['gIn'], c['gIn'], ${dim}).permute(0, 3, 1, 2)
    r = torch.nn.functional.interpolate(v, size=(c['gOut'], c['gOut']), mode='bicubic', align_corners=False)
    out.append(r.permute(0, 2, 3, 1).flatten().tolist())
print(json.dumps(out))`;
    const run = spawnSync(PYTHON, ['-c', code, JSON.stringify(cases.map((c) => ({ ...c, v: Array.from(c.v) })))], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const want = JSON.parse(run.stdout) as number[][];
    cases.forEach((c, i) => expect(maxAbs(resampleGridBicubic(c.v, c.gIn, c.gOut, dim), want[i]!), `${c.gIn} -> ${c.gOut}`).toBeLessThan(1e-5));
  });
});

describe('simple feature pyramid (ViTDet)', () => {
  it('ConvTranspose2d(k=2, s=2) as its definition, identity, and 2x2 max-pool; names as detectron2', () => {
    const sfp = new SimpleFeaturePyramid(6, 16, 0);
    expect([...sfp.params.vars.keys()]).toEqual(['simfp_3.0.weight', 'simfp_3.0.bias']);
    expect(sfp.outChannels).toEqual([3, 6, 6]);
    const x = tf.tidy(() => tf.randomNormal([2, 2, 3, 6], 0, 1, 'float32', 5) as tf.Tensor4D);
    const [up, same, down] = sfp.apply(x);
    expect([up!.shape, same!.shape, down!.shape]).toEqual([
      [2, 4, 6, 3],
      [2, 2, 3, 6],
      [2, 1, 1, 6],
    ]);
    const W = sfp.params.get('simfp_3.0.weight').arraySync() as number[][][][]; // [in, out, 2, 2]
    const bias = sfp.params.get('simfp_3.0.bias').arraySync() as number[];
    const xa = x.arraySync() as number[][][][];
    const got = up!.arraySync() as number[][][][];
    let err = 0;
    for (let b = 0; b < 2; b++)
      for (let i = 0; i < 4; i++)
        for (let j = 0; j < 6; j++)
          for (let o = 0; o < 3; o++) {
            let s = bias[o]!;
            for (let c = 0; c < 6; c++) s += xa[b]![i >> 1]![j >> 1]![c]! * W[c]![o]![i & 1]![j & 1]!;
            err = Math.max(err, Math.abs(s - got[b]![i]![j]![o]!));
          }
    expect(err).toBeLessThan(1e-5);
    expect(maxAbs(same!.dataSync(), x.dataSync())).toBe(0);
    const d = down!.arraySync() as number[][][][];
    for (let c = 0; c < 6; c++) expect(d[0]![0]![0]![c]).toBe(Math.max(xa[0]![0]![0]![c]!, xa[0]![0]![1]![c]!, xa[0]![1]![0]![c]!, xa[0]![1]![1]![c]!));
    tf.dispose([x, up!, down!]);
    sfp.params.dispose();
  });

  it('gives an FCOS detector on a ViT three levels at strides p/2, p, 2p; a ResNet keeps its C3-C5 and no pyramid', () => {
    const vit = buildEvalBackbone('vit-micro-64', 0, { imageSize: 32 });
    const detector = buildDetector(vit, 32, 3, { channels: 8, towerConvs: 1, groups: 2, seed: 0, masks: null });
    expect(detector.simple).not.toBeNull();
    expect(detector.grid.levels.map((l) => [l.stride, l.height])).toEqual([
      [4, 8],
      [8, 4],
      [16, 2],
    ]);
    disposeDetector(detector);
    vit.dispose();
    const resnet = buildEvalBackbone('resnet-tiny', 0, { imageSize: 32 });
    const d2 = buildDetector(resnet, 32, 3, { channels: 8, towerConvs: 1, groups: 2, seed: 0, masks: null });
    expect(d2.simple).toBeNull();
    disposeDetector(d2);
    resnet.dispose();
  });
});
