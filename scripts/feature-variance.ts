/**
 * Where the frozen C5 features of exported backbones vary, on the built-in data (N validation images, 64 px,
 * ImageNet-normalised, as the evaluation feeds them). The variance of the centred features f[n, p, c] (image n,
 * location p of the h×w map) is split into
 *   - posFrac: the share of a per-location mean over images (features that encode WHERE in the view, not what);
 *   - imgFrac: the share of a per-image mean over locations (features that tell images apart);
 *   - the rest: what varies from location to location within an image;
 * and the mean cosine of the same location in two images (sameLoc), of two locations 17 apart in one image
 * (otherLoc) and of both (otherBoth). Written for PixPro's suspect row (docs/ZOO.md); scripts/feature-diagnostics.ts
 * gives the pooled-feature rank and cosines.
 *   npx tsx scripts/feature-variance.ts ARCH STORE_DIR label=backboneKey|random ...
 */
import { FileArtifactStore } from '../core/store/index.js';
import { initBackend, tf } from '../core/tf.js';
import { generateSyntheticImage, SYNTHETIC_SPECS } from '../stages/data/synthetic.js';
import { extractFeatures, loadBackbone } from '../stages/downstream/backbone.js';
import { IMAGENET_MEAN, IMAGENET_STD } from '../stages/downstream/eval-data.js';
import { resampleRegion } from '../stages/data/resample.js';

const [arch, storeDir, ...pairs] = process.argv.slice(2);
if (!arch || !storeDir || pairs.length === 0) throw new Error('usage: feature-variance.ts ARCH STORE_DIR label=backboneKey|random ...');
await initBackend('tensorflow');
const store = new FileArtifactStore(storeDir);
const N = 256, SIZE = 64, OFFSET = 17;
const pixels = Array.from({ length: N }, (_, i) => {
  const img = generateSyntheticImage(SYNTHETIC_SPECS.small, 0, 'val', i);
  const resized = resampleRegion(img.image, [0, 0, img.image.width, img.image.height], SIZE, SIZE, 'bilinear');
  return resized.data.map((v, j) => (v - IMAGENET_MEAN[j % 3]!) / IMAGENET_STD[j % 3]!);
});

for (const pair of pairs) {
  const [label, key] = pair.split('=') as [string, string];
  const { model } = await loadBackbone(store, arch, 0, key === 'random' ? null : key, { imageSize: SIZE });
  const f = extractFeatures(model, pixels, SIZE, 32);
  const P = f.h * f.w;
  const out = tf.tidy(() => {
    const x = tf.tensor3d(f.dense, [f.n, P, f.channels]);
    const c = tf.sub(x, tf.mean(x, [0, 1], true));
    const total = tf.sum(tf.square(c));
    const posFrac = tf.div(tf.mul(tf.sum(tf.square(tf.mean(c, 0))), f.n), total);
    const imgFrac = tf.div(tf.mul(tf.sum(tf.square(tf.mean(c, 1))), P), total);
    const unit = tf.div(x, tf.add(tf.norm(x, 2, 2, true), 1e-12));
    const a = tf.slice(unit, [0, 0, 0], [f.n - 1, -1, -1]), b = tf.slice(unit, [1, 0, 0], [f.n - 1, -1, -1]);
    const roll = (t: tf.Tensor) => tf.concat([tf.slice(t, [0, OFFSET % P, 0], [-1, P - (OFFSET % P), -1]), tf.slice(t, [0, 0, 0], [-1, OFFSET % P, -1])], 1);
    const meanCos = (u: tf.Tensor, v: tf.Tensor) => tf.mean(tf.sum(tf.mul(u, v), 2));
    return [posFrac, imgFrac, meanCos(a, b), meanCos(unit, roll(unit)), meanCos(a, roll(b))].map((t) => t.dataSync()[0]!);
  });
  const [posFrac, imgFrac, sameLoc, otherLoc, otherBoth] = out.map((v) => v.toFixed(3));
  process.stdout.write(`${label.padEnd(12)} ${f.h}x${f.w}x${f.channels}   posFrac ${posFrac}   imgFrac ${imgFrac}   cos sameLoc ${sameLoc}   otherLoc ${otherLoc}   otherBoth ${otherBoth}\n`);
  model.params.dispose();
}
