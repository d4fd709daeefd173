import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { SEARCH_ATTRIBUTES } from '../../workflows/types.js';

// Cross-file facts the linters cannot see: versions that must agree between the images, the compose
// file, the Kubernetes manifests and scripts/setup.sh, and the security/env contract of the workers.
// Pure file parsing, no tools needed, so these run everywhere.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

/** Every variable the worker images are documented (docs/DEPLOY.md) to be configured by. */
const WORKER_ENV = [
  'TEMPORAL_ADDRESS',
  'TEMPORAL_NAMESPACE',
  'DENSEPIPE_STORE',
  'DENSEPIPE_S3_ENDPOINT',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_REGION',
  'DENSEPIPE_BACKEND',
];

/** A `NAME=value` shell assignment in scripts/setup.sh. */
function setupValue(name: string): string {
  const match = new RegExp(`^${name}=(\\S+)`, 'm').exec(read('scripts/setup.sh'));
  if (!match) throw new Error(`scripts/setup.sh has no ${name}=...`);
  return match[1];
}

interface Dockerfile {
  args: Map<string, string>;
  /** Base image of each stage, with ARG defaults substituted. */
  bases: string[];
  /** Instructions of the last stage (the image that ships). */
  finalStage: string[];
}

function parseDockerfile(path: string): Dockerfile {
  // Join continuation lines, drop comments.
  const lines = read(path)
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const args = new Map<string, string>();
  const bases: string[] = [];
  let finalStage: string[] = [];
  for (const line of lines) {
    const arg = /^ARG\s+(\w+)=(\S+)/.exec(line);
    if (arg && !args.has(arg[1])) args.set(arg[1], arg[2]);
    const from = /^FROM\s+(?:--platform=\S+\s+)?(\S+)/.exec(line);
    if (from) {
      bases.push(from[1].replace(/^\$\{(\w+)\}$/, (_, name: string) => args.get(name) ?? `<unset ${name}>`));
      finalStage = [];
    }
    finalStage.push(line);
  }
  return { args, bases, finalStage };
}

const dockerfiles = {
  cpu: parseDockerfile('docker/cpu-worker.Dockerfile'),
  gpu: parseDockerfile('docker/gpu-worker.Dockerfile'),
};
const stageNames = (path: string) => [...read(path).matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gim)].map((m) => m[1]);

function numericUser(image: Dockerfile): number {
  const user = image.finalStage.filter((line) => line.startsWith('USER ')).at(-1);
  const match = user && /^USER\s+(\d+)(?::(\d+))?$/.exec(user);
  if (!match) throw new Error(`final stage has no numeric USER (found ${user ?? 'none'})`);
  return Number(match[1]);
}

type Yaml = Record<string, any>;
// `merge: true` resolves the YAML merge keys (<<: *worker-common) the way Compose does.
const compose = parse(read('infra/compose.yaml'), { merge: true }) as Yaml;
const k8sFiles = readdirSync(join(ROOT, 'infra/k8s')).filter((name) => name.endsWith('.yaml'));
const k8sObjects: Yaml[] = k8sFiles
  .filter((name) => name !== 'kustomization.yaml')
  .flatMap((name) => parseAllDocuments(read(`infra/k8s/${name}`)).map((doc) => doc.toJS() as Yaml))
  .filter(Boolean);
const k8s = (kind: string, name: string): Yaml => {
  const found = k8sObjects.find((o) => o.kind === kind && o.metadata?.name === name);
  if (!found) throw new Error(`infra/k8s has no ${kind} ${name}`);
  return found;
};
const imageTag = (image: string) => image.slice(image.lastIndexOf(':') + 1);
const isPinned = (image: string) => /:[^:/]*\d[^:/]*$/.test(image) && !image.endsWith(':latest');

describe('worker Dockerfiles', () => {
  it.each(Object.entries(dockerfiles))('%s: every base image is pinned to a version tag', (_, image) => {
    const external = image.bases.filter((base) => !stageNames(`docker/${_}-worker.Dockerfile`).includes(base));
    expect(external.length).toBeGreaterThan(0);
    for (const base of external) expect(isPinned(base), base).toBe(true);
  });

  it.each(Object.entries(dockerfiles))('%s: ships as a non-root numeric user with a health check and the worker entrypoint', (queue, image) => {
    expect(numericUser(image)).toBeGreaterThan(0);
    expect(image.finalStage.some((line) => line.startsWith('HEALTHCHECK ') && line.includes('docker/healthcheck.mjs'))).toBe(true);
    expect(image.finalStage).toContain('ENTRYPOINT ["node", "bin/densepipe.js"]');
    expect(image.finalStage).toContain(`CMD ["worker", "--queue", "${queue}"]`);
  });

  it.each(['docker/cpu-worker.Dockerfile', 'docker/gpu-worker.Dockerfile'])('%s bakes in no credentials', (path) => {
    expect(read(path)).not.toMatch(/AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|ROOT_SECRET|PASSWORD/);
  });

  it('.dockerignore keeps host builds, local state and secrets out of the build context', () => {
    const ignored = read('.dockerignore')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith('#'));
    // A host node_modules holds a tfjs-node binding linked against a host-only libtensorflow path.
    for (const entry of ['node_modules', 'dist', '.densepipe', '.tools', '.git', '.env', '.env.*']) expect(ignored, entry).toContain(entry);
    // ...while everything the images need from the context stays in it. Docker's rules: `*` within a
    // path segment, `**` across segments, and a pattern that names a directory covers its contents.
    const toRegExp = (pattern: string) =>
      new RegExp(`^${pattern.replace(/^\//, '').replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*/g, '\0').replace(/\*/g, '[^/]*').replace(/\0/g, '.*')}(/.*)?$`);
    const needed = ['docker/stage-libtensorflow.py', 'docker/stage-libtensorflow-gpu.py', 'docker/gpu-wheels.txt', 'docker/healthcheck.mjs', 'package.json', 'package-lock.json', 'bin/densepipe.js', 'scripts/bundle-workflows.mjs', 'configs/demo.yaml', 'cli/main.ts', 'tsconfig.json'];
    for (const path of needed) {
      const excludedBy = ignored.filter((pattern) => !pattern.startsWith('!') && toRegExp(pattern).test(path));
      expect(excludedBy, path).toEqual([]);
    }
    // The matcher itself: the patterns do exclude what they are meant to.
    expect(toRegExp('docker/*.Dockerfile').test('docker/cpu-worker.Dockerfile')).toBe(true);
    expect(toRegExp('**/*.pem').test('a/b/key.pem')).toBe(true);
    expect(toRegExp('test').test('test/infra/lint.test.ts')).toBe(true);
  });

  it('runs the Node major that package.json engines accept', () => {
    const engines = JSON.parse(read('package.json')).engines.node as string;
    const minimum = /^>=(\d+)\.(\d+)/.exec(engines);
    expect(minimum).not.toBeNull();
    for (const base of [...dockerfiles.cpu.bases, ...dockerfiles.gpu.bases].filter((b) => b.startsWith('node:'))) {
      const [major, minor] = /^node:(\d+)\.(\d+)/.exec(base)!.slice(1).map(Number);
      expect(major * 1000 + minor, base).toBeGreaterThanOrEqual(Number(minimum![1]) * 1000 + Number(minimum![2]));
    }
  });

  it('cpu image builds against the same tensorflow-cpu wheel as scripts/setup.sh', () => {
    expect(dockerfiles.cpu.args.get('TF_VERSION')).toBe(setupValue('TF_VERSION'));
    expect(dockerfiles.cpu.args.get('TF_WHEEL_SHA256')).toBe(setupValue('TF_WHEEL_SHA256'));
  });

  it('gpu image builds tfjs-node-gpu at the version of @tensorflow/tfjs-node in package.json, pinned as scripts/setup.sh --gpu does', () => {
    const pkg = JSON.parse(read('package.json'));
    expect(dockerfiles.gpu.args.get('TFJS_NODE_GPU_VERSION')).toBe(pkg.dependencies['@tensorflow/tfjs-node']);
    expect(setupValue('TFJS_NODE_GPU_VERSION')).toBe(pkg.dependencies['@tensorflow/tfjs-node']);
    expect(dockerfiles.gpu.args.get('TFJS_NODE_GPU_INTEGRITY')).toBe(setupValue('TFJS_NODE_GPU_INTEGRITY'));
  });

  it('gpu image and scripts/setup.sh --gpu take libtensorflow from the same hash-pinned PyPI wheels, at the CPU build\'s TensorFlow version', () => {
    expect(setupValue('GPU_WHEELS')).toBe('docker/gpu-wheels.txt');
    const gpuDockerfile = read('docker/gpu-worker.Dockerfile');
    expect(gpuDockerfile).toContain('COPY docker/gpu-wheels.txt');
    expect(gpuDockerfile).toMatch(/pip download [^\n]*--require-hashes/);
    const pins = read('docker/gpu-wheels.txt')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith('#'));
    for (const pin of pins) expect(pin).toMatch(/^[a-z0-9-]+==[\w.]+ --hash=sha256:[0-9a-f]{64}$/);
    expect(pins).toContainEqual(expect.stringMatching(new RegExp(`^tensorflow==${setupValue('TF_VERSION').replace(/\./g, '\\.')} `)));
    expect(dockerfiles.gpu.args.get('TF_VERSION')).toBe(setupValue('TF_VERSION'));
    // The CUDA 12 runtime: the nvidia-*-cu12 wheels of tensorflow's `and-cuda` extra.
    expect(pins.filter((pin) => /^nvidia-[a-z-]+-cu12==/.test(pin)).length).toBe(12);
    // Nothing from outside the registries: no install script that downloads (tfjs-node-gpu's is `install.js gpu download`).
    expect(gpuDockerfile).not.toMatch(/install\.js gpu download|curl |wget |googleapis/);
  });
});

describe('infra/compose.yaml', () => {
  const services = compose.services as Record<string, Yaml>;

  it('pins every image it pulls', () => {
    for (const [name, service] of Object.entries(services)) {
      if (service.build) continue; // built here from docker/*.Dockerfile
      expect(isPinned(service.image), `${name}: ${service.image}`).toBe(true);
    }
  });

  it('starts the Temporal dev server with every custom search attribute a run sets', () => {
    const command: string[] = services.temporal.command;
    for (const name of Object.values(SEARCH_ATTRIBUTES)) {
      const at = command.indexOf(`${name}=Keyword`);
      expect(at, name).toBeGreaterThan(0);
      expect(command[at - 1]).toBe('--search-attribute');
    }
  });

  it('runs the Temporal and versitygw versions that scripts/setup.sh installs for `densepipe up`', () => {
    expect(imageTag(services.temporal.image)).toBe(setupValue('TEMPORAL_CLI_VERSION').replace(/^v/, ''));
    expect(services.s3.image).toBe(`versity/versitygw:${setupValue('VERSITYGW_VERSION')}`);
  });

  it.each(['cpu', 'gpu'])('%s worker: built from its Dockerfile, polls its queue, gets every worker variable', (queue) => {
    const worker = services[`${queue}-worker`];
    expect(worker.build.dockerfile).toBe(`docker/${queue}-worker.Dockerfile`);
    expect(worker.command).toEqual(['worker', '--queue', queue]);
    for (const variable of WORKER_ENV) expect(worker.environment, variable).toHaveProperty(variable);
    expect(worker.depends_on.temporal.condition).toBe('service_healthy');
    expect(worker.depends_on.s3.condition).toBe('service_healthy');
  });

  it('reserves an NVIDIA GPU for the gpu worker', () => {
    const devices = services['gpu-worker'].deploy.resources.reservations.devices;
    expect(devices).toEqual([{ driver: 'nvidia', count: 1, capabilities: ['gpu'] }]);
  });

  it('wires the workers to the S3 server with the credentials the server is started with', () => {
    const env = services['cpu-worker'].environment;
    const s3 = services.s3.environment;
    expect(env.AWS_ACCESS_KEY_ID).toBe(s3.ROOT_ACCESS_KEY_ID);
    expect(env.AWS_SECRET_ACCESS_KEY).toBe(s3.ROOT_SECRET_ACCESS_KEY);
    expect(env.DENSEPIPE_S3_ENDPOINT).toBe(`http://s3:${s3.VGW_PORT.replace(/^:/, '')}`);
    expect(env.TEMPORAL_ADDRESS).toBe('temporal:7233');
  });
});

describe('infra/k8s', () => {
  const deployments = k8sObjects.filter((o) => o.kind === 'Deployment');

  it('kustomization.yaml lists every manifest in the directory', () => {
    const kustomization = parse(read('infra/k8s/kustomization.yaml')) as Yaml;
    expect([...kustomization.resources].sort()).toEqual(k8sFiles.filter((n) => n !== 'kustomization.yaml').sort());
  });

  it('every Deployment runs unprivileged, read-only, with resource requests and pinned images', () => {
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual(['cpu-worker', 'gpu-worker', 's3', 'temporal']);
    for (const deployment of deployments) {
      const pod = deployment.spec.template.spec;
      expect(pod.securityContext.runAsNonRoot, deployment.metadata.name).toBe(true);
      for (const container of pod.containers) {
        const where = `${deployment.metadata.name}/${container.name}`;
        expect(isPinned(container.image), where).toBe(true);
        expect(container.securityContext, where).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
        expect(container.resources.requests.cpu, where).toBeDefined();
        expect(container.resources.requests.memory, where).toBeDefined();
      }
    }
  });

  it.each(['cpu', 'gpu'])('%s worker: its queue, every worker variable from the ConfigMap and Secret, the image user', (queue) => {
    const pod = k8s('Deployment', `${queue}-worker`).spec.template.spec;
    const [container] = pod.containers;
    expect(container.args).toEqual(['worker', '--queue', queue]);
    expect(container.image).toMatch(new RegExp(`^densepipe-${queue}-worker:`));
    const provided = container.envFrom.flatMap((source: Yaml) =>
      source.configMapRef
        ? Object.keys(k8s('ConfigMap', source.configMapRef.name).data)
        : Object.keys(k8s('Secret', source.secretRef.name).stringData),
    );
    for (const variable of WORKER_ENV) expect(provided, variable).toContain(variable);
    expect(pod.securityContext.runAsUser).toBe(numericUser(dockerfiles[queue as 'cpu' | 'gpu']));
  });

  it('gives the gpu worker one GPU and tolerates the GPU node taint', () => {
    const pod = k8s('Deployment', 'gpu-worker').spec.template.spec;
    expect(pod.containers[0].resources.limits['nvidia.com/gpu']).toBe(1);
    expect(pod.tolerations).toContainEqual({ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
  });

  it('runs Temporal as a single-replica dev server on a volume, labelled as such', () => {
    const temporal = k8s('Deployment', 'temporal');
    expect(temporal.spec.replicas).toBe(1);
    expect(temporal.spec.strategy.type).toBe('Recreate');
    expect(temporal.metadata.annotations['densepipe.dev/deployment-mode']).toMatch(/single-node development only/);
    const args: string[] = temporal.spec.template.spec.containers[0].args;
    expect(args).toContain('--db-filename=/data/temporal.db');
    for (const name of Object.values(SEARCH_ATTRIBUTES)) expect(args).toContain(`--search-attribute=${name}=Keyword`);
    expect(k8s('PersistentVolumeClaim', 'temporal-data').spec.accessModes).toEqual(['ReadWriteOnce']);
  });

  it('uses the same Temporal and versitygw images as the compose file', () => {
    const services = compose.services as Record<string, Yaml>;
    expect(k8s('Deployment', 'temporal').spec.template.spec.containers[0].image).toBe(services.temporal.image);
    expect(k8s('Deployment', 's3').spec.template.spec.containers[0].image).toBe(services.s3.image);
  });
});
