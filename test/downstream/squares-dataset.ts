/**
 * A tiny labelled dataset for evaluation tests and the downstream bench: grey noise with one large
 * coloured square (its colour is the image's class) and maybe a small second square, written as a
 * WebDataset shard per split with the data stage's sample format (png + json with boxes and masks).
 */
import { Rng } from '../../core/rng.js';
import type { StageRef } from '../../core/stage.js';
import { FileArtifactStore, type ArtifactStore } from '../../core/store/index.js';
import { join } from 'node:path';
import { packShard } from '../../core/webdataset.js';
import { encodeImage } from '../../stages/data/image.js';
import { objectWithMask } from '../../stages/data/sample.js';

export const SQUARE_CLASSES = ['red-square', 'green-square', 'blue-square'];
const COLOURS = [
  [220, 40, 40],
  [40, 200, 40],
  [40, 60, 220],
];

async function makeSample(rng: Rng, key: string, size: number) {
  const data = new Uint8Array(size * size * 3);
  for (let i = 0; i < data.length; i++) data[i] = 100 + rng.int(0, 40);
  const objects = [];
  const n = rng.int(1, 3);
  for (let o = 0; o < n; o++) {
    const label = rng.int(0, 3);
    const side = o === 0 ? rng.int(Math.round(size * 0.3), Math.round(size * 0.5)) : rng.int(Math.round(size * 0.12), Math.round(size * 0.25));
    const x0 = rng.int(0, size - side);
    const y0 = rng.int(0, size - side);
    const mask = new Uint8Array(size * size);
    for (let y = y0; y < y0 + side; y++) {
      for (let x = x0; x < x0 + side; x++) {
        mask[y * size + x] = 1;
        data.set(COLOURS[label]!, (y * size + x) * 3);
      }
    }
    objects.push(objectWithMask(label, mask, size, size, [x0, y0, x0 + side, y0 + side], side * side));
  }
  const json = { schema: 'densepipe.sample/v1', key, source: 'squares', width: size, height: size, objects };
  return { key, files: { png: await encodeImage({ width: size, height: size, data }, 'png'), json: Buffer.from(JSON.stringify(json)) } };
}

export async function writeSquaresDataset(
  store: ArtifactStore,
  options: { size: number; train: number; val: number; seed?: string },
): Promise<StageRef<{ splits: Record<string, { shardKeys: string[]; samples: number }>; classes: string[] }>> {
  const rng = Rng.fromSeed('squares-dataset', options.seed ?? 'default');
  const splits: Record<string, { shardKeys: string[]; samples: number }> = {};
  for (const [split, n] of [['train', options.train], ['val', options.val]] as const) {
    const samples = [];
    for (let i = 0; i < n; i++) samples.push(await makeSample(rng, `${split}-${String(i).padStart(5, '0')}`, options.size));
    const key = `datasets/squares/${split}-000000.tar`;
    await store.put(key, await packShard(samples));
    splits[split] = { shardKeys: [key], samples: n };
  }
  return { stage: 'dataset', hash: `squares-${options.seed ?? 'default'}`, manifestKey: 'datasets/squares/manifest.json', result: { splits, classes: SQUARE_CLASSES } };
}

/**
 * A fresh store under `dir/name` holding only the dataset written to `dir/data`, so each stage run
 * computes instead of reusing an output cached by another test.
 */
export async function storeWithDatasetCopy(dir: string, name: string): Promise<FileArtifactStore> {
  const store = new FileArtifactStore(join(dir, name));
  const source = new FileArtifactStore(join(dir, 'data'));
  for (const key of await source.list('datasets/')) await store.put(key, await source.get(key));
  return store;
}
