/**
 * Training-reader throughput: images per second through the loader (fetch shards, shuffle,
 * decode PNG via sharp, two augmented views with geometry), and the augmentation alone per core
 * (pure single-threaded TypeScript, the hot path), at the benchmark's native size and at 224.
 *
 * Usage: npm run bench -- data-loader [--size tiny|small] [--epochs-images N]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../core/rng.js';
import { localContext, runStage } from '../core/stage.js';
import { FileArtifactStore } from '../core/store/index.js';
import {
  augmentViews,
  createTrainLoader,
  generateSyntheticImage,
  shardStage,
  SYNTHETIC_SPECS,
  viewsTransform,
  VIEW_PRESETS,
  type ShardConfig,
} from '../stages/data/index.js';

function arg(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback;
}

export async function main(args: string[]) {
  const size = arg(args, 'size', 'small') as 'tiny' | 'small';
  const limit = Number(arg(args, 'images', '2000'));
  const work = mkdtempSync(join(tmpdir(), 'densepipe-bench-loader-'));
  const rows = [];
  try {
    const store = new FileArtifactStore(work);
    const { ref } = await runStage(shardStage, localContext(store), {}, { source: { kind: 'synthetic', size, seed: 0 }, shardSamples: 256 } as ShardConfig);
    const native = SYNTHETIC_SPECS[size].imageSize;

    for (const viewSize of [native, 224]) {
      const loader = await createTrainLoader({ store, dataset: ref.result.datasetManifestKey, seed: 0, transform: viewsTransform(VIEW_PRESETS.pixpro(viewSize)) });
      let n = 0;
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      for await (const _ of loader.iterate(undefined, { untilEpoch: 1 })) if (++n >= limit) break;
      const s = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      // Process CPU time includes sharp's decode threads, so this is CPU-seconds across all cores used.
      const cpuSeconds = (cpu.user + cpu.system) / 1e6;
      rows.push({ case: `loader + 2 PixPro views @${viewSize} (${size})`, ours: { imagesPerSecond: n / s, imagesPerCpuSecond: n / cpuSeconds, images: n }, reference: null, speedup: null });
    }

    // Augmentation alone: one core, no I/O.
    const scenes = Array.from({ length: 64 }, (_, i) => generateSyntheticImage(SYNTHETIC_SPECS[size], 0, 'train', i).image);
    for (const viewSize of [native, 224]) {
      const rng = Rng.fromSeed('bench');
      let n = 0;
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      while (performance.now() - t0 < 3000) augmentViews(rng, scenes[n++ % scenes.length]!, VIEW_PRESETS.pixpro(viewSize));
      const s = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      // CPU time is what "per core" means; wall time also counts waiting for a busy machine.
      const cpuSeconds = (cpu.user + cpu.system) / 1e6;
      rows.push({
        case: `augment only, 2 views @${viewSize}, 1 core`,
        ours: { imagesPerSecond: n / s, imagesPerCpuSecond: n / cpuSeconds, cpuMsPerImage: (1000 * cpuSeconds) / n },
        reference: null,
        speedup: null,
      });
    }
    return {
      name: 'data-loader',
      rows,
      notes: [
        'PixPro recipe: RRC scale (0.08, 1) bilinear, flip, colour jitter p0.8, grayscale p0.2, blur (p1 / p0.1), solarize (p0 / p0.2)',
        'loader: shuffle buffer 256, 2 shards prefetched, 8 samples decoded ahead, sha256 verified per shard',
        'the augmentation runs on the main thread; sharp decodes on its own thread pool',
      ],
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
