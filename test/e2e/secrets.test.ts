/**
 * Secrets never reach the workflow history, the worker logs or the reports (issue 17). Against the
 * real local stack (Temporal dev server, versitygw, worker processes as `densepipe up` starts
 * them): the workers hold S3 credentials in their environment and a webhook URL with a secret
 * token; one small suite runs (one tiny member) and posts its verdict to that webhook, which
 * answers 503 so the failure path (error text, retries, a warning in the report) runs too. Then
 * every event of every workflow's history (payloads decoded), every log file of the stack and
 * every object in the bucket is searched for the secrets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { LOCAL_S3_CREDENTIALS, projectRoot } from '../../cli/env.js';
import { startSuite, suiteInput } from '../../cli/suite.js';
import { openStore } from '../../core/store/index.js';
import { parseSuite } from '../../stages/regression/suite-config.js';
import type { SuiteResult } from '../../stages/regression/types.js';
import { startLocalStack, toolsInstalled, type LocalStack } from '../helpers/servers.js';

const built = existsSync(join(projectRoot(), 'dist', 'workflow-bundle.js'));
const BUCKET = 'densepipe-secrets';

/** Every string and every byte payload (as UTF-8) of a history, one per line. */
function historyText(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (value instanceof Uint8Array) out.push(Buffer.from(value).toString('utf8'));
  else if (Array.isArray(value)) value.forEach((v) => historyText(v, out));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => historyText(v, out));
  return out;
}

describe.skipIf(!toolsInstalled() || !built)('secrets stay out of history, logs and reports (real stack)', () => {
  const token = `T0KEN-${randomBytes(12).toString('hex')}`;
  let hookUrl: string;
  let hook: Server;
  const posts: string[] = [];
  let stack: LocalStack;
  let client: Client;
  const savedHook = process.env.DENSEPIPE_TEST_WEBHOOK_URL;

  beforeAll(async () => {
    hook = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        posts.push(`${req.method} ${req.url} ${body.length}`);
        res.writeHead(503).end('try later');
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}/services/${token}?sig=${token}`;
    // The workers inherit this process's environment: the URL is only there.
    process.env.DENSEPIPE_TEST_WEBHOOK_URL = hookUrl;
    stack = await startLocalStack('secrets');
    client = stack.client;
  }, 240_000);

  afterAll(async () => {
    await stack?.stop();
    if (savedHook === undefined) delete process.env.DENSEPIPE_TEST_WEBHOOK_URL;
    else process.env.DENSEPIPE_TEST_WEBHOOK_URL = savedHook;
    hook?.closeAllConnections();
    await new Promise((r) => hook?.close(r));
  }, 120_000);

  it('runs a suite with a secret webhook and S3 credentials, and no history, log or object holds them', async () => {
    const suite = parseSuite({
      name: 'secrets',
      base: {
        store: { uri: `s3://${BUCKET}/artifacts` },
        data: { shardSamples: 64 },
        proposals: { enabled: false },
        pretrain: { backbone: { arch: 'resnet-tiny' }, batchSize: 8, steps: 2, imageSize: 32, checkpointEvery: { steps: 1 } },
        evaluation: { imageSize: 32, maxSamplesPerSplit: 32 },
        baselines: { supervised: false },
      },
      methods: ['mocov2'],
      methodArgs: { mocov2: { queueSize: 64, momentum: 0.99 } },
      seeds: [0],
      tasks: ['knn'],
      webhook: { urlEnv: 'DENSEPIPE_TEST_WEBHOOK_URL', timeoutSeconds: 2, maxAttempts: 2 },
    });
    const input = suiteInput(suite);
    expect(JSON.stringify(input)).not.toContain(token);
    const handle = await startSuite(client, input, `secrets-${Date.now()}`);
    const result = (await handle.result()) as SuiteResult;

    // The URL did its job on the worker: two attempts reached the webhook, and the failure is reported.
    expect(posts).toHaveLength(2);
    expect(posts[0]).toContain(`/services/${token}`);
    expect(result.members[0]!.status, result.members[0]!.error).toBe('completed');
    expect(result.warnings.join('\n')).toMatch(/webhook not delivered after 2 attempt\(s\): .*\$DENSEPIPE_TEST_WEBHOOK_URL \(http:\/\/127\.0\.0\.1:\d+\/…\): HTTP 503/);

    const secrets = [token, hookUrl, LOCAL_S3_CREDENTIALS.secretAccessKey];

    // Workflow histories: the suite and its member, every event, payloads decoded.
    for (const id of [handle.workflowId, ...result.members.map((m) => m.workflowId)]) {
      const text = historyText(await client.workflow.getHandle(id).fetchHistory()).join('\n');
      expect(text.length).toBeGreaterThan(1000);
      if (id === handle.workflowId) expect(text).toContain('DENSEPIPE_TEST_WEBHOOK_URL'); // the variable's name is there, its value is not
      for (const s of secrets) expect(text, `history of ${id}`).not.toContain(s);
    }

    // Worker logs (and the servers' logs) of the stack.
    const logDir = join(stack.env.home, 'logs');
    const logs = readdirSync(logDir).filter((f) => f.endsWith('.log'));
    expect(logs).toEqual(expect.arrayContaining(['worker-cpu.log', 'worker-gpu.log']));
    for (const f of logs) {
      const text = readFileSync(join(logDir, f), 'utf8');
      for (const s of secrets) expect(text, f).not.toContain(s);
    }
    expect(readFileSync(join(logDir, 'worker-cpu.log'), 'utf8')).toMatch(/notifyWebhook|WebhookError|HTTP 503/);

    // Every object in the bucket: both reports (HTML and JSON), the run reports, manifests, shards.
    const store = openStore({ uri: `s3://${BUCKET}` });
    const keys = await store.list('');
    expect(keys).toEqual(expect.arrayContaining([`artifacts/${result.reportKey}`, `artifacts/${result.jsonKey}`]));
    const report = Buffer.from(await store.get(`artifacts/${result.reportKey}`)).toString();
    expect(report).toContain('webhook not delivered');
    for (const key of keys) {
      const bytes = Buffer.from(await store.get(key));
      for (const s of secrets) expect(bytes.includes(Buffer.from(s)), `${key} holds a secret`).toBe(false);
    }
  }, 600_000);
});
