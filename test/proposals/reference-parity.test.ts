import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { boundaryAgreement, decodeImage, decodeLabelPng, felzenszwalb, fromXywh, iou, selectiveSearch, slic, type Box, type RgbImage } from '../../stages/proposals/index.js';

/**
 * Our implementations against scikit-image and OpenCV run on the same images
 * (test/fixtures/proposals/make_fixtures.py wrote these numbers; README.md there says how).
 * Exact label identity is not expected: FH's edge order on ties is unspecified in both references.
 */
const FIXTURES = join(import.meta.dirname, '../fixtures/proposals');
const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference.json'), 'utf8'));
const images = new Map<string, RgbImage>();

beforeAll(async () => {
  for (const name of new Set<string>(reference.slic.map((e: { image: string }) => e.image))) {
    images.set(name, await decodeImage(readFileSync(join(FIXTURES, 'images', `${name}.png`))));
  }
});

async function referenceLabels(path: string): Promise<Int32Array> {
  return (await decodeLabelPng(readFileSync(join(FIXTURES, path)))).labels;
}

describe('felzenszwalb vs scikit-image', () => {
  it.each((reference.felzenszwalbSkimage as any[]).map((e: any): [string, any] => [`${e.image} scale ${e.scale}`, e]))('%s', async (_name, e) => {
    const image = images.get(e.image)!;
    const ours = felzenszwalb(image, { variant: 'skimage', scale: e.scale, sigma: e.sigma, minSize: e.minSize });
    expect(Math.abs(ours.count - e.count)).toBeLessThanOrEqual(Math.max(1, Math.round(0.02 * e.count)));
    const agreement = boundaryAgreement(ours.labels, await referenceLabels(e.labels), image.width, image.height, 1);
    expect(agreement.f).toBeGreaterThan(0.97);
  });
});

describe('felzenszwalb (OpenCV variant) vs cv::ximgproc::GraphSegmentation', () => {
  it.each((reference.felzenszwalbOpencv as any[]).map((e: any): [string, any] => [`${e.image} k ${e.k}`, e]))('%s', async (_name, e) => {
    const image = images.get(e.image)!;
    const n = image.width * image.height;
    // OpenCV was given BGR planes; the Euclidean distance does not care, but keep the order anyway
    const planes = [2, 1, 0].map((c) => Float64Array.from({ length: n }, (_, i) => image.data[i * 3 + c]!));
    const ours = felzenszwalb({ width: image.width, height: image.height, planes }, { variant: 'opencv', scale: e.k, sigma: e.sigma, minSize: e.minSize });
    expect(Math.abs(ours.count - e.count)).toBeLessThanOrEqual(Math.max(2, Math.round(0.1 * e.count)));
    const agreement = boundaryAgreement(ours.labels, await referenceLabels(e.labels), image.width, image.height, 1);
    expect(agreement.f).toBeGreaterThan(0.97);
  });
});

describe('slic vs scikit-image', () => {
  it.each((reference.slic as any[]).map((e: any): [string, any] => [`${e.image} n ${e.nSegments}`, e]))('%s', async (_name, e) => {
    const image = images.get(e.image)!;
    const ours = slic(image, { nSegments: e.nSegments, compactness: e.compactness, startLabel: 0 });
    expect(ours.count).toBe(e.count);
    // SLIC has no tie-order freedom that differs between the two, so the maps match pixel for pixel
    const theirs = await referenceLabels(e.labels);
    let differing = 0;
    for (let i = 0; i < theirs.length; i++) if (theirs[i] !== ours.labels[i]) differing++;
    expect(differing).toBe(0);
  });
});

function matchedFraction(reference: Box[], ours: Box[], threshold: number): number {
  return reference.filter((r) => ours.some((b) => iou(r, b) >= threshold)).length / reference.length;
}

describe('selective search vs OpenCV ximgproc', () => {
  it.each((reference.selectiveSearch as any[]).map((e: any): [string, any] => [`${e.image} ${e.mode}`, e]))('%s', (_name, e) => {
    const image = images.get(e.image)!;
    const theirs: Box[] = e.boxes.map((b: number[]) => fromXywh(b[0]!, b[1]!, b[2]!, b[3]!));
    const ours = selectiveSearch(image, { mode: e.mode }).boxes;
    // the box sets, not their (random) order, are what OpenCV defines
    expect(ours.length).toBeGreaterThan(0.75 * theirs.length);
    expect(ours.length).toBeLessThan(1.25 * theirs.length);
    expect(matchedFraction(theirs, ours, 0.7)).toBeGreaterThan(0.85);
    expect(matchedFraction(ours, theirs, 0.7)).toBeGreaterThan(0.85);
    for (const b of ours) {
      expect(b[0]).toBeGreaterThanOrEqual(0);
      expect(b[2]).toBeLessThanOrEqual(image.width);
      expect(b[3]).toBeLessThanOrEqual(image.height);
    }
    expect(ours.some((b) => b[0] === 0 && b[1] === 0 && b[2] === image.width && b[3] === image.height)).toBe(true);
  });
});
