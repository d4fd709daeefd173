import { redactUrl, scrubSecrets, urlSecrets } from '../../core/redact.js';

/**
 * One webhook delivery attempt: POST the JSON verdict, time-bounded. Retries belong to the caller
 * (the suite workflow runs this as an activity with a retry policy), so this does exactly one try
 * and throws with a message that says what went wrong. The URL is a secret: messages name `label`
 * (where it came from, e.g. `$DENSEPIPE_WEBHOOK_URL`) and the host, never the path or query.
 */
export class WebhookError extends Error {
  override readonly name = 'WebhookError';
}

export async function postWebhook(url: string, body: unknown, timeoutSeconds: number, label = 'webhook URL'): Promise<{ status: number }> {
  const where = `webhook ${label} (${redactUrl(url)})`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'densepipe-regression' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutSeconds * 1000),
    });
  } catch (err) {
    const e = err as Error & { cause?: Error };
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutSeconds} s` : `${e.message}${e.cause ? ` (${e.cause.message})` : ''}`;
    throw new WebhookError(scrubSecrets(`${where}: ${why}`, urlSecrets(url)));
  }
  await res.arrayBuffer().catch(() => undefined);
  if (!res.ok) throw new WebhookError(scrubSecrets(`${where}: HTTP ${res.status} ${res.statusText}`, urlSecrets(url)));
  return { status: res.status };
}
