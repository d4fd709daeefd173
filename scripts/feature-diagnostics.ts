/**
 * Collapse diagnostics of exported backbones on the built-in data: for each backbone, the frozen features of
 * N validation images (64 px, ImageNet-normalised, as the evaluation feeds them) and
 *   - effRank: the effective rank exp(H(σ²/Σσ²)) of the centred pooled features (N × C): how many directions vary
 *     across images (a collapsed representation has a handful);
 *   - spatialCos: the mean cosine between two locations of the same image's C5 map (1 = every location alike);
 *   - imageCos: the mean cosine between the pooled features of two different images.
 * Used to investigate a method that does not beat random init (docs/ZOO.md).
 *   npx tsx scripts/feature-diagnostics.ts ARCH STORE_DIR [label=backboneKey ...]   (label=random for random init)
 */
import { FileArtifactStore } from '../core/store/index.js';
import { initBackend, tf } from '../core/tf.js';
import { generateSyntheticImage, SYNTHETIC_SPECS } from '../stages/data/synthetic.js';
import { extractFeatures, loadBackbone } from '../stages/downstream/backbone.js';
import { IMAGENET_MEAN, IMAGENET_STD } from '../stages/downstream/eval-data.js';
import { resampleRegion } from '../stages/data/resample.js';

const [arch, storeDir, ...pairs] = process.argv.slice(2);
if (!arch || !storeDir || pairs.length === 0) throw new Error('usage: feature-diagnostics.ts ARCH STORE_DIR label=backboneKey|random ...');
await initBackend('tensorflow');
const store = new FileArtifactStore(storeDir);
const N = 256, SIZE = 64;
const spec = SYNTHETIC_SPECS.small;
const pixels = Array.from({ length: N }, (_, i) => {
  const img = generateSyntheticImage(spec, 0, 'val', i);
  const resized = resampleRegion(img.image, [0, 0, img.image.width, img.image.height], SIZE, SIZE, 'bilinear');
  return resized.data.map((v, j) => (v - IMAGENET_MEAN[j % 3]!) / IMAGENET_STD[j % 3]!);
});

for (const pair of pairs) {
  const [label, key] = pair.split('=') as [string, string];
  const { model } = await loadBackbone(store, arch, 0, key === 'random' ? null : key, { imageSize: SIZE });
  const f = extractFeatures(model, pixels, SIZE, 32);
  const stats = tf.tidy(() => {
    const pooled = tf.tensor2d(f.pooled, [f.n, f.channels]);
    const centred = tf.sub(pooled, tf.mean(pooled, 0, true));
    const cov = tf.div(tf.matMul(centred, centred, true, false), f.n - 1); // C × C
    return { cov: cov.arraySync() as number[][], pooled: pooled.arraySync() as number[][] };
  });
  // Eigenvalues of the covariance by Jacobi sweeps (C ≤ 512): enough for an effective rank.
  const eig = jacobiEigenvalues(stats.cov);
  const total = eig.reduce((a, b) => a + Math.max(b, 0), 0);
  const p = eig.map((e) => Math.max(e, 0) / total).filter((x) => x > 0);
  const effRank = Math.exp(-p.reduce((a, x) => a + x * Math.log(x), 0));
  const cos = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let d = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) { d += a[i]! * b[i]!; na += a[i]! ** 2; nb += b[i]! ** 2; }
    return d / Math.sqrt(na * nb + 1e-30);
  };
  let imageCos = 0;
  for (let i = 0; i < N - 1; i++) imageCos += cos(stats.pooled[i]!, stats.pooled[i + 1]!);
  let spatialCos = 0, count = 0;
  const hw = f.h * f.w, C = f.channels;
  for (let i = 0; i < N; i += 8) {
    for (let a = 0; a < hw; a += 3) {
      const b = (a + 17) % hw;
      spatialCos += cos(f.dense.subarray((i * hw + a) * C, (i * hw + a + 1) * C), f.dense.subarray((i * hw + b) * C, (i * hw + b + 1) * C));
      count++;
    }
  }
  process.stdout.write(`${label.padEnd(12)} effRank ${effRank.toFixed(1).padStart(6)} of ${C}   spatialCos ${(spatialCos / count).toFixed(3)}   imageCos ${(imageCos / (N - 1)).toFixed(3)}\n`);
  model.params.dispose();
}

function jacobiEigenvalues(m: number[][]): number[] {
  const n = m.length;
  const a = m.map((r) => [...r]);
  for (let sweep = 0; sweep < 30; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += a[i]![j]! ** 2;
    if (off < 1e-18) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p]![q]!;
        if (Math.abs(apq) < 1e-15) continue;
        const theta = (a[q]![q]! - a[p]![p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k]![p]!, akq = a[k]![q]!;
          a[k]![p] = c * akp - s * akq;
          a[k]![q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p]![k]!, aqk = a[q]![k]!;
          a[p]![k] = c * apk - s * aqk;
          a[q]![k] = s * apk + c * aqk;
        }
      }
    }
  }
  return a.map((r, i) => r[i]!);
}
