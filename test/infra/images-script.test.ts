import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// scripts/images.sh stops before building anything when its inputs are wrong, and says what to
// rebuild. Each case below changes one input through the environment and checks the message. They
// need podman and root (the script's own requirements) and never build: every case stops in a check.
// The base-image cases use a private, empty podman storage, or the real local base when it exists.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = join(ROOT, 'scripts', 'images.sh');
const CACHE = process.env.DENSEPIPE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'densepipe');

function has(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const isRoot = process.getuid?.() === 0;
const ready = isRoot && has('podman') && has('runc') && has('debootstrap');
const podmanConf = join(CACHE, 'images', 'containers.conf');
const baseExists = (() => {
  if (!ready) return false;
  try {
    execFileSync('podman', ['--runtime', 'runc', '--cgroup-manager', 'cgroupfs', 'image', 'exists', 'localhost/densepipe-debian:bookworm'], { stdio: 'ignore', env: { ...process.env, CONTAINERS_CONF: podmanConf } });
    return true;
  } catch {
    return false;
  }
})();
const libtensorflowReady = (() => {
  try {
    const version = /^TF_VERSION=(\S+)/m.exec(execFileSync('cat', [join(ROOT, 'scripts', 'setup.sh')], { encoding: 'utf8' }))![1];
    execFileSync('test', ['-f', join(CACHE, `libtensorflow-${version}`, '.complete')]);
    return true;
  } catch {
    return false;
  }
})();

let scratchDir: string | undefined;
const scratch = () => (scratchDir ??= mkdtempSync(join(tmpdir(), 'densepipe-images-script-')));
afterAll(() => {
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
});

function images(args: string[], env: Record<string, string>): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile('bash', [SCRIPT, ...args], { env: { ...process.env, ...env }, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

/** A podman storage of its own: no images in it, so every local base is "missing". */
function emptyPodmanStorage(): Record<string, string> {
  const dir = join(scratch(), 'storage');
  const conf = join(scratch(), 'storage.conf');
  writeFileSync(conf, `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/graph"\nrunroot = "${dir}/run"\n`);
  return { CONTAINERS_STORAGE_CONF: conf };
}

describe.skipIf(!ready)(`scripts/images.sh stops on bad input and names what to rebuild${ready ? '' : ' (skipped: needs root, podman, runc and debootstrap)'}`, () => {
  it('a Node release that package.json engines.node does not accept', async () => {
    const result = await images(['node'], { DENSEPIPE_NODE_VERSION: '18.20.4' });
    expect(result.code).toBe(1);
    expect(result.output).toContain('Node 18.20.4 (NODE_VERSION in scripts/images.sh) does not satisfy package.json engines.node');
    expect(result.output).toContain("rebuild with 'bash scripts/images.sh node'");
  });

  it('no libtensorflow from scripts/setup.sh in the cache', async () => {
    const cache = join(scratch(), 'cache');
    const result = await images(['cpu'], { DENSEPIPE_CACHE: cache });
    expect(result.code).toBe(1);
    expect(result.output).toMatch(/libtensorflow \S+ is not in .*cache\/libtensorflow-\S+: run 'bash scripts\/setup.sh'/);
  });

  it.skipIf(!libtensorflowReady)('a missing local base, for the node and worker images', async () => {
    for (const command of ['node', 'cpu']) {
      const result = await images([command], emptyPodmanStorage());
      expect(result.code, command).toBe(1);
      expect(result.output, command).toContain("the local base localhost/densepipe-debian:bookworm is missing: make it with 'bash scripts/images.sh base'");
    }
  });

  it.skipIf(!baseExists)('a local base older than DENSEPIPE_BASE_MAX_AGE_DAYS', async () => {
    const result = await images(['node'], { DENSEPIPE_BASE_MAX_AGE_DAYS: '-1' });
    expect(result.code).toBe(1);
    expect(result.output).toMatch(/the local base localhost\/densepipe-debian:bookworm is stale: \d+ days old .*Rebuild it with 'bash scripts\/images.sh base --rebuild'/);
  });

  it.skipIf(!baseExists)('a local base made from another recipe (another Debian mirror)', async () => {
    const result = await images(['base'], { DENSEPIPE_DEBIAN_MIRROR: 'http://mirror.invalid/debian' });
    expect(result.code).toBe(1);
    expect(result.output).toContain('is stale: built from another recipe');
    expect(result.output).toContain("Rebuild it with 'bash scripts/images.sh base --rebuild'");
  });

  it('an unknown command or option', async () => {
    expect((await images(['push'], {})).output).toContain('unknown command push (known: all, base, node, cpu, gpu, sizes, prune)');
    expect((await images(['cpu', '--fast'], {})).output).toContain('unknown option --fast');
  });
});
