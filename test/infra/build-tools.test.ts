import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// The two Python helpers the image build and the lint use, run on small synthetic wheels (zip files
// with the same member layout as the real ones) so the tests take milliseconds, not a 270 MB download.
// The real wheels are exercised by scripts/lint-infra.sh (test/infra/lint.test.ts) and, for
// libtensorflow, by the image-build rehearsal described in docs/DEPLOY.md.

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const STAGE = join(ROOT, 'docker', 'stage-libtensorflow.py');
const SCHEMAS = join(ROOT, 'infra', 'tools', 'k8s-schemas.py');

function hasPython(): boolean {
  try {
    execFileSync('python3', ['-c', 'import zipfile, hashlib'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const python = hasPython();

// Created on first use, so a skipped run leaves nothing behind.
let scratchDir: string | undefined;
const scratch = () => (scratchDir ??= mkdtempSync(join(tmpdir(), 'densepipe-build-tools-')));
afterAll(() => {
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
});

/** Write a zip with the given members (name -> text) using Python's zipfile, return path and sha256. */
function makeWheel(name: string, members: Record<string, string>): { path: string; sha256: string } {
  const path = join(scratch(), name);
  execFileSync('python3', ['-c', 'import sys, json, zipfile\nwith zipfile.ZipFile(sys.argv[1], "w") as z:\n  for k, v in json.loads(sys.argv[2]).items(): z.writestr(k, v)', path, JSON.stringify(members)]);
  return { path, sha256: createHash('sha256').update(readFileSync(path)).digest('hex') };
}

function python3(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile('python3', args, { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

function fakeTfjsNode(name: string): string {
  const dir = join(scratch(), name);
  mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
  writeFileSync(join(dir, 'binding.gyp'), '{}');
  writeFileSync(join(dir, 'build', 'Release', 'tfjs_backend.o'), 'object file');
  return dir;
}

const TF_WHEEL_MEMBERS = {
  'tensorflow/libtensorflow_cc.so.2': 'C API library',
  'tensorflow/libtensorflow_framework.so.2': 'framework library',
  'tensorflow/python/libtensorflow_cc.so.2': 'a same-named file elsewhere in the wheel',
  'tensorflow/include/tensorflow/c/c_api.h': '/* c api */',
  'tensorflow/include/tensorflow/c/eager/c_api.h': '/* eager */',
  'tensorflow/include/tsl/platform/ctstring.h': '/* tstring */',
  'tensorflow/include/Eigen/Core': '/* not needed for the C API */',
};

describe.skipIf(!python)(`docker/stage-libtensorflow.py${python ? '' : ' (skipped: python3 not found)'}`, () => {
  it('stages the two libraries as regular files, the C headers, and the build-time linker names', async () => {
    const wheel = makeWheel('tf-ok.whl', TF_WHEEL_MEMBERS);
    const tfjs = fakeTfjsNode('tfjs-ok');
    const result = await python3([STAGE, 'stage', wheel.path, wheel.sha256, tfjs]);
    expect(result.output).toContain('staged libtensorflow_cc.so.2, libtensorflow_framework.so.2 and 3 headers');
    expect(result.code).toBe(0);

    const lib = join(tfjs, 'deps', 'lib');
    expect(lstatSync(join(lib, 'libtensorflow_cc.so.2')).isFile()).toBe(true);
    expect(readFileSync(join(lib, 'libtensorflow_cc.so.2'), 'utf8')).toBe('C API library');
    expect(lstatSync(join(lib, 'libtensorflow_framework.so.2')).isFile()).toBe(true);
    expect(readlinkSync(join(lib, 'libtensorflow.so'))).toBe('libtensorflow_cc.so.2');
    expect(readlinkSync(join(lib, 'libtensorflow.so.2.9.1'))).toBe('libtensorflow_cc.so.2');
    expect(readlinkSync(join(lib, 'libtensorflow_framework.so'))).toBe('libtensorflow_framework.so.2');
    expect(existsSync(join(tfjs, 'deps', 'include', 'tensorflow', 'c', 'eager', 'c_api.h'))).toBe(true);
    expect(existsSync(join(tfjs, 'deps', 'include', 'Eigen'))).toBe(false);

    // After the addon build: only what the binding loads at run time is left.
    const pruned = await python3([STAGE, 'prune', tfjs]);
    expect(pruned.code).toBe(0);
    expect(readdirSync(lib).sort()).toEqual(['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2']);
    expect(existsSync(join(tfjs, 'deps', 'include'))).toBe(false);
    expect(existsSync(join(tfjs, 'build'))).toBe(false);
  });

  it('extract lays out lib/ and include/ like scripts/setup.sh\'s cache (the cpu image\'s `libtensorflow` stage)', async () => {
    const wheel = makeWheel('tf-extract.whl', TF_WHEEL_MEMBERS);
    const out = join(scratch(), 'libtensorflow-extract');
    const result = await python3([STAGE, 'extract', wheel.path, wheel.sha256, out]);
    expect(result.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['include', 'lib']);
    expect(lstatSync(join(out, 'lib', 'libtensorflow_cc.so.2')).isFile()).toBe(true);
    expect(readlinkSync(join(out, 'lib', 'libtensorflow.so.2.9.1'))).toBe('libtensorflow_cc.so.2');
    expect(existsSync(join(out, 'include', 'tensorflow', 'c', 'c_api.h'))).toBe(true);
    const wrong = await python3([STAGE, 'extract', wheel.path, '0'.repeat(64), join(scratch(), 'libtensorflow-wrong')]);
    expect(wrong.code).toBe(1);
    expect(existsSync(join(scratch(), 'libtensorflow-wrong'))).toBe(false);
  });

  it('refuses a wheel whose hash differs from the pinned one, before touching anything', async () => {
    const wheel = makeWheel('tf-hash.whl', TF_WHEEL_MEMBERS);
    const tfjs = fakeTfjsNode('tfjs-hash');
    const wrong = '0'.repeat(64);
    const result = await python3([STAGE, 'stage', wheel.path, wrong, tfjs]);
    expect(result.code).toBe(1);
    expect(result.output).toContain(`sha256 ${wheel.sha256} does not match the pinned ${wrong}`);
    expect(existsSync(join(tfjs, 'deps'))).toBe(false);
  });

  it('names the missing library when the wheel lacks one', async () => {
    const { ['tensorflow/libtensorflow_framework.so.2']: _, ...withoutFramework } = TF_WHEEL_MEMBERS;
    const wheel = makeWheel('tf-missing.whl', withoutFramework);
    const result = await python3([STAGE, 'stage', wheel.path, wheel.sha256, fakeTfjsNode('tfjs-missing')]);
    expect(result.code).toBe(1);
    expect(result.output).toContain('has no tensorflow/libtensorflow_framework.so.2');
  });

  it('prune refuses to run when a runtime library is a symlink (it would dangle in the image)', async () => {
    const tfjs = fakeTfjsNode('tfjs-symlink');
    mkdirSync(join(tfjs, 'deps', 'lib'), { recursive: true });
    writeFileSync(join(scratch(), 'elsewhere.so'), 'x');
    execFileSync('ln', ['-s', join(scratch(), 'elsewhere.so'), join(tfjs, 'deps', 'lib', 'libtensorflow_cc.so.2')]);
    writeFileSync(join(tfjs, 'deps', 'lib', 'libtensorflow_framework.so.2'), 'x');
    const result = await python3([STAGE, 'prune', tfjs]);
    expect(result.code).toBe(1);
    expect(result.output).toContain('libtensorflow_cc.so.2 must be a regular file');
  });
});

describe.skipIf(!python)(`infra/tools/k8s-schemas.py${python ? '' : ' (skipped: python3 not found)'}`, () => {
  const base = 'kubernetes_validate/kubernetes-json-schema/v1.30.0-local-strict';
  const deployment = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://kubernetes.io/api/deployment/apps/v1',
    properties: { metadata: { $ref: '/api/_definitions.json#/$defs/ObjectMeta' }, items: [{ $ref: '#/$defs/local' }] },
  };
  const definitions = { $id: 'https://kubernetes.io/api/_definitions.json', $defs: { ObjectMeta: { type: 'object' } } };

  it('points shared-definition $refs at the local file and drops $id, leaving local refs alone', async () => {
    const wheel = makeWheel('schemas.whl', {
      [`${base}/deployment-apps-v1.json`]: JSON.stringify(deployment),
      [`${base}/_definitions.json`]: JSON.stringify(definitions),
    });
    const out = join(scratch(), 'schemas-out');
    const result = await python3([SCHEMAS, wheel.path, wheel.sha256, out, '1.30.0']);
    expect(result.code).toBe(0);
    const dir = join(out, 'v1.30.0-local-strict');
    const converted = JSON.parse(readFileSync(join(dir, 'deployment-apps-v1.json'), 'utf8'));
    expect(converted.$id).toBeUndefined();
    expect(converted.properties.metadata.$ref).toBe(`file://${join(dir, '_definitions.json')}#/$defs/ObjectMeta`);
    expect(converted.properties.items[0].$ref).toBe('#/$defs/local');
    expect(JSON.parse(readFileSync(join(dir, '_definitions.json'), 'utf8')).$id).toBeUndefined();
  });

  it('lists the versions the wheel has when asked for one it lacks', async () => {
    const wheel = makeWheel('schemas-versions.whl', { [`${base}/_definitions.json`]: JSON.stringify(definitions) });
    const result = await python3([SCHEMAS, wheel.path, wheel.sha256, join(scratch(), 'schemas-none'), '1.99.0']);
    expect(result.code).toBe(1);
    expect(result.output).toContain('has no schemas for Kubernetes 1.99.0; it has v1.30.0-local-strict');
  });
});
