import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import { buildBackbone, loadStateDict } from '../../stages/downstream/backbone.js';
import { labelSubset } from '../../stages/downstream/eval-data.js';
import { kmeans } from '../../stages/downstream/kmeans.js';
import { knnClassify } from '../../stages/downstream/knn.js';
import { matchedSegmentIoU } from '../../stages/downstream/unsup-seg.js';
import { encodeSafetensors, type SafeTensor } from '../../stages/engine/safetensors.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** Direct transcription of the weighted vote for one query, for comparison. */
function knnByHand(train: number[][], labels: number[], q: number[], k: number, T: number, numClasses: number): number {
  const norm = (v: number[]) => {
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };
  const qn = norm(q);
  const sims = train.map((t, i) => ({ s: norm(t).reduce((a, x, j) => a + x * qn[j]!, 0), i }));
  sims.sort((a, b) => b.s - a.s);
  const votes = new Array(numClasses).fill(0);
  for (const { s, i } of sims.slice(0, k)) votes[labels[i]!] += Math.exp(s / T);
  return votes.indexOf(Math.max(...votes));
}

describe('kNN classifier', () => {
  it('equals the hand-written temperature-weighted vote', () => {
    const rng = Rng.fromSeed('knn');
    const dim = 6;
    const train = Array.from({ length: 40 }, () => Array.from({ length: dim }, () => rng.normal()));
    const labels = train.map(() => rng.int(0, 4));
    const queries = Array.from({ length: 15 }, () => Array.from({ length: dim }, () => rng.normal()));
    const pred = knnClassify(Float32Array.from(train.flat()), Int32Array.from(labels), Float32Array.from(queries.flat()), dim, { k: 5, temperature: 0.07, numClasses: 4, blockSize: 4 });
    expect(Array.from(pred)).toEqual(queries.map((q) => knnByHand(train, labels, q, 5, 0.07, 4)));
  });
});

describe('k-means and matched segment IoU', () => {
  it('separates two well-apart groups and matches them to the right segments', () => {
    // 4x4 grid of 2-d features: left half points along x, right half along y.
    const feats = new Float32Array(16 * 2);
    const segLeft = new Uint8Array(16);
    for (let p = 0; p < 16; p++) {
      const left = p % 4 < 2;
      feats.set(left ? [1, 0.05 * (p % 3)] : [0.05 * (p % 3), 1], p * 2);
      segLeft[p] = left ? 1 : 0;
    }
    const { assignment } = kmeans(feats, 2, 2, 'test');
    const segRight = segLeft.map((v) => 1 - v);
    const result = matchedSegmentIoU(Int32Array.from(assignment), 2, [segRight, segLeft]);
    expect(result.mIoU).toBe(1);
    // A segment left without a cluster (more segments than clusters) scores 0.
    expect(matchedSegmentIoU(new Int32Array(16), 1, [segRight, segLeft]).mIoU).toBe(0.5 * (8 / 16));
  });
});

describe('label-scarce subsets', () => {
  const samples = Array.from({ length: 200 }, (_, i) => ({ classLabel: i % 10, i }));
  it('takes the fraction, keeps every class, and is fixed by the seed', () => {
    const a = labelSubset(samples, 0.1, 3);
    expect(a).toHaveLength(20);
    expect(new Set(a.map((s) => s.classLabel)).size).toBe(10);
    expect(labelSubset(samples, 0.1, 3)).toEqual(a);
    expect(labelSubset(samples, 0.1, 4)).not.toEqual(a);
    expect(labelSubset(samples, 0.01, 3)).toHaveLength(10); // 1 % of 200 = 2, but one per class wins
  });
});

describe('backbone import', () => {
  it('loads PyTorch-layout (OIHW) tensors into the HWIO model and names a missing one', () => {
    const source = buildBackbone('resnet-tiny', 1);
    const target = buildBackbone('resnet-tiny', 2);
    const tensors = new Map<string, SafeTensor>();
    for (const [name, v] of source.params.vars) {
      const layout = source.params.info.get(name)!.layout;
      const torch = tf.tidy(() => (layout === 'hwio' ? v.transpose([3, 2, 0, 1]) : layout === 'io' ? v.transpose([1, 0]) : v.clone()));
      // PyTorch stores num_batches_tracked as int64.
      const data = v.dtype === 'int32' ? BigInt64Array.from(torch.dataSync() as Int32Array, (x) => BigInt(x)) : (torch.dataSync() as Float32Array);
      tensors.set(name, { dtype: v.dtype === 'int32' ? 'I64' : 'F32', shape: torch.shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
      torch.dispose();
    }
    tensors.set('head.0.weight', { dtype: 'F32', shape: [1], data: new Uint8Array(4) });
    const { loaded, ignored } = loadStateDict(target, encodeSafetensors(tensors), 'test.safetensors');
    expect(loaded).toBe(source.params.vars.size);
    expect(ignored).toEqual(['head.0.weight']);
    for (const [name, v] of source.params.vars) expect(Array.from(target.params.get(name).dataSync())).toEqual(Array.from(v.dataSync()));
    tensors.delete('conv1.weight');
    expect(() => loadStateDict(target, encodeSafetensors(tensors), 'test.safetensors')).toThrow(/conv1.weight/);
    source.dispose();
    target.dispose();
  });
});
