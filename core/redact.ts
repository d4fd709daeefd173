/**
 * Secrets in URLs. An S3 endpoint may carry credentials (`https://KEY:SECRET@host`), and a webhook
 * URL is itself a credential (a Slack-style URL lets anyone who holds it post): neither may reach an
 * error message, a log line, the workflow history or a report. These helpers give the form that may.
 */

/** `scheme://host[:port]/…` with user, password, path and query removed; `(unparseable URL)` when it is not a URL. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    const rest = u.pathname !== '/' || u.search || u.hash ? '/…' : '';
    return `${u.protocol}//${u.host}${rest}`;
  } catch {
    return '(unparseable URL)';
  }
}

/** Whether a URL carries a user name or password (`scheme://user:pass@host`). */
export function hasUserInfo(url: string): boolean {
  try {
    const u = new URL(url);
    return u.username !== '' || u.password !== '';
  } catch {
    return false;
  }
}

/** `text` with every occurrence of each secret (and of its URL-encoded form) replaced by `***`. */
export function scrubSecrets(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) {
    if (!s || s.length < 4) continue;
    for (const form of new Set([s, encodeURIComponent(s), encodeURI(s)])) out = out.split(form).join('***');
  }
  return out;
}

/** The forms in which a secret URL can show up in a message: as given, normalised, its path and query, its user and password. */
export function urlSecrets(url: string): string[] {
  const out = [url];
  try {
    const u = new URL(url);
    out.push(u.href, `${u.pathname}${u.search}`, u.search, decodeURIComponent(u.password), decodeURIComponent(u.username));
    if (u.pathname.length > 1) out.push(u.pathname);
  } catch {
    /* not a URL: the string itself is all there is */
  }
  return out.filter((s) => s.length >= 4).sort((a, b) => b.length - a.length);
}
