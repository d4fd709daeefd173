/**
 * Suite configs: a named set of small reproductions (methods × datasets × seeds, with one list of
 * evaluation tasks) that a nightly schedule runs and compares with a promoted baseline.
 * Pure (no Temporal, no store): the CLI validates and expands a suite before anything starts, and
 * the schedule's action carries the expanded members, so a nightly runs exactly what was scheduled.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { assertNoForbiddenKeys, ConfigError, configHash, describeZodError, mergeDeep, parseRunConfig, yamlToJs, type RunConfig } from '../../core/config.js';
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
  detr: ['detr.AP', 'detr.AP50'],
  pairdetr: ['pairdetr.AP', 'pairdetr.AP50'],
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

/**
 * A webhook URL is a credential (whoever holds a Slack-style URL can post to the channel), and the
 * suite travels in the workflow history, the schedule and the report. So the suite names the cpu
 * worker's environment variable that holds the URL, and only the delivery activity reads it.
 */
export const webhookSchema = z.strictObject({
  /** Environment variable of the cpu worker holding the URL (e.g. DENSEPIPE_WEBHOOK_URL). */
  urlEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an environment variable name (letters, digits and _, not starting with a digit)'),
  /** Per attempt; a webhook that never answers costs at most attempts × this. */
  timeoutSeconds: z.number().positive().max(300).default(10),
  maxAttempts: z.number().int().min(1).max(20).default(3),
});

/** `webhook.url` is refused with the reason, and without repeating the URL. */
function refuseLiteralWebhookUrl(raw: unknown, ctx: z.RefinementCtx): unknown {
  const hook = raw && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>).webhook : undefined;
  if (!hook || typeof hook !== 'object' || Array.isArray(hook) || !('url' in hook)) return raw;
  ctx.addIssue({
    code: 'custom',
    path: ['webhook', 'url'],
    message:
      'a webhook URL is a secret and the suite is kept in the workflow history and the schedule: set it in an environment variable of the cpu worker and name that variable in webhook.urlEnv',
  });
  const { url: _dropped, ...rest } = hook as Record<string, unknown>;
  return { ...(raw as Record<string, unknown>), webhook: rest };
}
export type WebhookConfig = z.infer<typeof webhookSchema>;

const suiteObjectSchema = z.strictObject({
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
export const suiteConfigSchema = z.preprocess(refuseLiteralWebhookUrl, suiteObjectSchema);
export type SuiteConfigInput = z.input<typeof suiteObjectSchema>;

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
  const raw = yamlToJs(text, path);
  assertNoForbiddenKeys(raw, path);
  return parseSuite(raw, path);
}
