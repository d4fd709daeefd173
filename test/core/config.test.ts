import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { configHash, loadRunConfig, parseOverrides, parseRunConfig, ConfigError } from '../../core/config.js';
import { projectRoot } from '../../cli/env.js';

const dir = mkdtempSync(join(tmpdir(), 'dp-config-'));
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

describe('run config', () => {
  it('fills defaults and hashes independently of key order', async () => {
    const a = await loadRunConfig(file('a.yaml', 'name: x\npretrain: { method: mocov2, steps: 5 }\n'));
    const b = await loadRunConfig(file('b.yaml', 'pretrain: { steps: 5, method: mocov2 }\nname: x\n'));
    expect(a.hash).toBe(b.hash);
    expect(a.config.data.source).toEqual({ kind: 'synthetic', size: 'tiny', seed: 0 });
    expect(a.config.orchestration.heartbeatTimeoutSeconds).toBe(60);
    expect(configHash(parseRunConfig({ name: 'x', pretrain: { method: 'mocov2', steps: 6 } }))).not.toBe(a.hash);
  });

  it('names the file, the field path and what was expected', async () => {
    await expect(loadRunConfig(file('bad.yaml', 'pretrain:\n  batchSize: "32x"\n'))).rejects.toThrow(/bad\.yaml: pretrain\.batchSize: .*expected number/);
    await expect(loadRunConfig(file('typo.yaml', 'pretrian: {}\n'))).rejects.toThrow(/typo\.yaml: .*pretrian/);
    await expect(loadRunConfig(file('enum.yaml', 'pretrain: { method: simclr }\n'))).rejects.toThrow(/enum\.yaml: pretrain\.method: .*mocov2.*densecl/);
    await expect(loadRunConfig(file('store.yaml', 'store: { uri: "http://x" }\n'))).rejects.toThrow(/store\.uri/);
    await expect(loadRunConfig(file('syntax.yaml', 'pretrain: [unclosed\n'))).rejects.toThrow(/syntax\.yaml: YAML syntax error/);
    await expect(loadRunConfig(join(dir, 'missing.yaml'))).rejects.toBeInstanceOf(ConfigError);
  });

  it('refuses a method that reads proposals on a run without them, or of the wrong kind, naming both fields', async () => {
    await expect(loadRunConfig(file('r2o-off.yaml', 'pretrain: { method: r2o }\nproposals: { enabled: false }\n'))).rejects.toThrow(/r2o-off\.yaml: proposals\.enabled: pretrain\.method 'r2o' reads region masks/);
    await expect(loadRunConfig(file('r2o-boxes.yaml', 'pretrain: { method: r2o }\nproposals: { preset: ccop }\n'))).rejects.toThrow(/r2o-boxes\.yaml: proposals\.preset: pretrain\.method 'r2o' reads region masks: proposals\.preset 'ccop' keeps no label maps/);
    await expect(loadRunConfig(file('ccop-off.yaml', 'pretrain: { method: ccop }\nproposals: { enabled: false }\n'))).rejects.toThrow(/proposals\.enabled: pretrain\.method 'ccop' reads proposal boxes/);
    // A method that reads none runs with the stage off.
    await expect(loadRunConfig(file('moco-off.yaml', 'pretrain: { method: mocov2 }\nproposals: { enabled: false }\n'))).resolves.toBeTruthy();
  });

  it('applies --set overrides with JSON values', async () => {
    const overrides = parseOverrides(['pretrain.steps=7', 'evaluation.tasks=["knn"]', 'name=over']);
    const { config } = await loadRunConfig(file('o.yaml', 'name: base\n'), overrides);
    expect(config.pretrain.steps).toBe(7);
    expect(config.evaluation.tasks).toEqual(['knn']);
    expect(config.name).toBe('over');
    expect(() => parseOverrides(['novalue'])).toThrow(/KEY=VALUE/);
  });

  it('evaluates the same backbone architecture that pretraining trains, unless told otherwise', () => {
    expect(parseRunConfig({ pretrain: { backbone: { arch: 'resnet-tiny' } } }).evaluation.backbone.arch).toBe('resnet-tiny');
    expect(parseRunConfig({ pretrain: { backbone: { arch: 'resnet-tiny' } }, evaluation: { backbone: { arch: 'resnet18' } } }).evaluation.backbone.arch).toBe('resnet18');
  });

  it('takes the store from DENSEPIPE_STORE when the config names none', () => {
    process.env.DENSEPIPE_STORE = 's3://team-bucket/densepipe';
    try {
      expect(parseRunConfig({}).store.uri).toBe('s3://team-bucket/densepipe');
      expect(parseRunConfig({ store: { uri: 'file:///tmp/x' } }).store.uri).toBe('file:///tmp/x');
    } finally {
      delete process.env.DENSEPIPE_STORE;
    }
    expect(parseRunConfig({}).store.uri).toBe('s3://densepipe/artifacts');
  });

  it('parses the shipped configs', async () => {
    for (const name of ['demo.yaml', 'mocov2-tiny.yaml', 'densecl-full-eval.yaml']) await expect(loadRunConfig(join(projectRoot(), 'configs', name))).resolves.toBeDefined();
  });
});

describe('CLI errors', () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [join(projectRoot(), 'bin', 'densepipe.js'), ...args], { encoding: 'utf8', env: { ...process.env, ...env }, cwd: dir });

  it('says which server is unreachable, where it looked and how to start it', () => {
    const res = cli(['status', 'some-run'], { TEMPORAL_ADDRESS: '127.0.0.1:9' });
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(/cannot reach Temporal at 127\.0\.0\.1:9 \(from TEMPORAL_ADDRESS\).*densepipe up/s);
  });

  it('validates a config and exits 2 on a bad one', () => {
    expect(cli(['validate', file('ok.yaml', 'name: fine\n')]).stdout).toMatch(/valid \(config hash [0-9a-f]{12}\)/);
    const bad = cli(['validate', file('bad2.yaml', 'evaluation: { tasks: [] }\n')]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/evaluation\.tasks/);
  });
});
