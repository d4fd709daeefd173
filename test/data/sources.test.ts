import { describe, expect, it } from 'vitest';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tarStream from 'tar-stream';
import { resolveStageHash, runStage } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { readShard, readShardFromStore } from '../../core/webdataset.js';
import { BadInputError } from '../../core/errors.js';
import {
  decodeSample,
  encodeImage,
  generateSyntheticImage,
  parseVocXml,
  shardStage,
  SYNTHETIC_SPECS,
  writeSyntheticCoco,
  type DatasetManifest,
  type DecodedSample,
  type ShardConfig,
  type ShardResult,
} from '../../stages/data/index.js';
import { quietContext, tempWorkspace } from './helpers.js';

const { dir, shard } = tempWorkspace();

async function allSamples(store: FileArtifactStore, result: ShardResult, split: string): Promise<DecodedSample[]> {
  const out: DecodedSample[] = [];
  for (const key of result.splits[split]!.shardKeys) for await (const raw of readShardFromStore(store, key)) out.push(await decodeSample(raw));
  return out;
}

describe('COCO reader', () => {
  it('reads the synthetic benchmark written as COCO back to the same pixels and annotations', async () => {
    const root = await dir('coco');
    const paths = await writeSyntheticCoco(root, 'tiny', 21, { limitPerSplit: 6 });
    const { store, result } = await shard({ source: { kind: 'coco', ...paths } });
    expect(result.classes).toEqual(['disc', 'square', 'triangle', 'ring', 'cross', 'star', 'hexagon', 'bar']);
    expect(Object.keys(result.splits).sort()).toEqual(['test', 'train', 'val']);
    for (const s of await allSamples(store, result, 'val')) {
      const index = Number(/val_(\d+)$/.exec(s.key)![1]);
      const truth = generateSyntheticImage(SYNTHETIC_SPECS.tiny, 21, 'val', index);
      expect(Buffer.from(s.image.data).equals(Buffer.from(truth.image.data))).toBe(true);
      expect(Array.from(s.boxes)).toEqual(truth.objects.flatMap((o) => o.bbox));
      expect(Array.from(s.labels)).toEqual(truth.objects.map((o) => o.label));
      s.masks.forEach((m, i) => expect(Buffer.from(m!).equals(Buffer.from(truth.objects[i]!.mask))).toBe(true));
    }
  });

  it('fingerprints the source files: editing one image changes the stage key', async () => {
    const root = await dir('coco-fp');
    const paths = await writeSyntheticCoco(root, 'tiny', 1, { limitPerSplit: 2 });
    const config = { source: { kind: 'coco', ...paths } } as ShardConfig;
    const before = await resolveStageHash(shardStage, {}, config);
    expect(await resolveStageHash(shardStage, {}, config)).toBe(before);
    const img = generateSyntheticImage(SYNTHETIC_SPECS.tiny, 99, 'train', 0).image;
    await writeFile(join(paths.images, 'train', 'train_000000.png'), await encodeImage(img, 'png'));
    expect(await resolveStageHash(shardStage, {}, config)).not.toBe(before);
  });

  it('names the file, field and value of bad annotations', async () => {
    const root = await dir('coco-bad');
    const paths = await writeSyntheticCoco(root, 'tiny', 2, { limitPerSplit: 3 });
    const file = join(paths.annotations, 'instances_train.json');
    const doc = JSON.parse(await readFile(file, 'utf8'));
    doc.annotations[0].bbox = [50, 50, 40, 40];
    await writeFile(file, JSON.stringify(doc));
    const err = await shard({ source: { kind: 'coco', ...paths } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadInputError);
    expect((err as Error).message).toContain('instances_train.json: annotations[0].bbox');
    expect((err as Error).message).toContain('[50,50,90,90]');
    expect((err as Error).message).toContain('outside the 64x64 image');

    await writeFile(file, '{"images": [');
    await expect(shard({ source: { kind: 'coco', ...paths } })).rejects.toThrow(/instances_train\.json: malformed JSON/);
  });

  it('reports corrupt and missing images per item under skipBad and writes only complete shards', async () => {
    const root = await dir('coco-skip');
    const paths = await writeSyntheticCoco(root, 'tiny', 3, { limitPerSplit: 10 });
    const truncated = join(paths.images, 'train', 'train_000004.png');
    const bytes = await readFile(truncated);
    await writeFile(truncated, bytes.subarray(0, bytes.length >> 1));
    const missing = join(paths.images, 'train', 'train_000007.png');
    await writeFile(missing + '.moved', await readFile(missing));
    await rm(missing);

    const strict = await shard({ source: { kind: 'coco', ...paths } }).catch((e: unknown) => e);
    expect(strict).toBeInstanceOf(BadInputError);
    expect((strict as Error).message).toMatch(/train_00000[47]\.png/);

    const { store, result } = await shard({ source: { kind: 'coco', ...paths }, skipBad: true });
    const manifest = await getJson<DatasetManifest>(store, result.datasetManifestKey);
    expect(manifest.skipped.map((s) => s.origin).sort()).toEqual([truncated, missing].sort());
    expect(manifest.skipped.find((s) => s.origin === truncated)!.reason).toMatch(/cannot decode image/);
    expect(manifest.skipped.find((s) => s.origin === missing)!.reason).toMatch(/image not found/);
    expect(result.splits.train!.samples).toBe(8);
    expect((await allSamples(store, result, 'train')).length).toBe(8);
  });

  it('rejects duplicate sample keys, or skips the second one with skipBad', async () => {
    const root = await dir('coco-dup');
    const paths = await writeSyntheticCoco(root, 'tiny', 4, { limitPerSplit: 2 });
    const file = join(paths.annotations, 'instances_val.json');
    const doc = JSON.parse(await readFile(file, 'utf8'));
    doc.images.push({ ...doc.images[0], id: 99, file_name: doc.images[0].file_name.replace('.png', '.jpg') });
    await writeFile(file, JSON.stringify(doc));
    await expect(shard({ source: { kind: 'coco', ...paths } })).rejects.toThrow(/duplicate sample key val_val_000000/);
    const { store, result } = await shard({ source: { kind: 'coco', ...paths }, skipBad: true });
    const manifest = await getJson<DatasetManifest>(store, result.datasetManifestKey);
    expect(manifest.skipped).toHaveLength(1);
    expect(result.splits.val!.samples).toBe(2);
  });
});

describe('Pascal VOC reader', () => {
  const xml = (file: string, objects: string) =>
    `<annotation><filename>${file}</filename><size><width>64</width><height>64</height><depth>3</depth></size>${objects}</annotation>`;
  const obj = (name: string, box: number[], difficult = 0) =>
    `<object><name>${name}</name><difficult>${difficult}</difficult><bndbox><xmin>${box[0]}</xmin><ymin>${box[1]}</ymin><xmax>${box[2]}</xmax><ymax>${box[3]}</ymax></bndbox></object>`;

  async function vocRoot() {
    const root = await dir('voc');
    await mkdir(join(root, 'Annotations'), { recursive: true });
    await mkdir(join(root, 'JPEGImages'), { recursive: true });
    await mkdir(join(root, 'ImageSets', 'Main'), { recursive: true });
    for (let i = 0; i < 3; i++) {
      const img = generateSyntheticImage(SYNTHETIC_SPECS.tiny, 5, 'train', i).image;
      await writeFile(join(root, 'JPEGImages', `img${i}.jpg`), await encodeImage(img, 'jpg'));
    }
    await writeFile(join(root, 'Annotations', 'img0.xml'), xml('img0.jpg', obj('dog', [1, 1, 10, 20]) + obj('cat', [5, 6, 64, 64], 1)));
    await writeFile(join(root, 'Annotations', 'img1.xml'), xml('img1.jpg', obj('cat', [3, 4, 30, 40])));
    await writeFile(join(root, 'Annotations', 'img2.xml'), xml('img2.jpg', ''));
    await writeFile(join(root, 'ImageSets', 'Main', 'train.txt'), 'img0\nimg2\n');
    await writeFile(join(root, 'ImageSets', 'Main', 'val.txt'), 'img1\n');
    return root;
  }

  it('converts 1-based inclusive corners to pixel-edge boxes and keeps difficult flags and splits', async () => {
    const root = await vocRoot();
    const { store, result } = await shard({ source: { kind: 'voc', root }, imageFormat: 'jpg' });
    expect(result.classes).toEqual(['cat', 'dog']);
    expect(result.splits.train!.samples).toBe(2);
    expect(result.splits.val!.samples).toBe(1);
    const img0 = (await allSamples(store, result, 'train')).find((s) => s.key === 'img0')!;
    expect(Array.from(img0.boxes)).toEqual([0, 0, 10, 20, 4, 5, 64, 64]);
    expect(Array.from(img0.labels)).toEqual([1, 0]);
    expect(img0.annotation.objects[1]!.difficult).toBe(true);
    expect(img0.semantic).toBeNull();
    // JPEG sources sharded as JPEG are passed through byte for byte.
    const raw = (await (async () => {
      for await (const s of readShardFromStore(store, result.splits.val!.shardKeys[0]!)) return s;
    })())!;
    expect(Buffer.from(raw.files.jpg!).equals(await readFile(join(root, 'JPEGImages', 'img1.jpg')))).toBe(true);
  });

  it('names the file and line of malformed XML, and the element of a bad value', async () => {
    expect(() => parseVocXml('<annotation><filename>a.jpg</filename><size>', '/x/a.xml')).toThrow(/\/x\/a\.xml: malformed XML at line 1/);
    expect(() => parseVocXml(xml('a.jpg', obj('dog', [1, 1, 'ten' as unknown as number, 5])), '/x/b.xml')).toThrow(/\/x\/b\.xml: <object>\[0\] <xmax>: expected a number, got "ten"/);
    expect(() => parseVocXml(xml('a.jpg', obj('dog', [1, 1, 90, 5])), '/x/c.xml')).toThrow(/outside the 64x64 image/);
  });
});

describe('ImageFolder reader', () => {
  it('labels images by their class folder, per split', async () => {
    const root = await dir('folder');
    for (const [split, cls, n] of [['train', 'ants', 2], ['train', 'bees', 1], ['val', 'bees', 1]] as const) {
      await mkdir(join(root, split, cls), { recursive: true });
      for (let i = 0; i < n; i++) await writeFile(join(root, split, cls, `x${i}.png`), await encodeImage(generateSyntheticImage(SYNTHETIC_SPECS.tiny, 0, 'test', i).image, 'png'));
    }
    const { store, result } = await shard({ source: { kind: 'imagefolder', root } });
    expect(result.classes).toEqual(['ants', 'bees']);
    const train = await allSamples(store, result, 'train');
    expect(train.map((s) => [s.key, s.imageLabel]).sort()).toEqual([['ants_x0', 0], ['ants_x1', 0], ['bees_x0', 1]]);
    expect((await allSamples(store, result, 'val'))[0]!.imageLabel).toBe(1);
  });
});

describe('sources inside the ArtifactStore (store: paths)', () => {
  it('read a COCO dataset uploaded to the store exactly as the local folder', async () => {
    const root = await dir('coco-store');
    const paths = await writeSyntheticCoco(root, 'tiny', 8, { limitPerSplit: 5 });
    const store = new FileArtifactStore(await dir('store'));
    for (const rel of await readdir(root, { recursive: true })) {
      const full = join(root, rel);
      if ((await stat(full)).isFile()) await store.putFile(`datasets/shapes/${rel.split('\\').join('/')}`, full);
    }
    const local = await shard({ source: { kind: 'coco', ...paths } });
    const { ref } = await runStage(shardStage, quietContext(store), {}, {
      source: { kind: 'coco', annotations: 'store:datasets/shapes/annotations', images: 'store:datasets/shapes/images' },
      shardSamples: 8,
    } as ShardConfig);
    for (const split of ['train', 'val']) {
      const a = await allSamples(local.store, local.result, split);
      const b = await allSamples(store, ref.result, split);
      expect(b.map((s) => s.key)).toEqual(a.map((s) => s.key));
      b.forEach((s, i) => {
        expect(Buffer.from(s.image.data).equals(Buffer.from(a[i]!.image.data))).toBe(true);
        expect(Array.from(s.boxes)).toEqual(Array.from(a[i]!.boxes));
      });
      expect(b[0]!.annotation.source).toMatch(/^file:\/\/.*datasets\/shapes\/images\//);
    }
    await expect(
      runStage(shardStage, quietContext(store), {}, { source: { kind: 'imagefolder', root: 'store:datasets/nothing-here' } } as ShardConfig),
    ).rejects.toThrow(/source\.root: directory ".*datasets\/nothing-here" does not exist/);
    await expect(
      runStage(shardStage, quietContext(store), {}, { source: { kind: 'coco', annotations: 'store:datasets/shapes/annotations', images: paths.images } } as ShardConfig),
    ).rejects.toThrow(/either every path of a source is a store: path or none is/);
  });
});

describe('missing inputs', () => {
  it('name the config field and path', async () => {
    await expect(shard({ source: { kind: 'voc', root: '/nonexistent/voc' } })).rejects.toThrow(/source\.root: directory "\/nonexistent\/voc" does not exist/);
    await expect(shard({ source: { kind: 'coco', annotations: '/nonexistent/a.json', images: '/tmp' } })).rejects.toThrow(/\/nonexistent\/a\.json: annotation file or folder not found/);
  });
});

describe('tar safety', () => {
  it("refuses members with '..' or absolute paths", async () => {
    for (const name of ['../evil.png', '/abs/evil.png']) {
      const pack = tarStream.pack();
      pack.entry({ name }, Buffer.from('x'));
      pack.finalize();
      const chunks: Buffer[] = [];
      for await (const c of pack) chunks.push(c as Buffer);
      await expect((async () => {
        for await (const _ of readShard(Buffer.concat(chunks), 'evil.tar')) void _;
      })()).rejects.toThrow(/evil\.tar: tar member .* absolute or '\.\.' path/);
    }
  });
});
