// Shared by the experiment benches (global-vs-dense, planted-regression): run the real stages
// without Temporal against one FileArtifactStore. The store is content-addressed, so a second run
// of a bench with the same configs reuses every finished shard, pretraining and evaluation; that is
// what lets an interrupted 20-minute experiment be continued instead of restarted.
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRunConfig, type RunConfig } from '../core/config.js';
import { getJson } from '../core/store/index.js';
import { localContext, runStage, type StageRef } from '../core/stage.js';
import { FileArtifactStore } from '../core/store/index.js';
import { shardStage, type ShardResult } from '../stages/data/index.js';
import type { ProposalResult } from '../stages/proposals/index.js';
import { evaluationStage, type EvaluationConfig, type EvaluationResult } from '../stages/downstream/index.js';
import { pretrainStage, type LossPoint, type PretrainConfig, type PretrainResult } from '../stages/pretrain/index.js';

/** DENSEPIPE_EXPERIMENT_CACHE, or a fixed folder under the OS temp dir, so re-runs hit the cache. */
export function experimentStore(name: string): FileArtifactStore {
  const root = process.env.DENSEPIPE_EXPERIMENT_CACHE ?? join(tmpdir(), 'densepipe-experiments');
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  return new FileArtifactStore(dir);
}

export interface TimedRef<O> {
  ref: StageRef<O>;
  cached: boolean;
  seconds: number;
}

async function timed<O>(run: () => Promise<{ ref: StageRef<O>; cached: boolean }>): Promise<TimedRef<O>> {
  const t0 = performance.now();
  const { ref, cached } = await run();
  return { ref, cached, seconds: (performance.now() - t0) / 1000 };
}

export function shard(store: FileArtifactStore, data: RunConfig['data']): Promise<TimedRef<ShardResult>> {
  return timed(() => runStage(shardStage, localContext(store), {}, data));
}

export function pretrain(store: FileArtifactStore, dataset: StageRef<ShardResult>, config: PretrainConfig, proposals: StageRef<ProposalResult>[] = []): Promise<TimedRef<PretrainResult>> {
  return timed(() => runStage(pretrainStage, localContext(store), { dataset, proposals }, config));
}

/** `backbone: null` evaluates a random-init backbone of the evaluation's architecture (seeded by `config.seed`). */
export function evaluate(store: FileArtifactStore, dataset: StageRef<ShardResult>, backbone: StageRef<PretrainResult> | null, config: EvaluationConfig): Promise<TimedRef<EvaluationResult>> {
  return timed(() => runStage(evaluationStage, localContext(store), { dataset, backbone }, config));
}

export async function lossCurve(store: FileArtifactStore, result: PretrainResult): Promise<LossPoint[]> {
  return (await getJson<{ points: LossPoint[] }>(store, result.lossCurveKey)).points;
}

/** A run config through the real parser, so every default is the one a `densepipe run` would get. */
export function runConfig(raw: Record<string, unknown>, source: string): RunConfig {
  return parseRunConfig(raw, source);
}

export function meanStd(xs: number[]): { mean: number; std: number; n: number } {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1));
  return { mean, std, n };
}

/** Progress on stderr with a wall-clock stamp: these benches run for many minutes. */
export function say(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}
