/**
 * An HTTP proxy on loopback in front of the local S3 server (versitygw) that answers a share of the
 * requests with a fault instead of forwarding them: HTTP 500 (InternalError), HTTP 503 (SlowDown),
 * a connection reset (the socket destroyed before any answer), or a delay (forwarded after 0.5-3 s).
 * Used by bench/chaos.ts. Headers are forwarded unchanged, so the client's SigV4 signature (which
 * covers the Host header) still verifies upstream. When the upstream server is down (killed by the
 * chaos bench), a request's socket is destroyed, as a dead server's would be.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type S3Fault = 'http500' | 'http503' | 'reset' | 'delay';
export const S3_FAULTS: readonly S3Fault[] = ['http500', 'http503', 'reset', 'delay'];

export interface S3FaultProxy {
  endpoint: string;
  port: number;
  /** Share of requests (0..1) that get a fault; may be changed while running. */
  rate: number;
  /** Requests seen and faults injected since the last `resetCounts()`. */
  counts: { requests: number; upstreamDown: number } & Record<S3Fault, number>;
  resetCounts(): void;
  close(): Promise<void>;
}

const s3Error = (code: string, message: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>chaos</RequestId></Error>`;

/** A small deterministic PRNG (mulberry32), so a seeded bench injects the same sequence of faults. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function startS3FaultProxy(options: { upstreamPort: number; rate: number; seed?: number; port?: number }): Promise<S3FaultProxy> {
  const random = mulberry32(options.seed ?? 1);
  const zero = () => ({ requests: 0, upstreamDown: 0, http500: 0, http503: 0, reset: 0, delay: 0 });
  const sockets = new Set<import('node:net').Socket>();

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const up = request({ host: '127.0.0.1', port: options.upstreamPort, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, upRes.rawHeaders as unknown as Record<string, string>);
      upRes.pipe(res);
      upRes.on('error', () => res.destroy());
    });
    up.on('error', () => {
      proxy.counts.upstreamDown++;
      req.socket.destroy();
    });
    req.pipe(up);
    req.on('error', () => up.destroy());
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
  };

  const answer = (req: IncomingMessage, res: ServerResponse, status: number, code: string) => {
    // Drain the body first: answering mid-upload makes some clients see a reset rather than the status.
    req.resume();
    req.on('end', () => {
      const body = s3Error(code, `injected by the chaos proxy`);
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), ...(status === 503 ? { 'retry-after': '1' } : {}) });
      res.end(body);
    });
  };

  const server: Server = createServer((req, res) => {
    proxy.counts.requests++;
    if (random() >= proxy.rate) return forward(req, res);
    const fault = S3_FAULTS[Math.floor(random() * S3_FAULTS.length)]!;
    proxy.counts[fault]++;
    switch (fault) {
      case 'http500':
        return answer(req, res, 500, 'InternalError');
      case 'http503':
        return answer(req, res, 503, 'SlowDown');
      case 'reset':
        return req.socket.destroy();
      case 'delay': {
        req.pause();
        setTimeout(() => {
          req.resume();
          forward(req, res);
        }, 500 + Math.floor(random() * 2500));
        return;
      }
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const proxy: S3FaultProxy = {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    rate: options.rate,
    counts: zero(),
    resetCounts() {
      proxy.counts = zero();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
  return proxy;
}
