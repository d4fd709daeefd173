/**
 * One webhook delivery attempt: POST the JSON verdict, time-bounded. Retries belong to the caller
 * (the suite workflow runs this as an activity with a retry policy), so this does exactly one try
 * and throws with a message that names the URL and what went wrong.
 */
export class WebhookError extends Error {
  override readonly name = 'WebhookError';
}

export async function postWebhook(url: string, body: unknown, timeoutSeconds: number): Promise<{ status: number }> {
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
    throw new WebhookError(`webhook ${url}: ${why}`);
  }
  await res.arrayBuffer().catch(() => undefined);
  if (!res.ok) throw new WebhookError(`webhook ${url}: HTTP ${res.status} ${res.statusText}`);
  return { status: res.status };
}
