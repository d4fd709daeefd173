/**
 * Errors a retry cannot fix: a malformed config, a missing input file, a corrupt image.
 * Activities turn these into non-retryable Temporal failures (type `BadInputError`); the CLI
 * prints them without a stack. `where` names the file, field or key at fault.
 */
export class BadInputError extends Error {
  override readonly name = 'BadInputError';
  constructor(
    message: string,
    readonly where?: string,
  ) {
    super(where ? `${where}: ${message}` : message);
  }
}

/** A checkpoint or artifact that exists but does not fit what is asked of it. */
export class IncompatibleArtifactError extends BadInputError {
  override readonly name = 'IncompatibleArtifactError' as 'BadInputError';
}

/**
 * Training produced a non-finite loss. Seeded training is deterministic, so a retry would diverge
 * the same way: it is not retried, and a regression suite counts it as a regression, not noise.
 */
export class TrainingDivergedError extends Error {
  override readonly name = 'TrainingDivergedError';
}

/** The list of error type names that activities mark non-retryable. */
export const NON_RETRYABLE_ERROR_TYPES = ['BadInputError', 'IncompatibleArtifactError', 'ConfigError', 'TrainingDivergedError'];

export function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || err.name === 'CancelledFailure');
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    const err = new Error(`cancelled${signal.reason ? `: ${String(signal.reason)}` : ''}`);
    err.name = 'AbortError';
    throw err;
  }
}
