/**
 * Pictures for reports and docs (issue #5, item 8): every preset's proposals drawn over the
 * fixture images, plus FH and SLIC segment boundaries. Writes PNGs into OUT_DIR (default
 * ./proposal-pictures).
 *
 * Run:  npx esbuild bench/proposals-pictures.ts --bundle --platform=node --format=esm \
 *         --packages=external --outfile=dist/bench/proposals-pictures.mjs && node dist/bench/proposals-pictures.mjs [OUT_DIR]
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodeImage, drawProposals, drawSegmentBoundaries, felzenszwalb, PRESET_NAMES, propose, resizeImage, slic,
} from '../stages/proposals/index.js';

const FIXTURES = join(process.cwd(), 'test/fixtures/proposals/images');
const IMAGES = ['astronaut', 'coffee', 'scene2'];

async function main(): Promise<void> {
  const outDir = process.argv[2] ?? 'proposal-pictures';
  mkdirSync(outDir, { recursive: true });
  for (const name of IMAGES) {
    const image = await decodeImage(readFileSync(join(FIXTURES, `${name}.png`)));
    for (const preset of PRESET_NAMES) {
      const out = await propose(image, preset, { seed: 0, key: name });
      writeFileSync(join(outDir, `${name}-${preset}.png`), await drawProposals(image, out.boxes, { max: 50 }));
      if (out.segments) {
        const atSize = out.segments.width === image.width && out.segments.height === image.height;
        const base = atSize ? image : await resizeImage(image, out.segments.width, out.segments.height);
        writeFileSync(join(outDir, `${name}-${preset}-segments.png`), await drawSegmentBoundaries(base, out.segments));
      }
    }
    writeFileSync(join(outDir, `${name}-fh-skimage-100.png`), await drawSegmentBoundaries(image, felzenszwalb(image, { scale: 100 })));
    writeFileSync(join(outDir, `${name}-slic-100.png`), await drawSegmentBoundaries(image, slic(image, { nSegments: 100 })));
  }
  console.log(`pictures written to ${outDir}`);
}

await main();
