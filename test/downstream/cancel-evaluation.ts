// Shared by the evaluation-stage tests that kill a run mid-training and resume it.
import { expect } from 'vitest';
import { localContext, runStage } from '../../core/stage.js';
import { getJson, type ArtifactStore } from '../../core/store/index.js';
import { evaluationStage, type EvaluationConfig } from '../../stages/downstream/index.js';

type EvaluationInputs = Parameters<typeof evaluationStage.run>[1];

/**
 * Runs the evaluation stage on `store`, aborts it when it reports the progress message `abortAt`
 * (as a cancelled activity would be), checks that it ends as cancelled, and returns the meta of the
 * epoch checkpoint it left (undefined when it left none).
 */
export async function cancelEvaluationAt(store: ArtifactStore, inputs: EvaluationInputs, cfg: EvaluationConfig, abortAt: string): Promise<{ task: string; epoch: number } | undefined> {
  const controller = new AbortController();
  const ctx = localContext(store, {
    signal: controller.signal,
    onProgress: (u) => {
      if (u.message === abortAt) controller.abort('test kill');
    },
  });
  await expect(runStage(evaluationStage, ctx, inputs, cfg)).rejects.toThrow(/cancelled/);
  const pointer = (await store.list('checkpoints/evaluate/')).find((k) => k.endsWith('latest.json'));
  return pointer === undefined ? undefined : (await getJson<{ meta: { task: string; epoch: number } }>(store, pointer)).meta;
}
