// FCOS detection timings on the built-in shapes-clutter 'tiny' benchmark (64 px, 96 train / 16 val
// images, 2-5 objects of 8 classes): one evaluation-stage run per mode, reporting seconds per
// fine-tuning epoch, eval images/s (backbone + head + post-processing [+ masks]) and the COCO box
// (and, with masks, segm) metrics.
// Usage: npm run bench -- detection [epochs] [arch]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localContext, runStage } from '../core/stage.js';
import { FileArtifactStore } from '../core/store/index.js';
import { initBackend } from '../core/tf.js';
import { shardConfigSchema, shardStage } from '../stages/data/index.js';
import { evaluationConfigSchema, evaluationStage } from '../stages/downstream/index.js';
import type { BenchResult, BenchRow } from './_run.js';

export async function main(args: string[]): Promise<BenchResult> {
  const info = await initBackend('tensorflow');
  const epochs = Number(args[0] ?? 12);
  const arch = args[1] ?? 'resnet18-w16-cifar';
  const dir = mkdtempSync(join(tmpdir(), 'bench-detection-'));
  const rows: BenchRow[] = [];
  try {
    const store = new FileArtifactStore(dir);
    const quiet = () => localContext(store);
    const shards = await runStage(shardStage, quiet(), {}, shardConfigSchema.parse({ source: { kind: 'synthetic', size: 'tiny', seed: 0 } }));
    const dataset = { stage: 'dataset', hash: shards.ref.hash, manifestKey: shards.ref.result.datasetManifestKey, result: shards.ref.result };
    const runs = [
      { name: 'finetune', detection: { mode: 'finetune' } },
      { name: 'frozen', detection: { mode: 'frozen' } },
      { name: 'finetune + masks', detection: { mode: 'finetune', masks: true } },
    ];
    for (const { name: mode, detection } of runs) {
      const cfg = evaluationConfigSchema.parse({ tasks: ['detection'], imageSize: 64, backbone: { arch }, detection: { ...detection, epochs } });
      const t0 = performance.now();
      const { ref } = await runStage(evaluationStage, quiet(), { dataset, backbone: null }, cfg);
      const m = ref.result.metrics;
      const pick = Object.fromEntries(Object.entries(m).filter(([k]) => k.startsWith('det.') || k.startsWith('mask.') || k.startsWith('eval.')));
      rows.push({ case: `detection ${mode} (${epochs} epochs)`, ours: { totalSeconds: (performance.now() - t0) / 1000, ...pick } });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { name: 'detection', rows, notes: [`backend ${info.backend} ${info.tensorflowVersion ?? ''}`, `shapes-clutter tiny (seed 0), 64x64, ${arch} random init, detection config defaults`] };
}
