/**
 * `densepipe export`: for every backbone preset, the exported safetensors file describes itself
 * (architecture, input normalisation, method) and the generated loader, run under /usr/bin/python3,
 * builds the module from torchvision, loads the file with strict=True and computes the same pooled
 * features as the engine (BN in eval mode with non-trivial running statistics). The timm loader is
 * checked the same way where timm is installed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { exportBackboneFiles, loaderPathFor } from '../../cli/export.js';
import { exportStateDict } from '../../stages/engine/export.js';
import { RESNET_PRESETS, ResNet, type ResNetPreset } from '../../stages/engine/resnet.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';
import { Rng } from '../../core/rng.js';
import { backboneMetadata, readBackboneCard, type BackboneArchitecture, type LoaderFormat } from '../../stages/pretrain/backbone-card.js';
import { IMAGENET_MEAN, IMAGENET_STD } from '../../stages/pretrain/feeder.js';

const PYTHON = '/usr/bin/python3';
const PRESETS = Object.keys(RESNET_PRESETS) as ResNetPreset[];
const python = (code: string) => spawnSync(PYTHON, ['-c', code], { encoding: 'utf8' });
const hasTorchvision = python('import torch, torchvision').status === 0;
const hasTimm = hasTorchvision && python('import timm').status === 0;

let dir: string;
beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'dp-export-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A preset with random weights and random BN affine/running statistics, exported with its card. */
async function exportedPreset(arch: ResNetPreset) {
  const net = ResNet.preset(arch, {}, `export-${arch}`);
  const rng = Rng.fromSeed('export-bn', arch);
  for (const [name, v] of net.params.vars) {
    if (v.rank !== 1 || v.dtype !== 'float32') continue;
    const n = v.shape[0]!;
    const values = Float32Array.from({ length: n }, () => (name.endsWith('running_var') || name.endsWith('weight') ? 0.5 + rng.next() : 0.2 * (rng.next() - 0.5)));
    v.assign(tf.tensor1d(values));
  }
  const size = RESNET_PRESETS[arch].stem === 'imagenet' ? 64 : 32;
  const x = tf.tidy(() => tf.randomUniform([2, size, size, 3], 0, 1, 'float32', 7).sub(tf.tensor1d([...IMAGENET_MEAN])).div(tf.tensor1d([...IMAGENET_STD])) as tf.Tensor4D);
  const pooled = tf.tidy(() => net.apply(x, { training: false }).pooled);
  const nchw = tf.tidy(() => x.transpose([0, 3, 1, 2]));
  const bytes = await exportStateDict(net.params, { metadata: backboneMetadata({ arch, method: 'densecl', steps: 12, imageSize: size }) });
  const result = { bytes, size, input: nchw.dataSync() as Float32Array, expected: pooled.dataSync() as Float32Array, channels: pooled.shape[1] };
  tf.dispose([x, pooled, nchw]);
  net.dispose();
  return result;
}

/** Load each preset's export with its loader under Python; return max |torch - engine| / max |engine| per preset. */
async function runLoaders(format: LoaderFormat): Promise<Record<string, { relErr: number; keys: number; stdout: string }>> {
  const cases: Array<{ arch: string; loader: string; input: string; expected: string; shape: number[]; channels: number }> = [];
  for (const arch of PRESETS) {
    const e = await exportedPreset(arch);
    const out = join(dir, `${format}-${arch}.safetensors`);
    const written = exportBackboneFiles(e.bytes, { out, format, source: out, fallback: { arch, method: 'densecl', steps: 12 } });
    expect(written.cardAdded).toBe(false);
    expect(written.loader).toBe(loaderPathFor(out));
    const input = join(dir, `${format}-${arch}.input.bin`);
    const expected = join(dir, `${format}-${arch}.expected.bin`);
    writeFileSync(input, e.input);
    writeFileSync(expected, e.expected);
    cases.push({ arch, loader: written.loader, input, expected, shape: [2, 3, e.size, e.size], channels: e.channels });
  }
  const driver = join(dir, `drive-${format}.py`);
  writeFileSync(
    driver,
    `import importlib.util, json, sys, torch
cases = json.loads(sys.argv[1])
out = {}
for c in cases:
    spec = importlib.util.spec_from_file_location('loader_' + c['arch'].replace('-', '_'), c['loader'])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.load_backbone()  # strict=True inside
    x = torch.frombuffer(bytearray(open(c['input'], 'rb').read()), dtype=torch.float32).reshape(c['shape'])
    want = torch.frombuffer(bytearray(open(c['expected'], 'rb').read()), dtype=torch.float32).reshape(2, c['channels'])
    with torch.no_grad():
        got = net(x)
    out[c['arch']] = {'relErr': float((got - want).abs().max() / want.abs().max()), 'keys': len(net.state_dict())}
print(json.dumps(out))
`,
  );
  const run = spawnSync(PYTHON, [driver, JSON.stringify(cases)], { encoding: 'utf8', timeout: 300_000 });
  expect(run.status, run.stderr).toBe(0);
  const results = JSON.parse(run.stdout.trim().split('\n').pop()!) as Record<string, { relErr: number; keys: number }>;
  // The loader also runs on its own, as a script next to its weights.
  const standalone = spawnSync(PYTHON, [cases[0]!.loader], { encoding: 'utf8', timeout: 120_000 });
  expect(standalone.status, standalone.stderr).toBe(0);
  return Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { ...v, stdout: k === cases[0]!.arch ? standalone.stdout : '' }]));
}

describe('backbone card', () => {
  it('records architecture, stem, pooling, input normalisation and method in the safetensors metadata', async () => {
    const { bytes } = await exportedPreset('resnet18-w16-cifar');
    const card = readBackboneCard(decodeSafetensors(bytes).metadata)!;
    expect(card.method).toBe('densecl');
    expect(card.architecture).toMatchObject({ family: 'resnet', block: 'basic', depth: 18, layers: [2, 2, 2, 2], widths: [16, 32, 64, 128], outChannels: 128, pooling: 'global-average', head: 'none', outputStride: 8 });
    expect((card.architecture as BackboneArchitecture).stem).toEqual({ kind: 'cifar', conv: '3x3 stride 1 padding 1', maxpool: false });
    expect(card.input).toEqual({ channels: 'RGB', range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], layout: 'NCHW', imageSize: 32 });
    const r50 = readBackboneCard(backboneMetadata({ arch: 'resnet50', method: 'supervised', steps: 1 }))!;
    expect(r50.architecture).toMatchObject({ block: 'bottleneck', depth: 50, widths: [64, 128, 256, 512], outChannels: 2048, outputStride: 32, stem: { kind: 'imagenet', maxpool: true } });
  });

  it('a file written before cards existed gets one from the run on export', async () => {
    const net = ResNet.preset('resnet-tiny', {}, 1);
    const old = await exportStateDict(net.params, { metadata: { method: 'densecl', arch: 'resnet-tiny', steps: '5' } });
    net.dispose();
    const out = join(dir, 'old.safetensors');
    const written = exportBackboneFiles(old, { out, format: 'torchvision', source: out, fallback: { arch: 'resnet-tiny', method: 'densecl', steps: 5, imageSize: 32 } });
    expect(written.cardAdded).toBe(true);
    const decoded = decodeSafetensors(readFileSync(out));
    expect((readBackboneCard(decoded.metadata)?.architecture as BackboneArchitecture).layers).toEqual([1, 1, 1, 1]);
    expect(decoded.metadata.format).toBe('pt');
    expect(decoded.tensors.size).toBe(decodeSafetensors(old).tensors.size);
    expect(() => exportBackboneFiles(old, { out, format: 'torchvision', source: 'x.safetensors', fallback: { arch: 'vit-huge', method: 'm', steps: 1 } })).toThrow(/x.safetensors.*vit-huge/);
  });
});

describe.skipIf(!hasTorchvision)(`loader under ${PYTHON} with torchvision${hasTorchvision ? '' : ' (skipped: torch/torchvision not importable there)'}`, () => {
  it(`loads every preset (${PRESETS.join(', ')}) with strict=True and matches the engine's pooled features`, async () => {
    const results = await runLoaders('torchvision');
    expect(Object.keys(results).sort()).toEqual([...PRESETS].sort());
    for (const [arch, r] of Object.entries(results)) expect(r.relErr, arch).toBeLessThan(1e-4);
    expect(results[PRESETS[0]!]!.stdout).toMatch(/torch\.Size\(\[2, \d+\]\)/);
  });
});

describe.skipIf(!hasTimm)(`loader under ${PYTHON} with timm${hasTimm ? '' : ' (skipped: timm is not installed there)'}`, () => {
  it('loads every preset with strict=True and matches the engine\'s pooled features', async () => {
    const results = await runLoaders('timm');
    for (const [arch, r] of Object.entries(results)) expect(r.relErr, arch).toBeLessThan(1e-4);
  });
});
