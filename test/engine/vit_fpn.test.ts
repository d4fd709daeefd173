import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { importStateDict, type TorchTensor } from '../../stages/engine/export.js';
import { FeaturePyramid } from '../../stages/engine/fpn.js';
import { ParamStore } from '../../stages/engine/params.js';
import { sincosPositionEmbedding2d, VisionTransformer, VIT_PRESETS } from '../../stages/engine/vit.js';
import ref from '../fixtures/engine/vit_fpn_reference.json' with { type: 'json' };

beforeAll(async () => {
  await initBackend('tensorflow');
});

const toMap = (sd: Record<string, TorchTensor>) => new Map(Object.entries(sd));
const nchwToNhwc = (a: unknown): tf.Tensor4D => tf.tidy(() => tf.transpose(tf.tensor(a as number[][][][]), [0, 2, 3, 1]) as tf.Tensor4D);

function maxAbsDiff(a: ArrayLike<number>, b: number[]): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('ViT (timm/MAE layout) against timm', () => {
  it('2-D sin-cos position embedding equals MAE get_2d_sincos_pos_embed', () => {
    const ours = sincosPositionEmbedding2d(ref.vit.config.embedDim, ref.vit.config.imageSize / ref.vit.config.patchSize);
    expect(maxAbsDiff(ours, (ref.vit.posEmbed as number[][]).flat())).toBeLessThan(1e-6);
  });

  it('loads timm weights by name and reproduces forward_features', () => {
    const vit = new VisionTransformer(ref.vit.config, 0);
    expect(new Set(vit.params.vars.keys())).toEqual(new Set(Object.keys(ref.vit.stateDict)));
    importStateDict(vit.params, toMap(ref.vit.stateDict as Record<string, TorchTensor>), { source: 'timm fixture' });
    const x = nchwToNhwc(ref.vit.input);
    const out = tf.tidy(() => vit.apply(x).tokens.dataSync());
    expect(maxAbsDiff(out, (ref.vit.tokens as number[][][]).flat(2))).toBeLessThan(1e-4);
    x.dispose();
    vit.dispose();
  });

  it('MAE-style masking keeps the requested patches; vit-small has the timm parameter count', () => {
    const vit = new VisionTransformer(ref.vit.config, 1);
    const x = tf.randomNormal([2, 32, 32, 3]) as tf.Tensor4D;
    const keep = tf.tensor2d([[0, 5, 9], [15, 1, 2]], [2, 3], 'int32');
    const shapes = tf.tidy(() => {
      const o = vit.apply(x, { keep });
      return [o.tokens.shape, o.cls.shape, o.patches.shape];
    });
    expect(shapes).toEqual([[2, 4, 32], [2, 32], [2, 3, 32]]);
    tf.dispose([x, keep]);
    vit.dispose();
    const small = VisionTransformer.preset('vit-small');
    // timm vit_small_patch16_224 without head: 21,665,664 incl. the (frozen here) pos_embed 197*384.
    expect(small.params.countTrainable() + 197 * 384).toBe(21_665_664);
    expect(VIT_PRESETS['vit-tiny'].embedDim).toBe(192);
    small.dispose();
  });
});

describe('FeaturePyramid against torchvision.ops.FeaturePyramidNetwork', () => {
  it('loads torchvision weights by name and reproduces P2..P5 and the max-pool level', () => {
    const store = new ParamStore();
    const fpn = new FeaturePyramid(store, '', { inChannels: ref.fpn.inChannels, outChannels: ref.fpn.outChannels, extraMaxPool: true });
    importStateDict(store, toMap(ref.fpn.stateDict as Record<string, TorchTensor>));
    const inputs = (ref.fpn.inputs as unknown[]).map(nchwToNhwc);
    const outs = tf.tidy(() => fpn.apply(inputs).map((o) => tf.transpose(o, [0, 3, 1, 2]).dataSync()));
    expect(outs.length).toBe(ref.fpn.outputs.length);
    outs.forEach((o, i) => expect(maxAbsDiff(o, (ref.fpn.outputs[i] as number[][][][]).flat(3))).toBeLessThan(1e-5));
    tf.dispose(inputs);
    store.dispose();
  });

  it('importStateDict refuses a state_dict with other shapes, naming the tensor, and loads nothing', () => {
    const store = new ParamStore();
    new FeaturePyramid(store, '', { inChannels: [4, 8, 16], outChannels: 6, extraMaxPool: false });
    const before = store.get('layer_blocks.0.0.bias').dataSync().slice();
    expect(() => importStateDict(store, toMap(ref.fpn.stateDict as Record<string, TorchTensor>), { source: 'fpn.safetensors' })).toThrow(
      /fpn.safetensors: state_dict does not fit the model: inner_blocks.0.0.weight: file \[8,4,1,1\] vs model \[6,4,1,1\]/,
    );
    expect(Array.from(store.get('layer_blocks.0.0.bias').dataSync())).toEqual(Array.from(before));
    store.dispose();
  });
});
