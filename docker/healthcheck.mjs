// Container health check for the densepipe workers (Docker HEALTHCHECK, Kubernetes readinessProbe).
//
// A Temporal worker serves no port of its own, so "healthy" here means the two things it cannot work
// without are reachable: a TCP connection opens to TEMPORAL_ADDRESS and, when set, to the host of
// DENSEPIPE_S3_ENDPOINT. It deliberately does not restart anything: used as a liveness probe it would
// kill healthy workers during a Temporal outage, which the worker already survives by reconnecting.
//
// Exit codes: 0 reachable, 1 unreachable, 2 misconfigured (a value that can never work).
import net from 'node:net';

const TIMEOUT_MS = Number(process.env.DENSEPIPE_HEALTHCHECK_TIMEOUT_MS ?? 3000);
// Same default as cli/env.ts temporalConnection().
const DEFAULT_TEMPORAL_ADDRESS = '127.0.0.1:7233';

class ConfigError extends Error {}

/** "host:port" or "[v6::addr]:port" as the Temporal clients accept it. */
function parseHostPort(value, variable) {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:\s]+):(\d+)$/.exec(value);
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port > 0 && port < 65536)) {
    throw new ConfigError(`${variable}='${value}' is not host:port (e.g. temporal:7233)`);
  }
  return { host: match[1], port };
}

function parseEndpoint(value, variable) {
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${variable}='${value}' is not a URL (e.g. http://s3:7070)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`${variable}='${value}' must start with http:// or https://`);
  }
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port };
}

function targets(env) {
  const list = [
    { name: 'Temporal', variable: 'TEMPORAL_ADDRESS', ...parseHostPort(env.TEMPORAL_ADDRESS || DEFAULT_TEMPORAL_ADDRESS, 'TEMPORAL_ADDRESS') },
  ];
  if (env.DENSEPIPE_S3_ENDPOINT) {
    list.push({ name: 'S3', variable: 'DENSEPIPE_S3_ENDPOINT', ...parseEndpoint(env.DENSEPIPE_S3_ENDPOINT, 'DENSEPIPE_S3_ENDPOINT') });
  }
  return list;
}

function probe({ host, port }) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const finish = (error) => {
      socket.destroy();
      resolve(error);
    };
    socket.setTimeout(TIMEOUT_MS, () => finish(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    socket.once('connect', () => finish(null));
    socket.once('error', (error) => finish(error));
  });
}

let checks;
try {
  checks = targets(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`healthcheck: ${error.message}\n`);
  process.exit(2);
}

const failures = [];
for (const target of checks) {
  const error = await probe(target);
  if (error) failures.push(`${target.name} at ${target.host}:${target.port} (${target.variable}) is unreachable: ${error.code ?? error.message}`);
}
if (failures.length > 0) {
  process.stderr.write(`healthcheck: ${failures.join('; ')}\n`);
  process.exit(1);
}
process.stdout.write(`healthcheck: ${checks.map((t) => `${t.name} ${t.host}:${t.port}`).join(', ')} reachable\n`);
