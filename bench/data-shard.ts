/**
 * Sharding throughput: the data stage turning a COCO-layout folder into WebDataset shards,
 * against plain `tar -cf` of the same files (measured in the same run). The sharder does more
 * than tar: it decodes every image to catch corrupt files, validates annotations, rasterises
 * masks to RLE, shuffles and hashes every shard, so the ratio is the price of those checks.
 * Also reported: the synthetic source end to end (render + PNG encode + shard).
 *
 * Usage: npm run bench -- data-shard [--images N] [--size tiny|small]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localContext, runStage } from '../core/stage.js';
import { FileArtifactStore } from '../core/store/index.js';
import { shardStage, writeSyntheticCoco, type ShardConfig } from '../stages/data/index.js';

function arg(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

export async function main(args: string[]) {
  const images = Number(arg(args, 'images', '1500'));
  const size = arg(args, 'size', 'small') as 'tiny' | 'small';
  const work = mkdtempSync(join(tmpdir(), 'densepipe-bench-shard-'));
  try {
    const paths = await writeSyntheticCoco(join(work, 'coco'), size, 0, { limitPerSplit: images });
    const du = spawnSync('du', ['-sb', join(work, 'coco')], { encoding: 'utf8' });
    const sourceBytes = Number(du.stdout.split('\t')[0]);
    const total = spawnSync('sh', ['-c', `find ${join(work, 'coco', 'images')} -type f | wc -l`], { encoding: 'utf8' });
    const files = Number(total.stdout.trim());

    const ours: number[] = [];
    const tar: number[] = [];
    for (let rep = 0; rep < 3; rep++) {
      // Alternate the two so background load hits both alike.
      const store = new FileArtifactStore(join(work, `store-${rep}`));
      const t0 = performance.now();
      await runStage(shardStage, localContext(store), {}, { source: { kind: 'coco', ...paths }, shardSamples: 256 } as ShardConfig);
      ours.push((performance.now() - t0) / 1000);
      const t1 = performance.now();
      const r = spawnSync('tar', ['-cf', join(work, `plain-${rep}.tar`), '-C', join(work, 'coco'), '.']);
      if (r.status !== 0) throw new Error(`tar failed: ${r.stderr}`);
      tar.push((performance.now() - t1) / 1000);
    }

    const synthStore = new FileArtifactStore(join(work, 'synth'));
    const t2 = performance.now();
    const synth = await runStage(shardStage, localContext(synthStore), {}, { source: { kind: 'synthetic', size, seed: 0 }, shardSamples: 256 } as ShardConfig);
    const synthSeconds = (performance.now() - t2) / 1000;
    const synthImages = Object.values(synth.ref.result.splits).reduce((n, s) => n + s.samples, 0);

    const oursS = median(ours), tarS = median(tar);
    return {
      name: 'data-shard',
      rows: [
        {
          case: `coco folder -> shards (${files} images, ${size})`,
          ours: { seconds: oursS, imagesPerSecond: files / oursS, MBPerSecond: sourceBytes / 1e6 / oursS },
          reference: { seconds: tarS, imagesPerSecond: files / tarS, MBPerSecond: sourceBytes / 1e6 / tarS },
          speedup: tarS / oursS,
        },
        {
          case: `synthetic ${size} render + encode + shard`,
          ours: { seconds: synthSeconds, imagesPerSecond: synthImages / synthSeconds },
          reference: null,
          speedup: null,
        },
      ],
      notes: [
        'reference = plain `tar -cf` of the same image and annotation files (no decoding, no validation, no hashing)',
        'ours decodes every image (corrupt-file check), validates annotations, shuffles, packs and sha256-hashes shards',
        'median of 3 alternating runs; concurrency 4 item loads in flight; sharp uses its own thread pool',
      ],
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
