// Downstream evaluation timings: one evaluation stage run per mode on a squares dataset (64 px,
// resnet18-w16-cifar), reporting seconds per fine-tuning epoch and evaluation throughput, plus
// cocoEvaluate on the largest pycocotools fixture scene. Usage: npm run bench -- downstream [train] [val]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localContext, runStage } from '../core/stage.js';
import { FileArtifactStore } from '../core/store/index.js';
import { initBackend } from '../core/tf.js';
import { cocoEvaluate, evaluationConfigSchema, evaluationStage, fromCocoRle } from '../stages/downstream/index.js';
import { writeSquaresDataset } from '../test/downstream/squares-dataset.js';
import type { BenchResult, BenchRow } from './_run.js';

export async function main(args: string[]): Promise<BenchResult> {
  const info = await initBackend('tensorflow');
  const nTrain = Number(args[0] ?? 256);
  const nVal = Number(args[1] ?? 128);
  const dir = mkdtempSync(join(tmpdir(), 'bench-downstream-'));
  const rows: BenchRow[] = [];
  try {
    const dataStore = new FileArtifactStore(join(dir, 'data'));
    const dataset = await writeSquaresDataset(dataStore, { size: 64, train: nTrain, val: nVal, seed: 'bench' });
    const runs: Array<[string, Record<string, unknown>]> = [
      ['knn+linear+unsup-seg (frozen)', { tasks: ['knn', 'linear', 'unsup-seg'], linear: { epochs: 5 } }],
      ['semseg frozen', { tasks: ['semseg'], semseg: { mode: 'frozen', epochs: 3 } }],
      ['semseg finetune', { tasks: ['semseg'], semseg: { mode: 'finetune', epochs: 2 } }],
      ['linear, 10% labels', { tasks: ['linear'], labelFraction: 0.1, linear: { epochs: 5 } }],
    ];
    for (const [name, over] of runs) {
      const store = new FileArtifactStore(join(dir, name.replace(/[^a-z0-9]+/gi, '-')));
      for (const key of await dataStore.list('datasets/')) await store.put(key, await dataStore.get(key));
      const cfg = evaluationConfigSchema.parse({ imageSize: 64, backbone: { arch: 'resnet18-w16-cifar' }, ...over });
      const t0 = performance.now();
      const { ref } = await runStage(evaluationStage, localContext(store), { dataset, backbone: null }, cfg);
      const m = ref.result.metrics;
      rows.push({ case: name, ours: { totalSeconds: (performance.now() - t0) / 1000, ...m } });
    }
    const fixture = JSON.parse(readFileSync(new URL('../test/fixtures/downstream/coco-eval.json', import.meta.url), 'utf8'));
    for (const scene of fixture.scenes.filter((s: { name: string }) => ['boxes-many-detections-with-ties', 'masks-with-boxes-and-crowd'].includes(s.name))) {
      const input = {
        iouType: scene.iouType,
        imageIds: scene.imageIds,
        categoryIds: scene.categoryIds,
        groundTruth: scene.groundTruth.map((g: any) => ({ ...g, segmentation: g.segmentation && fromCocoRle(g.segmentation) })),
        detections: scene.detections.map((d: any) => ({ ...d, segmentation: d.segmentation && fromCocoRle(d.segmentation) })),
      };
      const reps = 20;
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) cocoEvaluate(input);
      rows.push({ case: `cocoEvaluate ${scene.name}`, ours: { msPerEvaluation: (performance.now() - t0) / reps, detections: scene.detections.length } });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { name: 'downstream', rows, notes: [`backend ${info.backend} ${info.tensorflowVersion ?? ''}`, `${nTrain} train / ${nVal} val images, 64x64, resnet18-w16-cifar, random init`] };
}
