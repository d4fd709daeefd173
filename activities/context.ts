import { ApplicationFailure, Context } from '@temporalio/activity';
import { ZodError } from 'zod';
import { BadInputError, NON_RETRYABLE_ERROR_TYPES } from '../core/errors.js';
import { openStore, type ArtifactStore } from '../core/store/index.js';
import { runStage, type ProgressUpdate, type Stage, type StageContext } from '../core/stage.js';
import type { StoreConfig } from '../core/config.js';
import type { ActivityOutcome } from '../workflows/types.js';

const stores = new Map<string, Promise<ArtifactStore>>();

/** One store per (uri, endpoint) per worker process; the bucket is checked (or created) once. */
export function storeFor(config: StoreConfig): Promise<ArtifactStore> {
  const id = `${config.uri} ${config.endpoint ?? ''}`;
  let pending = stores.get(id);
  if (!pending) {
    pending = (async () => {
      const store = openStore({ uri: config.uri, endpoint: config.endpoint, region: config.region });
      await store.ensureReady({ create: config.createBucket });
      return store;
    })();
    pending.catch(() => stores.delete(id));
    stores.set(id, pending);
  }
  return pending;
}

/** Heartbeat payload: what `densepipe run` draws as a progress bar. */
export interface HeartbeatDetails extends ProgressUpdate {
  stage: string;
  /** The pipeline step this activity serves (one stage serves several: evaluate, evaluate-baseline, evaluate-supervised). */
  role: string;
  at: string;
}

/**
 * Map the Temporal activity context onto a stage context: progress becomes heartbeats (which is
 * also how cancellation reaches the activity), the abort signal is Temporal's cancellation signal.
 */
export function activityStageContext(store: ArtifactStore, stageName: string, role = stageName): StageContext {
  const ctx = Context.current();
  return {
    store,
    signal: ctx.cancellationSignal,
    progress: (update) => ctx.heartbeat({ ...update, stage: stageName, role, at: new Date().toISOString() } satisfies HeartbeatDetails),
    log: (message) => ctx.log.info(message),
    attempt: ctx.info.attempt,
  };
}

/**
 * Run a stage as an activity. A periodic heartbeat keeps long silent phases (a big upload) alive
 * and lets cancellation in; bad input becomes a non-retryable failure whose message names the
 * field, file or key.
 */
export async function runStageActivity<I, C, O>(stage: Stage<I, C, O>, storeConfig: StoreConfig, inputs: I, config: C, role = stage.name): Promise<ActivityOutcome<O>> {
  const store = await storeFor(storeConfig).catch((err: unknown) => {
    throw toFailure(err);
  });
  const ctx = activityStageContext(store, stage.name, role);
  const keepAlive = setInterval(() => Context.current().heartbeat({ stage: stage.name, role, at: new Date().toISOString() }), 5_000);
  try {
    return await runStage(stage, ctx, inputs, config);
  } catch (err) {
    throw toFailure(err);
  } finally {
    clearInterval(keepAlive);
  }
}

export function toFailure(err: unknown): unknown {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof ZodError) {
    const detail = err.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
    return ApplicationFailure.nonRetryable(`invalid input: ${detail}`, 'BadInputError');
  }
  if (err instanceof Error && (err instanceof BadInputError || NON_RETRYABLE_ERROR_TYPES.includes(err.name))) {
    return ApplicationFailure.nonRetryable(err.message, err.name);
  }
  return err;
}
