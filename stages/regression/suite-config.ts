/**
 * Suite configs: a named set of small reproductions (methods × datasets × seeds, with one list of
 * evaluation tasks) that a nightly schedule runs and compares with a promoted baseline.
 * Pure (no Temporal, no store): the CLI validates and expands a suite before anything starts, and
 * the schedule's action carries the expanded members, so a nightly runs exactly what was scheduled.
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { ConfigError, configHash, describeZodError, mergeDeep, parseRunConfig, type RunConfig } from '../../core/config.js';
import { digest } from '../../core/hash.js';
import { METHOD_NAMES } from '../methods/index.js';
import { EVALUATION_TASKS, type EvaluationTask } from '../downstream/index.js';

export const SUITE_METHODS = METHOD_NAMES;

/** The built-in benchmark at its three scales; a dataset name maps to `data.source`. */
export const SUITE_DATASETS = {
  'synthetic-tiny': { kind: 'synthetic', size: 'tiny', seed: 0 },
  'synthetic-small': { kind: 'synthetic', size: 'small', seed: 0 },
  'synthetic-full': { kind: 'synthetic', size: 'full', seed: 0 },
} as const;
export type SuiteDataset = keyof typeof SUITE_DATASETS;

/**
 * The quality metrics each evaluation task reports (core/metrics.ts keeps throughput and losses
 * apart; those are never compared). All of them are higher-is-better.
 */
export const QUALITY_METRICS_BY_TASK: Record<EvaluationTask, readonly string[]> = {
  knn: ['knn.top1'],
  linear: ['linear.top1'],
  semseg: ['semseg.mIoU', 'semseg.pixelAccuracy', 'semseg.meanAccuracy'],
  'unsup-seg': ['unsup-seg.mIoU'],
  detection: ['detection.bboxAP', 'detection.bboxAP50'],
};

export const noiseBandSchema = z.strictObject({
  /** Half-width of the band in pooled seed standard deviations. */
  k: z.number().positive().default(2),
  /** Smallest half-width: below this, a difference is never called (metric quantisation, tiny eval sets). */
  absoluteFloor: z.number().min(0).default(0.02),
  /** Fewer seeds than this on either side gives an inconclusive verdict. */
  minSeeds: z.number().int().min(1).default(2),
});
export type NoiseBand = z.infer<typeof noiseBandSchema>;

export const webhookSchema = z.strictObject({
  url: z.url(),
  /** Per attempt; a webhook that never answers costs at most attempts × this. */
  timeoutSeconds: z.number().positive().max(300).default(10),
  maxAttempts: z.number().int().min(1).max(20).default(3),
});
export type WebhookConfig = z.infer<typeof webhookSchema>;

export const suiteConfigSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,40}$/, 'lower-case letters, digits, - and _ (at most 41)'),
  description: z.string().optional(),
  /** Run-config fields shared by every member (same schema as a run config; method, seed, tasks and data source are set per member). */
  base: z.record(z.string(), z.unknown()).default({}),
  methods: z.array(z.string()).min(1),
  /** Each method's own arguments (`pretrain.args` of its members), e.g. `{ densecl: { queueSize: 1024 } }`. */
  methodArgs: z.record(z.string(), z.record(z.string(), z.unknown())).default({}),
  datasets: z.array(z.string()).min(1).default(['synthetic-tiny']),
  seeds: z.array(z.number().int().min(0)).min(1),
  tasks: z.array(z.string()).min(1),
  /** Quality metrics compared with the baseline; default: every quality metric of the tasks. */
  metrics: z.array(z.string()).optional(),
  /** At most this many member runs at a time. */
  fanOut: z.number().int().min(1).max(64).default(2),
  noise: noiseBandSchema.prefault({}),
  /** Trend plots cover this many most recent nightly runs. */
  trendRuns: z.number().int().min(2).max(365).default(14),
  webhook: webhookSchema.optional(),
});
export type SuiteConfigInput = z.input<typeof suiteConfigSchema>;

export interface SuiteMember {
  /** `<method>-<dataset>-s<seed>`: unique in the suite, used in child workflow ids. */
  id: string;
  /** What seeds are pooled over: the member minus its seed. */
  series: string;
  method: string;
  dataset: SuiteDataset;
  seed: number;
  config: RunConfig;
  configHash: string;
}

/** A validated suite with its members expanded: what the schedule and the suite workflow carry. */
export interface Suite {
  name: string;
  description?: string;
  /** Hash of everything that defines the suite's results except the seeds list. */
  suiteHash: string;
  store: RunConfig['store'];
  tasks: EvaluationTask[];
  metrics: string[];
  members: SuiteMember[];
  fanOut: number;
  noise: NoiseBand;
  trendRuns: number;
  webhook?: WebhookConfig;
}

export const seriesName = (method: string, dataset: string) => `${method}@${dataset}`;

function fail(source: string, field: string, message: string): never {
  throw new ConfigError(`invalid suite\n${source}: ${field}: ${message}`);
}

export function parseSuite(raw: unknown, source = 'suite'): Suite {
  const parsed = suiteConfigSchema.safeParse(raw ?? {});
  if (!parsed.success) throw new ConfigError(`invalid suite\n${describeZodError(parsed.error, source)}`);
  const s = parsed.data;
  s.methods.forEach((m, i) => {
    if (!(SUITE_METHODS as readonly string[]).includes(m)) fail(source, `methods.${i}`, `unknown method '${m}' (known: ${SUITE_METHODS.join(', ')})`);
  });
  for (const m of Object.keys(s.methodArgs)) {
    if (!s.methods.includes(m)) fail(source, `methodArgs.${m}`, `'${m}' is not one of this suite's methods (${s.methods.join(', ')})`);
  }
  s.datasets.forEach((d, i) => {
    if (!(d in SUITE_DATASETS)) fail(source, `datasets.${i}`, `unknown dataset '${d}' (known: ${Object.keys(SUITE_DATASETS).join(', ')})`);
  });
  s.tasks.forEach((t, i) => {
    if (!(EVALUATION_TASKS as readonly string[]).includes(t)) fail(source, `tasks.${i}`, `unknown task '${t}' (known: ${EVALUATION_TASKS.join(', ')})`);
  });
  if (new Set(s.seeds).size !== s.seeds.length) fail(source, 'seeds', `seeds repeat (${s.seeds.join(', ')}); each seed is one sample of the noise`);
  const tasks = [...new Set(s.tasks)] as EvaluationTask[];
  const available = tasks.flatMap((t) => QUALITY_METRICS_BY_TASK[t]);
  const metrics = s.metrics ?? available;
  metrics.forEach((m, i) => {
    if (!available.includes(m)) fail(source, `metrics.${i}`, `unknown metric '${m}' for tasks ${tasks.join(', ')} (known: ${available.join(', ')})`);
  });
  for (const key of ['name', 'data.source', 'pretrain.method', 'pretrain.seed', 'pretrain.args', 'evaluation.tasks']) {
    const [a, b] = key.split('.') as [string, string | undefined];
    const node = s.base[a] as Record<string, unknown> | undefined;
    if (b === undefined ? node !== undefined : node && typeof node === 'object' && b in node) {
      fail(source, `base.${key}`, 'is set per member by the suite (use methods, methodArgs, datasets, seeds, tasks); remove it from base');
    }
  }

  const members: SuiteMember[] = [];
  for (const method of s.methods) {
    for (const dataset of s.datasets as SuiteDataset[]) {
      for (const seed of s.seeds) {
        const id = `${method}-${dataset}-s${seed}`;
        const raw = mergeDeep(s.base, {
          name: `${s.name}-${id}`.slice(0, 63),
          data: { source: SUITE_DATASETS[dataset] },
          pretrain: { method, seed, args: s.methodArgs[method] ?? {} },
          evaluation: { tasks },
        });
        // The source names `base`: that is where a member's run-config fields come from.
        const config = parseRunConfig(raw, `${source}: base (member ${id})`);
        members.push({ id, series: seriesName(method, dataset), method, dataset, seed, config, configHash: configHash(config) });
      }
    }
  }
  const store = members[0]!.config.store;
  // Seeds are excluded: adding a seed refines the noise estimate without making the suite another suite.
  const suiteHash = digest({ name: s.name, base: s.base, methods: s.methods, ...(Object.keys(s.methodArgs).length ? { methodArgs: s.methodArgs } : {}), datasets: s.datasets, tasks, metrics }, 12);
  return { name: s.name, description: s.description, suiteHash, store, tasks, metrics, members, fanOut: s.fanOut, noise: s.noise, trendRuns: s.trendRuns, webhook: s.webhook };
}

export async function loadSuite(path: string): Promise<Suite> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read suite config: ${(err as Error).message}`, path);
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new ConfigError(`YAML syntax error: ${doc.errors[0]!.message}`, path);
  return parseSuite(doc.toJS(), path);
}
