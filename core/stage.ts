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

export function stageHash<I, C, O>(stage: Stage<I, C, O>, inputs: I, config: C): string {
  const keyConfig = stage.keyConfig ? stage.keyConfig(config) : config;
  const keyInputs = stage.keyInputs ? stage.keyInputs(inputs, config) : inputs;
  return digest({ stage: stage.name, version: stage.version, config: keyConfig, inputs: identityOf(keyInputs) }, 20);
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

export function checkpointIO(store: ArtifactStore, prefix: string, keep = 2): CheckpointIO {
  const pointerKey = joinKey(prefix, 'latest.json');
  return {
    prefix,
    async latest() {
      let pointer: { step: number; dir: string; files: string[]; meta: Record<string, unknown> };
      try {
        pointer = await getJson(store, pointerKey);
      } catch (err) {
        if (err instanceof ArtifactNotFoundError) return null;
        throw err;
      }
      return {
        step: pointer.step,
        meta: pointer.meta ?? {},
        files: pointer.files,
        read: (name: string) => store.get(joinKey(prefix, pointer.dir, name)),
      };
    },
    async save(step, files, meta = {}) {
      const dir = `step-${String(step).padStart(9, '0')}`;
      for (const [name, body] of Object.entries(files)) await store.put(joinKey(prefix, dir, name), body);
      await putJson(store, pointerKey, { step, dir, files: Object.keys(files), meta, savedAt: new Date().toISOString() });
      // Keep the newest `keep` checkpoints; the pointer already names the new one, so deleting is safe.
      const all = await store.list(`${prefix}/`);
      const dirs = [...new Set(all.map((k) => k.slice(prefix.length + 1).split('/')[0]!).filter((d) => d.startsWith('step-')))].sort();
      for (const old of dirs.slice(0, Math.max(0, dirs.length - keep))) {
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
  const hash = stageHash(stage, inputs, config);
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
