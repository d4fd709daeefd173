/**
 * Regression tests of issue 17 for the data stage: nothing is read from outside the dataset
 * folder, no sample is written under a key readers skip, COCO structure faults are errors instead of
 * silent mislabels, the fingerprint is asynchronous and covers linked images, and image size is
 * bounded (from the header, before decoding) with a decode memory budget that bounds concurrency.
 */
import { describe, expect, it, vi } from 'vitest';
import { readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveStageHash } from '../../core/stage.js';
import { BadInputError } from '../../core/errors.js';
import { FileArtifactStore } from '../../core/store/index.js';
import { readShard, readShardFromStore } from '../../core/webdataset.js';
import { decodeSample, shardStage, type ShardConfig, type ShardResult } from '../../stages/data/index.js';
import { DecodeBudget, processDecodeBudget } from '../../stages/data/image.js';
import { prepareSample } from '../../stages/data/prepare.js';
import { sourceFingerprint } from '../../stages/data/sources/index.js';
import { cocoDoc, pngBomb, pngHeaderClaiming, solidImage, vocObject, vocXml, writeCoco, writeFiles, writeVoc } from '../fixtures/malformed/build.js';
import { tempWorkspace } from './helpers.js';

const { dir, shard } = tempWorkspace();
const failure = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e as Error);

async function keysOf(store: FileArtifactStore, result: ShardResult): Promise<string[]> {
  const keys: string[] = [];
  for (const split of Object.values(result.splits)) for (const k of split.shardKeys) for await (const s of readShardFromStore(store, k)) keys.push(s.key);
  return keys.sort();
}

/** A file outside every dataset root, holding a valid image: a reader that followed a path out would shard it. */
async function outsideSecret(base: string) {
  const path = join(base, 'outside', 'secret.png');
  await writeFiles(base, { 'outside/secret.png': await solidImage(8, 8, 'png', { r: 1, g: 2, b: 3 }) });
  return path;
}

describe('path traversal (issue 17)', () => {
  it.each([
    ['../outside/secret.png'],
    ['../../outside/secret.png'],
    ['sub/../../outside/secret.png'],
    ['ABSOLUTE'],
  ])('refuses a COCO file_name %s that leaves the images folder, naming the file and member, before reading anything', async (name) => {
    const base = await dir('coco-trav');
    const secret = await outsideSecret(base);
    const doc = cocoDoc();
    doc.images[1]!.file_name = name === 'ABSOLUTE' ? secret : name;
    const paths = await writeCoco(join(base, 'ds'), doc);
    const err = await failure(shard({ source: { kind: 'coco', annotations: paths.annotations, images: paths.images } }));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toContain(`${paths.file}: images[1].file_name`);
    expect(err!.message).toMatch(/leaves the dataset folder/);
    // The same answer whether or not the target exists: no probing of the worker's files.
    expect(err!.message).not.toMatch(/not found|cannot decode/);
  });

  it('skips such an image with skipBad, recording why, and never shards the outside file', async () => {
    const base = await dir('coco-trav-skip');
    await outsideSecret(base);
    const doc = cocoDoc();
    doc.images[1]!.file_name = '../../outside/secret.png';
    const paths = await writeCoco(join(base, 'ds'), doc);
    const secret = await readFile(join(base, 'outside', 'secret.png'));
    const { store, result } = await shard({ source: { kind: 'coco', annotations: paths.annotations, images: paths.images }, skipBad: true });
    expect(result.skipped).toBe(1);
    expect(result.splits.train!.samples).toBe(1);
    expect(await keysOf(store, result)).toEqual(['a']);
    for (const key of result.splits.train!.shardKeys) expect(Buffer.from(await store.get(key)).includes(secret)).toBe(false);
  });

  it('refuses a COCO image that is a symbolic link out of the images folder', async () => {
    const base = await dir('coco-link');
    const secret = await outsideSecret(base);
    const paths = await writeCoco(join(base, 'ds'), cocoDoc());
    await rm(join(paths.images, 'b.png'));
    await symlink(secret, join(paths.images, 'b.png'));
    const err = await failure(shard({ source: { kind: 'coco', annotations: paths.annotations, images: paths.images } }));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toMatch(/b\.png: symbolic link leads outside the dataset folder/);
  });

  it('refuses a VOC <filename> that leaves JPEGImages, naming the annotation file and element', async () => {
    const base = await dir('voc-trav');
    await outsideSecret(base);
    const root = await writeVoc(join(base, 'voc'), { img1: vocXml('../../outside/secret.png') });
    const err = await failure(shard({ source: { kind: 'voc', root } }));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toContain(`${join(root, 'Annotations', 'img1.xml')}: <filename>`);
    expect(err!.message).toMatch(/leaves the dataset folder/);
  });

  it('reads (and fingerprints) a symbolic link that stays inside the dataset folder', async () => {
    const base = await dir('coco-inner-link');
    const paths = await writeCoco(join(base, 'ds'), cocoDoc(), { 'images/real/b-real.png': await solidImage(8, 8, 'png', { r: 0, g: 255, b: 0 }) });
    await rm(join(paths.images, 'b.png'));
    await symlink(join(paths.images, 'real', 'b-real.png'), join(paths.images, 'b.png'));
    const config = { source: { kind: 'coco', annotations: paths.annotations, images: paths.images } } as ShardConfig;
    const { store, result } = await shard(config);
    expect(await keysOf(store, result)).toEqual(['a', 'b']);
    const before = await resolveStageHash(shardStage, {}, config);
    // Editing the linked file gives a new key: a stale shard is never reused.
    await writeFile(join(paths.images, 'real', 'b-real.png'), await solidImage(8, 8, 'png', { r: 9, g: 9, b: 9 }));
    expect(await resolveStageHash(shardStage, {}, config)).not.toBe(before);
  });
});

describe('sample keys that readers would skip (issue 17)', () => {
  it("refuses a COCO file_name whose key begins with '__' instead of writing a sample no reader returns", async () => {
    const doc = cocoDoc();
    doc.images[1]!.file_name = '__b.png';
    const paths = await writeCoco(await dir('coco-dunder'), doc, { 'images/__b.png': await solidImage(8, 8) });
    const err = await failure(shard({ source: { kind: 'coco', annotations: paths.annotations, images: paths.images } }));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toMatch(/images\[1\]\.file_name: "__b\.png" gives the sample key __b, which begins with '__'/);
  });

  it('leaves __MACOSX folders and AppleDouble files out of an ImageFolder (no phantom class, nothing lost)', async () => {
    const root = await dir('folder-macos');
    await writeFiles(root, {
      'ants/a0.png': await solidImage(8, 8),
      'bees/b0.png': await solidImage(8, 8),
      'bees/._b0.png': 'AppleDouble resource fork, not an image',
      '__MACOSX/ants/._a0.png': 'AppleDouble resource fork, not an image',
      '__MACOSX/bees/._b0.png': 'AppleDouble resource fork, not an image',
    });
    const { store, result } = await shard({ source: { kind: 'imagefolder', root } });
    expect(result.classes).toEqual(['ants', 'bees']);
    expect(result.splits.train!.samples).toBe(2);
    expect(await keysOf(store, result)).toEqual(['ants_a0', 'bees_b0']);
  });

  it("refuses any other ImageFolder name whose key would begin with '__'", async () => {
    const root = await dir('folder-dunder');
    await writeFiles(root, { '__private/x.png': await solidImage(8, 8), 'ants/a.png': await solidImage(8, 8) });
    await expect(shard({ source: { kind: 'imagefolder', root } })).rejects.toThrow(/__private\/x\.png: "__private\/x\.png" gives the sample key __private_x/);
  });

  it("never packs a '__' key: the writer refuses what the reader would drop", async () => {
    const { packShard } = await import('../../core/webdataset.js');
    await expect(packShard([{ key: '__x', files: { json: Buffer.from('{}') } }])).rejects.toBeInstanceOf(BadInputError);
  });
});

describe('COCO structure (issue 17)', () => {
  const cases: [string, (d: ReturnType<typeof cocoDoc>) => unknown, RegExp][] = [
    ['duplicate image ids', (d) => void (d.images[1]!.id = 1), /images\[1\]\.id: image id 1 repeats images\[0\]\.id/],
    ['duplicate category ids', (d) => void (d.categories[1]!.id = 1), /categories\[1\]\.id: category id 1 repeats categories\[0\]\.id/],
    ['duplicate category names', (d) => void (d.categories[1]!.name = 'cat'), /categories\[1\]\.name: category name "cat" repeats/],
    ['an empty images list', (d) => void (d.images = []), /instances_train\.json: images: "images" is empty/],
    ['a null document', () => null, /instances_train\.json: must hold a JSON object .* got null/],
    ['an array document', () => [], /instances_train\.json: must hold a JSON object/],
    ['a null image entry', (d) => void ((d.images[0] = null as never), d.annotations.shift()), /images\[0\]: needs an integer id/],
    ['a null annotation entry', (d) => void (d.annotations[0] = null as never), /annotations\[0\]: must be an object/],
    ['a null category entry', (d) => void (d.categories[0] = null as never), /categories\[0\]: needs an integer id/],
    ['an annotation of an image that is not listed', (d) => void (d.annotations[1]!.image_id = 99), /annotations\[1\]\.image_id: image_id 99 is not the id of any entry/],
  ];
  it.each(cases)('refuses %s with the file and member, non-retryable', async (_name, edit, message) => {
    const doc = cocoDoc();
    const edited = edit(doc);
    const paths = await writeCoco(await dir('coco-struct'), edited === undefined ? doc : edited);
    const err = await failure(shard({ source: { kind: 'coco', annotations: paths.annotations, images: paths.images } }));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toContain(paths.file);
    expect(err!.message).toMatch(message);
  });
});

describe('fingerprinting (issue 17)', () => {
  it('reads files asynchronously: timers keep firing while a large source is hashed', async () => {
    const root = await dir('fp-async');
    const big = Buffer.alloc(48 * 1024 * 1024, 7);
    await writeFiles(root, { 'ants/a.png': await solidImage(8, 8), 'ants/big.bin': big, 'bees/big2.bin': big });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = performance.now();
    await sourceFingerprint({ kind: 'imagefolder', root });
    const ms = performance.now() - t0;
    clearInterval(timer);
    // A synchronous read of 96 MB gives the timer no turn at all.
    expect(ticks).toBeGreaterThan(Math.min(5, ms / 20));
  });

  it('stops at cancellation', async () => {
    const root = await dir('fp-cancel');
    await writeFiles(root, { 'ants/big.bin': Buffer.alloc(32 * 1024 * 1024, 1) });
    const ac = new AbortController();
    ac.abort('test');
    await expect(sourceFingerprint({ kind: 'imagefolder', root }, ac.signal)).rejects.toThrow(/cancelled/);
  });
});

describe('image size bound and decode budget (issue 17)', () => {
  it('refuses a 16000x16000 PNG bomb (750 KB on disk) from its header, before decoding', async () => {
    const bomb = pngBomb(16000, 16000);
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const root = await dir('folder-bomb');
    await writeFiles(root, { 'ants/a.png': await solidImage(8, 8), 'ants/bomb.png': bomb });
    const before = process.memoryUsage().rss;
    const err = await failure(shard({ source: { kind: 'imagefolder', root } }));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toMatch(/bomb\.png: image declares 16000x16000 = 256,000,000 pixels, more than the limit of 64,000,000 \(data\.maxImagePixels\)/);
    expect(process.memoryUsage().rss - before).toBeLessThan(300 * 1024 ** 2);
  });

  it('applies a lower data.maxImagePixels, and with skipBad records the skip', async () => {
    const root = await dir('folder-cap');
    await writeFiles(root, { 'ants/small.png': await solidImage(8, 8), 'ants/large.png': pngHeaderClaiming(2000, 2000) });
    await expect(shard({ source: { kind: 'imagefolder', root }, maxImagePixels: 1_000_000 })).rejects.toThrow(/large\.png: image declares 2000x2000/);
    const { result } = await shard({ source: { kind: 'imagefolder', root }, maxImagePixels: 1_000_000, skipBad: true });
    expect(result.splits.train!.samples).toBe(1);
    expect(result.skipped).toBe(1);
  });

  it('bounds decodes in flight by the memory budget, whatever the concurrency', async () => {
    const budget = new DecodeBudget(3 * (200 * 200 * 8 + 5000));
    let inFlight = 0;
    let peak = 0;
    const run = budget.run.bind(budget);
    vi.spyOn(budget, 'run').mockImplementation(async (cost, fn) =>
      run(cost, async () => {
        peak = Math.max(peak, ++inFlight);
        try {
          await new Promise((r) => setTimeout(r, 5));
          return await fn();
        } finally {
          inFlight--;
        }
      }),
    );
    const image = await solidImage(200, 200);
    const items = Array.from({ length: 12 }, (_, i) => ({ key: `k${i}`, origin: `item ${i}`, load: async () => ({ encoded: image, objects: [] }) }));
    const all = await Promise.all(items.map((item) => prepareSample(item, ['c'], { format: 'png', jpegQuality: 92, maxPixels: 1e6, budget })));
    expect(all).toHaveLength(12);
    expect(peak).toBeLessThanOrEqual(3);
    expect(budget.inUse).toBe(0);
  });

  it('gives the shard stage the process-wide budget by default', async () => {
    const root = await dir('folder-budget');
    await writeFiles(root, { 'ants/a.png': await solidImage(64, 64), 'ants/b.png': await solidImage(64, 64) });
    const spy = vi.spyOn(processDecodeBudget(), 'run');
    await shard({ source: { kind: 'imagefolder', root }, concurrency: 8 });
    expect(spy).toHaveBeenCalledTimes(2);
    spy.mockRestore();
  });

  it('refuses image formats that can name other files (SVG)', async () => {
    const root = await dir('folder-svg');
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><image href="file:///etc/hostname" width="8" height="8"/></svg>`;
    await writeFiles(root, { 'ants/a.png': svg });
    await expect(shard({ source: { kind: 'imagefolder', root } })).rejects.toThrow(/a\.png: image format svg is not accepted/);
  });
});

describe('shard reading names the shard and member (issue 17)', () => {
  it('turns a truncated tar into a non-retryable error naming the shard', async () => {
    const root = await dir('folder-tar');
    await writeFiles(root, { 'ants/a.png': await solidImage(8, 8), 'ants/b.png': await solidImage(8, 8) });
    const { store, result } = await shard({ source: { kind: 'imagefolder', root } });
    const key = result.splits.train!.shardKeys[0]!;
    const bytes = Buffer.from(await store.get(key));
    const err = await failure((async () => {
      for await (const s of readShard(bytes.subarray(0, 700), store.url(key))) void s;
    })());
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toContain(store.url(key));
  });

  it('names the member of a bad mask when decoding a sample', async () => {
    const json = { schema: 'densepipe.sample/v1', key: 'x', source: 's', width: 8, height: 8, objects: [{ label: 0, bbox: [0, 0, 4, 4], area: 16, mask: { size: [4, 4], counts: 'zz' } }] };
    const err = await failure(decodeSample({ key: 'x', files: { png: await solidImage(8, 8), json: Buffer.from(JSON.stringify(json)) } }, 's3://b/shard.tar#x'));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toMatch(/s3:\/\/b\/shard\.tar#x\.json: objects\[0\]\.mask: mask size \[4,4\] is not the image's \[8, 8\]/);
  });
});

describe('VOC entities (issue 17)', () => {
  it('refuses DOCTYPE and entity declarations, naming the file', async () => {
    const lol = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>${vocXml('&lol2;', vocObject('cat', [1, 1, 4, 4]))}`;
    const root = await writeVoc(await dir('voc-lol'), { img1: lol });
    const err = await failure(shard({ source: { kind: 'voc', root } }));
    expect(err).toBeInstanceOf(BadInputError);
    expect(err!.message).toContain(`${join(root, 'Annotations', 'img1.xml')}: a DOCTYPE or ENTITY declaration is not allowed`);
    expect(await readFile(join(root, 'Annotations', 'img1.xml'), 'utf8')).toContain('ENTITY'); // the file is untouched
  });
});
