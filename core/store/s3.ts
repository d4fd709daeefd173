import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BadInputError } from '../errors.js';
import { hasUserInfo, redactUrl } from '../redact.js';
import { ArtifactNotFoundError, StoreUnreachableError, assertSafeKey, joinKey, type ArtifactStore, type PutResult } from './types.js';

export interface S3StoreOptions {
  bucket: string;
  prefix?: string;
  /** An S3-compatible endpoint (versitygw, SeaweedFS, MinIO, Ceph...). Unset means AWS. */
  endpoint?: string;
  region?: string;
  /** Path-style addressing; on by default whenever an endpoint is given. */
  forcePathStyle?: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

// Node 20 is this project's fixed platform and the SDK is pinned to a version that supports it;
// the SDK's notice about future releases needing Node 22 would otherwise print in every process.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const MULTIPART_THRESHOLD = 16 * 1024 * 1024;

/**
 * Artifacts in an S3 bucket. Credentials and region come from the usual AWS chain
 * (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws files, instance roles) unless
 * given explicitly. A single PutObject is atomic in S3, so objects never appear half-written.
 */
export class S3ArtifactStore implements ArtifactStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly uri: string;
  private readonly endpointLabel: string;

  constructor(readonly options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.uri = `s3://${this.bucket}${this.prefix ? `/${this.prefix}` : ''}`;
    // Credentials belong in the AWS chain, never in a URL that error messages, logs and the workflow
    // history would repeat; the label shows scheme, host and port only.
    if (options.endpoint && hasUserInfo(options.endpoint)) {
      throw new BadInputError(
        `the S3 endpoint ${redactUrl(options.endpoint)} carries a user name or password in its URL; give credentials through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE instead`,
        'store.endpoint',
      );
    }
    this.endpointLabel = options.endpoint ? redactUrl(options.endpoint) : `AWS S3 (${options.region ?? process.env.AWS_REGION ?? 'default region'})`;
    const config: S3ClientConfig = {
      region: options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle ?? Boolean(options.endpoint),
      credentials: options.credentials,
      maxAttempts: 5,
    };
    this.client = new S3Client(config);
  }

  private fullKey(key: string): string {
    assertSafeKey(key);
    return joinKey(this.prefix, key);
  }

  url(key: string): string {
    return `${this.uri}/${key}`;
  }

  /** Turn connection-level failures into one message that says where we looked. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = err as { code?: string; name?: string; message?: string; $metadata?: unknown; cause?: { code?: string } };
      const code = e.code ?? e.cause?.code;
      if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ETIMEDOUT' || e.name === 'TimeoutError') {
        throw new StoreUnreachableError(
          `S3 is unreachable at ${this.endpointLabel} (${what}: ${code ?? e.name}). ` +
            `Start the local one with 'densepipe up', or set DENSEPIPE_S3_ENDPOINT / the store URI in the config.`,
        );
      }
      // Refused credentials or permissions: no retry changes them.
      const status = e.$metadata && (e.$metadata as { httpStatusCode?: number }).httpStatusCode;
      if (status === 403 || e.name === 'AccessDenied' || e.name === 'InvalidAccessKeyId' || e.name === 'SignatureDoesNotMatch') {
        throw new BadInputError(
          `access denied by ${this.endpointLabel} (HTTP ${status ?? 403} ${e.name ?? ''}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE and the bucket policy`,
          `s3://${this.bucket} ${what}`,
        );
      }
      throw err;
    }
  }

  async ensureReady(options: { create?: boolean } = {}): Promise<void> {
    try {
      await this.call('HeadBucket', () => this.client.send(new HeadBucketCommand({ Bucket: this.bucket })));
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      const name = (err as Error).name;
      if (status === 404 || name === 'NotFound' || name === 'NoSuchBucket') {
        if (options.create === false) {
          throw new BadInputError(`bucket '${this.bucket}' does not exist at ${this.endpointLabel}, and creating it is not allowed`, 'store.createBucket: false');
        }
        await this.call('CreateBucket', () => this.client.send(new CreateBucketCommand({ Bucket: this.bucket })));
        return;
      }
      if (err instanceof StoreUnreachableError || err instanceof BadInputError) throw err;
      const message =
        `S3 bucket '${this.bucket}' at ${this.endpointLabel} is not usable: HTTP ${status ?? '?'} ${name}` +
        (status === 400 ? ' (is the bucket name valid: 3-63 lower-case letters, digits, dots, hyphens?)' : '');
      // A client error (bad name, refused request) stays what it is on every retry; server errors and throttling may pass.
      if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) throw new BadInputError(message, 'store.uri');
      throw new Error(message);
    }
  }

  async put(key: string, body: Uint8Array | string, options: { contentType?: string } = {}): Promise<PutResult> {
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    await this.call('PutObject', () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.fullKey(key),
          Body: bytes,
          ContentType: options.contentType,
          Metadata: { sha256 },
        }),
      ),
    );
    return { key, size: bytes.byteLength, sha256 };
  }

  async putFile(key: string, path: string, options: { contentType?: string } = {}): Promise<PutResult> {
    const { size } = await stat(path);
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    const sha256 = hash.digest('hex');
    if (size < MULTIPART_THRESHOLD) {
      await this.call('PutObject', () =>
        this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: this.fullKey(key),
            Body: createReadStream(path),
            ContentLength: size,
            ContentType: options.contentType,
            Metadata: { sha256 },
          }),
        ),
      );
    } else {
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key: this.fullKey(key), Body: createReadStream(path), ContentType: options.contentType, Metadata: { sha256 } },
        partSize: MULTIPART_THRESHOLD,
        queueSize: 2,
      });
      await this.call('Upload', () => upload.done());
    }
    return { key, size, sha256 };
  }

  async get(key: string): Promise<Uint8Array> {
    const stream = await this.getStream(key);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  async getStream(key: string): Promise<Readable> {
    try {
      const res = await this.call('GetObject', () => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) })));
      return res.Body as Readable;
    } catch (err) {
      if ((err as Error).name === 'NoSuchKey' || (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) {
        throw new ArtifactNotFoundError(this.url(key));
      }
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.call('HeadObject', () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) })));
      return true;
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || (err as Error).name === 'NotFound') return false;
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const full = joinKey(this.prefix, prefix);
    const listPrefix = full && prefix.endsWith('/') ? `${full}/` : full;
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const res = await this.call('ListObjectsV2', () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: listPrefix || undefined, ContinuationToken: token })),
      );
      for (const obj of res.Contents ?? []) if (obj.Key) keys.push(obj.Key.slice(strip));
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }

  async delete(key: string): Promise<void> {
    await this.call('DeleteObject', () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) })));
  }
}
