import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { parseDocument } from 'yaml';
import { digest } from './hash.js';
import { BadInputError } from './errors.js';
import { hasUserInfo } from './redact.js';
import { shardConfigSchema } from '../stages/data/index.js';
import { proposalConfigSchema, resolveRecipe } from '../stages/proposals/index.js';
import { BACKBONE_FAMILIES, pretrainConfigSchema } from '../stages/pretrain/config.js';
import { isMethodName, methodModule } from '../stages/methods/index.js';
import { evaluationConfigSchema } from '../stages/downstream/index.js';

export const storeConfigSchema = z
  .object({
    /** `s3://bucket/prefix` or `file:///path`. */
    uri: z.string().regex(/^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.+)$/, 'an s3://bucket/prefix or file:///path URI').default('s3://densepipe/artifacts'),
    /**
     * S3-compatible endpoint; unset means the local server from `densepipe up`, or AWS. Credentials
     * may not be written into it: the config travels in the workflow history and error messages.
     */
    endpoint: z
      .url()
      .refine((url) => !hasUserInfo(url), {
        message: 'holds a user name or password (scheme://user:pass@host); the run config is kept in the workflow history, so give credentials through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE on the workers instead',
      })
      .optional(),
    region: z.string().optional(),
    createBucket: z.boolean().default(true),
  })
  .strict();

export const orchestrationConfigSchema = z
  .object({
    /** How long a silent activity may go before Temporal retries it elsewhere (a killed worker's work). */
    heartbeatTimeoutSeconds: z.number().int().min(2).max(3600).default(60),
  })
  .strict();

export const baselinesConfigSchema = z
  .object({
    /** Also train the same backbone with the labels (same data and budget) and evaluate it. */
    supervised: z.boolean().default(true),
  })
  .strict();

export const runConfigSchema = z
  .object({
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lower-case letters, digits, - and _ (at most 63)')
      .default('run'),
    description: z.string().optional(),
    store: storeConfigSchema.prefault({}),
    data: shardConfigSchema.prefault({}),
    /** `enabled: false` skips the stage; a method that reads proposals (docs/methods/) needs it. */
    proposals: proposalConfigSchema.extend({ enabled: z.boolean().default(true) }).prefault({}),
    pretrain: pretrainConfigSchema.prefault({}),
    evaluation: evaluationConfigSchema.prefault({}),
    baselines: baselinesConfigSchema.prefault({}),
    orchestration: orchestrationConfigSchema.prefault({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    // A method that reads proposals needs the stage on, and region masks need a preset that keeps them.
    const needs = methodModule(config.pretrain.method).consumes.proposals;
    if (!needs) return;
    const method = config.pretrain.method;
    if (!config.proposals.enabled) {
      ctx.addIssue({ code: 'custom', path: ['proposals', 'enabled'], message: `pretrain.method '${method}' reads ${needs.kind === 'regions' ? 'region masks' : 'proposal boxes'}: proposals.enabled must be true` });
    } else if (needs.kind === 'regions' && !resolveRecipe(config.proposals).segments) {
      ctx.addIssue({ code: 'custom', path: ['proposals', 'preset'], message: `pretrain.method '${method}' reads region masks: proposals.preset '${config.proposals.preset}' keeps no label maps (choose one with segments, e.g. r2o)` });
    }
  });

export type RunConfig = z.infer<typeof runConfigSchema>;
export type StoreConfig = z.infer<typeof storeConfigSchema>;

export class ConfigError extends BadInputError {
  override readonly name = 'ConfigError' as 'BadInputError';
}

/** One line per problem: `file: pretrain.batchSize: expected number, got "32x"`. */
export function describeZodError(error: z.ZodError, source: string): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.length ? issue.path.join('.') : '(top level)';
      return `${source}: ${path}: ${issue.message}`;
    })
    .join('\n');
}

/**
 * The evaluation rebuilds the backbone the pretraining trained (and a random-init one of the same
 * shape for the baseline), so its architecture follows `pretrain.backbone.arch` unless set explicitly.
 * A method of another family than ResNet (a ViT method) without `pretrain.backbone.arch` trains its
 * family's default preset, and the evaluation follows that one.
 */
function linkBackboneArch(raw: unknown): unknown {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const r = raw as { pretrain?: { method?: unknown; backbone?: { arch?: unknown } }; evaluation?: { backbone?: { arch?: unknown } } };
  const method = r.pretrain?.method;
  const family = typeof method === 'string' && isMethodName(method) ? methodModule(method).architecture : undefined;
  const arch = r.pretrain?.backbone?.arch ?? (family && family !== 'resnet' ? BACKBONE_FAMILIES[family].default : undefined);
  if (arch === undefined || r.evaluation?.backbone?.arch !== undefined) return raw;
  if (r.evaluation !== undefined && (typeof r.evaluation !== 'object' || r.evaluation === null)) return raw;
  return { ...r, evaluation: { ...(r.evaluation ?? {}), backbone: { ...(r.evaluation?.backbone ?? {}), arch } } };
}

/** DENSEPIPE_STORE (as set in the worker images) is the store for configs that name none. */
function defaultStoreFromEnv(raw: unknown): unknown {
  const uri = process.env.DENSEPIPE_STORE;
  if (!uri || !raw || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const r = raw as { store?: { uri?: unknown } };
  if (r.store !== undefined && (typeof r.store !== 'object' || r.store === null || r.store.uri !== undefined)) return raw;
  return { ...r, store: { ...(r.store ?? {}), uri } };
}

export function parseRunConfig(raw: unknown, source = 'config'): RunConfig {
  const result = runConfigSchema.safeParse(defaultStoreFromEnv(linkBackboneArch(raw ?? {})));
  if (!result.success) throw new ConfigError(`invalid config\n${describeZodError(result.error, source)}`);
  return result.data;
}

/** The hash that names a config in search attributes and reports (over the validated, defaulted config). */
export function configHash(config: RunConfig): string {
  return digest(config, 12);
}

export async function loadRunConfig(path: string, overrides: Record<string, unknown> = {}): Promise<{ config: RunConfig; hash: string; text: string }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config: ${(err as Error).message}`, path);
  }
  const js = yamlToJs(text, path);
  if (js === null || typeof js !== 'object' || Array.isArray(js)) {
    throw new ConfigError(`a config is a mapping of sections (name, data, pretrain, ...), got ${Array.isArray(js) ? 'a list' : `a ${typeof js}`}`, `${path}: (top level)`);
  }
  assertNoForbiddenKeys(js, path);
  const raw = mergeDeep(js as Record<string, unknown>, overrides);
  const config = parseRunConfig(raw, path);
  return { config, hash: configHash(config), text };
}

/**
 * A YAML document as plain data, with every problem a ConfigError naming `source`: syntax errors,
 * and alias expansion past the parser's limit (a "billion laughs" document), which the parser
 * reports by throwing from toJS.
 */
export function yamlToJs(text: string, source: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new ConfigError(`YAML syntax error: ${doc.errors[0]!.message}`, source);
  try {
    return doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    throw new ConfigError(`YAML cannot be read: ${(err as Error).message}`, source);
  }
}

/**
 * Names that reach an object's prototype instead of one of its fields. A `--set __proto__.x=1`
 * written into a plain object would change Object.prototype for the whole process.
 */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Apply `a.b.c=value` overrides from the command line onto a parsed YAML object. */
export function parseOverrides(pairs: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new ConfigError(`override ${JSON.stringify(pair)} is not KEY=VALUE (e.g. pretrain.steps=20)`);
    const path = pair.slice(0, eq).split('.');
    if (path.some((part) => part === '')) throw new ConfigError(`override ${JSON.stringify(pair.slice(0, eq))} has an empty part (write a.b.c=value)`, '--set');
    const bad = path.find((part) => FORBIDDEN_KEYS.has(part));
    if (bad !== undefined) throw new ConfigError(`override ${JSON.stringify(pair.slice(0, eq))}: '${bad}' is not a config field (it names an object's prototype)`, '--set');
    let value: unknown = pair.slice(eq + 1);
    try {
      value = JSON.parse(value as string);
    } catch {
      /* keep as string */
    }
    assertNoForbiddenKeys(value, `--set ${pair.slice(0, eq)}`);
    let node = out;
    for (const part of path.slice(0, -1)) {
      const next = Object.hasOwn(node, part) ? node[part] : undefined;
      node = (next && typeof next === 'object' && !Array.isArray(next) ? next : (node[part] = {})) as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = value;
  }
  return out;
}

/** Refuse `__proto__`, `constructor` and `prototype` keys anywhere in a parsed document (YAML or JSON). */
export function assertNoForbiddenKeys(value: unknown, where: string, path: string[] = []): void {
  if (!value || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    value.forEach((v, i) => assertNoForbiddenKeys(v, where, [...path, String(i)]));
    return;
  }
  for (const key of Object.keys(value)) {
    if (FORBIDDEN_KEYS.has(key)) throw new ConfigError(`'${key}' is not a config field (it names an object's prototype)`, `${where}: ${[...path, key].join('.')}`);
    assertNoForbiddenKeys((value as Record<string, unknown>)[key], where, [...path, key]);
  }
}

export function mergeDeep(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    if (FORBIDDEN_KEYS.has(k)) throw new ConfigError(`'${k}' is not a config field (it names an object's prototype)`, k);
    const cur = Object.hasOwn(out, k) ? out[k] : undefined;
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
      ? mergeDeep(cur as Record<string, unknown>, v as Record<string, unknown>)
      : v;
  }
  return out;
}
