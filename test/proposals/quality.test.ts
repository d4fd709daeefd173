import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeImage, proposalQuality, selectiveSearch, type Box } from '../../stages/proposals/index.js';

/**
 * Proposal quality on the synthetic multi-object scenes of the fixture script, against OpenCV's
 * fast mode on the same images (reference.json, scenes[].opencvFast).
 */
const FIXTURES = join(import.meta.dirname, '../fixtures/proposals');
const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference.json'), 'utf8'));

describe('selective search quality on synthetic scenes', () => {
  it('recall and average best overlap are at least OpenCV fast mode\'s (within 0.02)', async () => {
    const images: Array<{ groundTruth: Box[]; proposals: Box[] }> = [];
    let opencv = { recallAt50: 0, recallAt70: 0, averageBestOverlap: 0 };
    let objects = 0;
    for (const s of reference.scenes) {
      const image = await decodeImage(readFileSync(join(FIXTURES, 'images', `${s.image}.png`)));
      images.push({ groundTruth: s.groundTruth, proposals: selectiveSearch(image, { mode: 'fast' }).boxes });
      const n = s.groundTruth.length;
      objects += n;
      opencv = {
        recallAt50: opencv.recallAt50 + s.opencvFast.recallAt50 * n,
        recallAt70: opencv.recallAt70 + s.opencvFast.recallAt70 * n,
        averageBestOverlap: opencv.averageBestOverlap + s.opencvFast.averageBestOverlap * n,
      };
    }
    const [all] = proposalQuality(images, [Infinity]);
    expect(all!.recallAt50).toBeGreaterThanOrEqual(opencv.recallAt50 / objects - 0.02);
    expect(all!.recallAt70).toBeGreaterThanOrEqual(opencv.recallAt70 / objects - 0.02);
    expect(all!.averageBestOverlap).toBeGreaterThanOrEqual(opencv.averageBestOverlap / objects - 0.02);
  });

});
