import { createHash } from 'node:crypto';

/**
 * JSON with object keys sorted at every level, so that two configs that differ only in key
 * order hash the same (Flyte's cache-miss bug #6517 is exactly this). `undefined` fields are
 * dropped, as JSON.stringify does; non-finite numbers are refused because JSON cannot carry them.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new TypeError(`cannot hash a non-finite number (${value})`);
    }
    return value;
  }
  if (Array.isArray(value)) return value.map(sortKeys);
  if (ArrayBuffer.isView(value)) throw new TypeError('cannot hash binary data as JSON; hash its bytes instead');
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value as object).sort()) {
    const v = (value as Record<string, unknown>)[key];
    if (v !== undefined) out[key] = sortKeys(v);
  }
  return out;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A short, stable digest of a JSON-able value (first 16 hex chars of sha256 of canonical JSON). */
export function digest(value: unknown, length = 16): string {
  return sha256Hex(canonicalJson(value)).slice(0, length);
}
