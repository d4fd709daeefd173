import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { exportStateDict } from '../../stages/engine/export.js';
import { ParamStore } from '../../stages/engine/params.js';
import { ResNet } from '../../stages/engine/resnet.js';
import { decodeSafetensors, encodeSafetensors, typedArrayOf } from '../../stages/engine/safetensors.js';
import names18 from '../fixtures/engine/resnet18_state_dict.json' with { type: 'json' };

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('safetensors export', () => {
  it('resnet18 exports torchvision names and shapes, OIHW kernels, [out, in] fc, int64 num_batches_tracked', async () => {
    const net = ResNet.preset('resnet18', { numClasses: 1000 }, 3);
    const bytes = await exportStateDict(net.params, { metadata: { method: 'test' } });
    // Header framing by hand: u64 LE length, then JSON padded to 8 bytes.
    const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect(headerLength % 8).toBe(0);
    const { tensors, metadata } = decodeSafetensors(bytes);
    expect(metadata).toEqual({ format: 'pt', method: 'test' });
    expect([...tensors.keys()]).toEqual(names18.names);
    expect([...tensors.values()].map((t) => t.shape)).toEqual(names18.shapes);
    expect(tensors.get('layer1.0.bn1.num_batches_tracked')!.dtype).toBe('I64');
    // OIHW: element [o][i][h][w] of the export equals HWIO [h][w][i][o] inside.
    const oihw = typedArrayOf(tensors.get('layer2.0.conv1.weight')!) as Float32Array; // [128, 64, 3, 3]
    const hwio = net.params.get('layer2.0.conv1.weight').arraySync() as number[][][][];
    for (const [o, i, h, w] of [[0, 0, 0, 0], [5, 7, 1, 2], [127, 63, 2, 1]] as const) {
      expect(oihw[((o * 64 + i) * 3 + h) * 3 + w]).toBe(hwio[h]![w]![i]![o]);
    }
    const fc = typedArrayOf(tensors.get('fc.weight')!) as Float32Array; // [1000, 512]
    const io = net.params.get('fc.weight').arraySync() as number[][];
    expect(fc[3 * 512 + 17]).toBe(io[17]![3]);
    net.dispose();
  });

  it('strips a prefix and excludes a head, e.g. the query encoder of a MoCo model', async () => {
    const store = new ParamStore();
    new ResNet({ block: 'basic', layers: [1], baseWidth: 4, stem: 'cifar', zeroInitResidual: false, numClasses: 2 }, 0, store, 'encoder_q');
    store.add('queue', tf.zeros([2, 2]), { layout: 'same', role: 'buffer' });
    const { tensors } = decodeSafetensors(await exportStateDict(store, { stripPrefix: 'encoder_q.', exclude: (n) => n.startsWith('fc.') }));
    expect([...tensors.keys()][0]).toBe('conv1.weight');
    expect([...tensors.keys()].some((k) => k.startsWith('fc.') || k === 'queue' || k.startsWith('encoder_q'))).toBe(false);
    await expect(exportStateDict(store, { stripPrefix: 'nothing.' })).rejects.toThrow(/no tensors under prefix 'nothing.'/);
    store.dispose();
  });

  it('decoder rejects overlapping offsets and wrong byte counts, naming the tensor', () => {
    const good = encodeSafetensors(new Map([['a', { dtype: 'F32', shape: [2], data: new Uint8Array(8) }]]));
    const text = new TextDecoder().decode(good.subarray(8, 8 + Number(new DataView(good.buffer).getBigUint64(0, true))));
    const tamper = (json: string) => {
      const h = new TextEncoder().encode(json);
      const out = new Uint8Array(8 + h.length + 8);
      new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
      out.set(h, 8);
      return out;
    };
    expect(() => decodeSafetensors(tamper(text.replace('[2]', '[3]')), 'f.safetensors')).toThrow(/f.safetensors: tensor 'a': 8 bytes for F32\[3\]/);
    expect(() => decodeSafetensors(tamper('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'))).toThrow(/overlap or hole/);
    expect(() => decodeSafetensors(tamper('{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}'))).toThrow(/unsupported dtype "Q9"/);
  });
});
