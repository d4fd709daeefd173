/**
 * An evaluation repeated over seeds, to show how much of a difference between two backbones is
 * evaluation noise. Each seed is a complete evaluation with its own output folder (`seed-<s>/`) and
 * its own checkpoints, so a retried activity resumes inside the seed it stopped in and keeps the
 * finished ones. What a seed changes: the trained heads' initialisation and data order, k-means'
 * initialisation, the label subset, and, for the random-init baseline, the backbone's own
 * initialisation. It does not change a pretrained backbone (pretraining ran once), so the spread of
 * a pretrained backbone's numbers is the evaluation's noise only.
 * TensorBoard: each seed's event files are also copied to `<prefix>/tensorboard/seed-<s>/`, where
 * `densepipe tensorboard` looks, so each seed shows as its own run.
 */
import { isDiagnosticMetric } from '../../core/metrics.js';
import { checkpointIO, type StageRunContext } from '../../core/stage.js';
import { joinKey, putJson } from '../../core/store/index.js';
import { tensorboardPrefix } from '../../core/tfevents.js';

/** Per-seed values of every quality metric, in `seeds` order. */
export interface SeedMetrics {
  seeds: number[];
  metrics: Record<string, number[]>;
}

export interface RepeatableResult {
  metrics: Record<string, number>;
  metricsKey: string;
  perClassKey?: string;
  predictionsKey?: string;
}

/** `seed`, `seed + 1`, … (`repeats` of them). */
export function repeatSeeds(seed: number, repeats: number): number[] {
  return Array.from({ length: repeats }, (_, i) => seed + i);
}

/**
 * Run `once` for each seed in a sub-context and combine: `metrics` are the means over the seeds
 * (so a repeated evaluation compares with a single one), `seedMetrics` the per-seed values of the
 * quality metrics; per-class scores and predictions are the first seed's.
 */
export async function runOverSeeds<R extends RepeatableResult>(
  ctx: StageRunContext,
  seeds: number[],
  once: (ctx: StageRunContext, seed: number) => Promise<R>,
): Promise<R & { seedMetrics: SeedMetrics }> {
  const results: R[] = [];
  for (const [i, seed] of seeds.entries()) {
    const sub = `seed-${seed}`;
    const prefix = `seed ${seed} (${i + 1}/${seeds.length})`;
    results.push(
      await once(
        {
          ...ctx,
          outputPrefix: joinKey(ctx.outputPrefix, sub),
          checkpoints: checkpointIO(ctx.store, joinKey(ctx.checkpoints.prefix, sub)),
          progress: (u) => ctx.progress({ ...u, fraction: u.fraction === undefined ? undefined : (i + u.fraction) / seeds.length, message: `${prefix}: ${u.message ?? ''}` }),
          log: (m) => ctx.log(`${prefix}: ${m}`),
        },
        seed,
      ),
    );
    const events = `${tensorboardPrefix(joinKey(ctx.outputPrefix, sub))}/`;
    for (const key of await ctx.store.list(events)) {
      await ctx.store.put(joinKey(tensorboardPrefix(ctx.outputPrefix), sub, key.slice(events.length)), await ctx.store.get(key));
    }
  }
  const names = [...new Set(results.flatMap((r) => Object.keys(r.metrics)))].sort();
  const metrics: Record<string, number> = {};
  const perSeed: Record<string, number[]> = {};
  for (const name of names) {
    const values = results.map((r) => r.metrics[name]).filter((v): v is number => Number.isFinite(v));
    if (values.length === 0) continue;
    metrics[name] = values.reduce((a, b) => a + b, 0) / values.length;
    if (!isDiagnosticMetric(name) && values.length === results.length) perSeed[name] = values;
  }
  metrics['eval.repeats'] = seeds.length;
  const seedMetrics: SeedMetrics = { seeds, metrics: perSeed };
  const metricsKey = joinKey(ctx.outputPrefix, 'metrics.json');
  await putJson(ctx.store, metricsKey, { schema: 'densepipe.evaluation-seeds/v1', seeds, metrics, perSeed, seedMetricsKeys: results.map((r) => r.metricsKey) });
  return { ...results[0]!, metrics, metricsKey, seedMetrics };
}

/** Mean and sample standard deviation (0 for a single value). */
export function meanStd(values: number[]): { mean: number; std: number; n: number } {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / Math.max(n, 1);
  const std = n < 2 ? 0 : Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  return { mean, std, n };
}
