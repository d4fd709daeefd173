import { digest } from './hash.js';
import { ArtifactNotFoundError, getJson, joinKey, putJson, type ArtifactStore } from './store/index.js';
import { throwIfAborted } from './errors.js';

/** A progress report. Activities forward it as a heartbeat; the CLI draws it as a bar. */
export interface ProgressUpdate {
  /** Completed fraction in [0, 1]. */
  fraction?: number;
  step?: number;
  total?: number;
  message?: string;
  /** Small live metrics (loss, lr, images/s). */
  metrics?: Record<string, number>;
}

/** What every stage gets from its caller (a test, the CLI, or a Temporal activity). */
export interface StageContext {
  store: ArtifactStore;
  signal: AbortSignal;
  progress(update: ProgressUpdate): void;
  log(message: string): void;
  /** 1 on the first try; activities pass Temporal's attempt number. */
  attempt: number;
}

/** Durable checkpoints of one stage output, in the store beside it. */
export interface CheckpointIO {
  readonly prefix: string;
  /** The newest complete checkpoint, or null. */
  latest(): Promise<Checkpoint | null>;
  /** Write the files, then the pointer; older checkpoints beyond `keep` are deleted. */
  save(step: number, files: Record<string, Uint8Array | string>, meta?: Record<string, unknown>): Promise<void>;
}

export interface Checkpoint {
  step: number;
  meta: Record<string, unknown>;
  files: string[];
  read(name: string): Promise<Uint8Array>;
}

export interface StageRunContext extends StageContext {
  /** Content-address of this output; objects go under `outputPrefix`. */
  hash: string;
  outputPrefix: string;
  checkpoints: CheckpointIO;
}

/**
 * One stage of the pipeline. `run` must be a pure function of (inputs, keyConfig(config)) up to
 * seeded randomness: that is what makes its output safe to reuse by key.
 */
export interface Stage<I, C, O> {
  readonly name: string;
  /** Bump when the stage's code changes what it writes; it invalidates every cached output. */
  readonly version: string;
  /** The part of the config that decides the output (default: all of it). */
  keyConfig?(config: C): unknown;
  /**
   * What the key needs that only IO can tell (a content fingerprint of the files the config names).
   * Awaited by runStage before the key is computed; must read without blocking the event loop, so
   * heartbeats and cancellation go on while it runs. `undefined` adds nothing to the key.
   */
  keyContent?(config: C, signal: AbortSignal): Promise<unknown>;
  /** The part of the inputs that decides the output (default: all of them), e.g. proposals only for a method that reads them. */
  keyInputs?(inputs: I, config: C): unknown;
  /** Validate inputs and config before anything runs; throw BadInputError naming the field. */
  validate?(inputs: I, config: C): void;
  run(ctx: StageRunContext, inputs: I, config: C): Promise<O>;
}

/** A stage output as passed between stages and through Temporal: small, JSON, a reference. */
export interface StageRef<O = unknown> {
  stage: string;
  hash: string;
  /** Store key of the manifest (the proof the output exists). */
  manifestKey: string;
  /** The stage's own small result (S3 keys, counts, metrics), copied from the manifest. */
  result: O;
}

export interface StageManifest<O = unknown> {
  schema: 'densepipe.stage-manifest/v1';
  stage: string;
  version: string;
  hash: string;
  keyConfig: unknown;
  inputs: unknown;
  result: O;
  startedAt: string;
  finishedAt: string;
  computeSeconds: number;
  attempt: number;
  /**
   * Full URIs (`s3://bucket/prefix/...` or `file:///...`) of the store root, this manifest, the output's
   * folder and each `<name>Key` field of `result`, for people and other tools. Absent in manifests
   * written before it existed; never part of any key.
   */
  uris?: { store: string; manifest: string; prefix: string; result: Record<string, string> };
}

/** Full URIs of the store keys in a stage result: each string field named `<name>Key`, as `<name>`. */
export function keyUris(store: { url(key: string): string }, result: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [field, value] of Object.entries((result ?? {}) as Record<string, unknown>)) {
    if (typeof value === 'string' && field.endsWith('Key') && field.length > 3) out[field.slice(0, -3)] = store.url(value);
  }
  return out;
}

export interface StageOutcome<O> {
  ref: StageRef<O>;
  cached: boolean;
  computeSeconds: number;
}

/** Strip refs down to what identifies them, so an input's key is its upstream hash, not its payload. */
function identityOf(inputs: unknown): unknown {
  if (Array.isArray(inputs)) return inputs.map(identityOf);
  if (inputs && typeof inputs === 'object') {
    const rec = inputs as Record<string, unknown>;
    if (typeof rec.stage === 'string' && typeof rec.hash === 'string' && typeof rec.manifestKey === 'string') {
      return { stage: rec.stage, hash: rec.hash };
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(rec)) out[k] = identityOf(v);
    return out;
  }
  return inputs;
}

/** The key from config and inputs, plus `content` (what `keyContent` returned) when the stage has one. */
export function stageHash<I, C, O>(stage: Stage<I, C, O>, inputs: I, config: C, content?: unknown): string {
  const keyConfig = stage.keyConfig ? stage.keyConfig(config) : config;
  const keyInputs = stage.keyInputs ? stage.keyInputs(inputs, config) : inputs;
  return digest({ stage: stage.name, version: stage.version, config: keyConfig, inputs: identityOf(keyInputs), ...(content !== undefined && content !== null ? { content } : {}) }, 20);
}

/** The full key, with the stage's `keyContent` read first (what runStage uses). */
export async function resolveStageHash<I, C, O>(stage: Stage<I, C, O>, inputs: I, config: C, signal: AbortSignal = new AbortController().signal): Promise<string> {
  const content = stage.keyContent ? await stage.keyContent(config, signal) : undefined;
  return stageHash(stage, inputs, config, content);
}

export function stagePrefix(stageName: string, hash: string): string {
  return joinKey('stages', stageName, hash);
}

export function manifestKeyOf(stageName: string, hash: string): string {
  return joinKey(stagePrefix(stageName, hash), 'manifest.json');
}

export async function readManifest<O>(store: ArtifactStore, manifestKey: string): Promise<StageManifest<O> | null> {
  try {
    return await getJson<StageManifest<O>>(store, manifestKey);
  } catch (err) {
    if (err instanceof ArtifactNotFoundError) return null;
    throw err;
  }
}

interface CheckpointPointer {
  step: number;
  dir: string;
  files: string[];
  meta: Record<string, unknown>;
  savedAt?: string;
}

const stepDir = (step: number) => `step-${String(step).padStart(9, '0')}`;
const stepOf = (dir: string) => Number(dir.slice('step-'.length));
/** The marker written last into a checkpoint folder: its presence means every file of it is there. */
const COMPLETE_MARKER = 'checkpoint.json';

/**
 * Checkpoints under `prefix`: `step-NNNNNNNNN/` folders and a `latest.json` pointer to the newest.
 *
 * Two attempts of one activity can write the same prefix at once (Temporal retries an attempt whose
 * heartbeat timed out while it still runs). Three rules keep them from destroying each other's work:
 *  - a folder is complete once its `checkpoint.json` is written (after its files);
 *  - the pointer never moves back: an attempt behind the pointer leaves it alone;
 *  - clean-up re-reads the pointer and deletes only folders strictly older than the one it names,
 *    keeping `keep - 1` of those: the folder the pointer names, and anything newer (another attempt's
 *    work in progress), is never deleted.
 * Should the pointer still name a missing folder (a race between another attempt's read and write
 * of it), `latest()` falls back to the newest complete folder instead of failing every resume.
 */
export function checkpointIO(store: ArtifactStore, prefix: string, keep = 2): CheckpointIO {
  const pointerKey = joinKey(prefix, 'latest.json');
  const readPointer = async (): Promise<CheckpointPointer | null> => {
    try {
      return await getJson<CheckpointPointer>(store, pointerKey);
    } catch (err) {
      if (err instanceof ArtifactNotFoundError) return null;
      throw err;
    }
  };
  /** Step folders, oldest first (by step number: a step past 10^9 has more digits than the padding). */
  const stepDirs = async (): Promise<string[]> => {
    const all = await store.list(`${prefix}/`);
    const dirs = [...new Set(all.map((k) => k.slice(prefix.length + 1).split('/')[0]!).filter((d) => /^step-\d+$/.test(d)))];
    return dirs.sort((a, b) => stepOf(a) - stepOf(b));
  };
  const complete = async (pointer: CheckpointPointer): Promise<boolean> => {
    for (const name of pointer.files) if (!(await store.exists(joinKey(prefix, pointer.dir, name)))) return false;
    return true;
  };
  const asCheckpoint = (pointer: CheckpointPointer): Checkpoint => ({
    step: pointer.step,
    meta: pointer.meta ?? {},
    files: pointer.files,
    read: (name: string) => store.get(joinKey(prefix, pointer.dir, name)),
  });
  return {
    prefix,
    async latest() {
      const pointer = await readPointer();
      if (!pointer) return null;
      if (await complete(pointer)) return asCheckpoint(pointer);
      // Dangling pointer: the newest folder whose marker (written after its files) is there.
      for (const dir of (await stepDirs()).reverse()) {
        try {
          const marker = await getJson<CheckpointPointer>(store, joinKey(prefix, dir, COMPLETE_MARKER));
          if (marker.dir === dir && (await complete(marker))) return asCheckpoint(marker);
        } catch (err) {
          if (!(err instanceof ArtifactNotFoundError)) throw err;
        }
      }
      return null;
    },
    async save(step, files, meta = {}) {
      const dir = stepDir(step);
      const record: CheckpointPointer = { step, dir, files: Object.keys(files), meta, savedAt: new Date().toISOString() };
      for (const [name, body] of Object.entries(files)) await store.put(joinKey(prefix, dir, name), body);
      await putJson(store, joinKey(prefix, dir, COMPLETE_MARKER), record);
      const current = await readPointer();
      if (!current || current.step <= step) await putJson(store, pointerKey, record);
      // Clean up relative to the pointer as it is now, which may be another attempt's.
      const now = await readPointer();
      if (!now) return;
      const older = (await stepDirs()).filter((d) => stepOf(d) < stepOf(now.dir));
      const all = await store.list(`${prefix}/`);
      for (const old of older.slice(0, Math.max(0, older.length - (keep - 1)))) {
        for (const key of all.filter((k) => k.startsWith(`${prefix}/${old}/`))) await store.delete(key);
      }
    },
  };
}

/**
 * Run a stage unless its output already exists. The manifest is written last, after every
 * object the stage wrote, so its presence is the only proof of a complete output.
 */
export async function runStage<I, C, O>(stage: Stage<I, C, O>, ctx: StageContext, inputs: I, config: C): Promise<StageOutcome<O>> {
  stage.validate?.(inputs, config);
  const hash = await resolveStageHash(stage, inputs, config, ctx.signal);
  const manifestKey = manifestKeyOf(stage.name, hash);
  const existing = await readManifest<O>(ctx.store, manifestKey);
  if (existing) {
    ctx.log(`${stage.name}: reusing ${ctx.store.url(manifestKey)}`);
    ctx.progress({ fraction: 1, message: 'cached' });
    return { ref: { stage: stage.name, hash, manifestKey, result: existing.result }, cached: true, computeSeconds: 0 };
  }
  throwIfAborted(ctx.signal);
  const startedAt = new Date();
  const t0 = performance.now();
  const outputPrefix = stagePrefix(stage.name, hash);
  const result = await stage.run(
    { ...ctx, hash, outputPrefix, checkpoints: checkpointIO(ctx.store, joinKey('checkpoints', stage.name, hash)) },
    inputs,
    config,
  );
  const computeSeconds = (performance.now() - t0) / 1000;
  const manifest: StageManifest<O> = {
    schema: 'densepipe.stage-manifest/v1',
    stage: stage.name,
    version: stage.version,
    hash,
    keyConfig: stage.keyConfig ? stage.keyConfig(config) : config,
    inputs: identityOf(inputs),
    result,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    computeSeconds,
    attempt: ctx.attempt,
    uris: { store: ctx.store.uri, manifest: ctx.store.url(manifestKey), prefix: `${ctx.store.url(outputPrefix)}/`, result: keyUris(ctx.store, result) },
  };
  await putJson(ctx.store, manifestKey, manifest);
  ctx.progress({ fraction: 1, message: 'done' });
  return { ref: { stage: stage.name, hash, manifestKey, result }, cached: false, computeSeconds };
}

/** A context for tests and the CLI: no heartbeats, logs to stderr when verbose. */
export function localContext(store: ArtifactStore, options: { verbose?: boolean; signal?: AbortSignal; onProgress?: (u: ProgressUpdate) => void } = {}): StageContext {
  return {
    store,
    signal: options.signal ?? new AbortController().signal,
    progress: options.onProgress ?? (() => {}),
    log: options.verbose ? (m) => process.stderr.write(`${m}\n`) : () => {},
    attempt: 1,
  };
}
