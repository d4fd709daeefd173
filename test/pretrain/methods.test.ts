/**
 * The one training loop, over every registered method (from its configs/methods/NAME.yaml at test size): an
 * interrupted-then-resumed run reproduces the uninterrupted run's losses exactly, the live tensor count stays
 * flat across steps, the exported backbone has torchvision names, and a diverging loss stops the run as
 * TrainingDivergedError. A method added to the registry goes through all of it without touching this file.
 */
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../../cli/env.js';
import { loadRunConfig } from '../../core/config.js';
import { TrainingDivergedError } from '../../core/errors.js';
import { checkpointIO, localContext, runStage, stageHash } from '../../core/stage.js';
import { FileArtifactStore, getJson } from '../../core/store/index.js';
import { initBackend, tf } from '../../core/tf.js';
import { shardConfigSchema, shardStage } from '../../stages/data/index.js';
import { decodeSafetensors } from '../../stages/engine/safetensors.js';
import { METHOD_NAMES, methodModule, type MethodName } from '../../stages/methods/index.js';
import { proposalStage } from '../../stages/proposals/index.js';
import { BACKBONE_FAMILIES, pretrainConfigSchema, pretrainStage, type LossPoint, type PretrainConfig, type PretrainInputs } from '../../stages/pretrain/index.js';

/** The smallest preset of each backbone family: what the loop tests train. */
const TEST_ARCH = { resnet: 'resnet-tiny', vit: 'vit-micro-64' } as const;
const family = (method: MethodName) => methodModule(method).architecture ?? 'resnet';

/** The method's own config, at loop-test size: 4 steps of batch 4 at 32 px on resnet-tiny (a ViT method: vit-micro-64), checkpoint every 2. */
async function testConfig(method: MethodName, patch: Record<string, unknown> = {}): Promise<{ pretrain: PretrainConfig; proposals: Awaited<ReturnType<typeof loadRunConfig>>['config']['proposals'] }> {
  const { config } = await loadRunConfig(join(projectRoot(), 'configs', 'methods', `${method}.yaml`));
  const pretrain = pretrainConfigSchema.parse({
    ...config.pretrain,
    backbone: { arch: TEST_ARCH[family(method)] },
    batchSize: 4,
    steps: 4,
    imageSize: 32,
    checkpointEvery: { steps: 2, seconds: 600 },
    backend: 'tensorflow',
    ...patch,
  });
  return { pretrain, proposals: config.proposals };
}

/** The shard stage's built-in synthetic dataset ('tiny': 96 training images of 64 px in 2 shards), and proposals when the method reads them. */
async function makeInputs(store: FileArtifactStore, method: MethodName, proposals: Awaited<ReturnType<typeof testConfig>>['proposals']): Promise<PretrainInputs> {
  const dataset = (await runStage(shardStage, localContext(store), {}, shardConfigSchema.parse({}))).ref;
  if (!methodModule(method).consumes.proposals) return { dataset };
  const { enabled: _e, ...proposalConfig } = proposals;
  const refs = [];
  for (const shardKey of dataset.result.splits.train!.shardKeys) refs.push((await runStage(proposalStage, localContext(store), { dataset, shardKey }, proposalConfig)).ref);
  return { dataset, proposals: refs };
}

let dir: string;

/**
 * A fresh store for one test, holding the method's inputs. The dataset and (per proposal settings) the proposals are
 * made once, in a store of their own, and copied: the shard and proposal stages run once per file, not per test.
 */
const prepared = new Map<string, { dir: string; inputs: PretrainInputs }>();
async function storeWithInputs(name: string, method: MethodName, proposals: Awaited<ReturnType<typeof testConfig>>['proposals']): Promise<{ store: FileArtifactStore; inputs: PretrainInputs }> {
  const key = methodModule(method).consumes.proposals ? JSON.stringify(proposals) : 'no proposals';
  let made = prepared.get(key);
  if (!made) {
    const inputsDir = join(dir, `inputs-${prepared.size}`);
    made = { dir: inputsDir, inputs: await makeInputs(new FileArtifactStore(inputsDir), method, proposals) };
    prepared.set(key, made);
  }
  cpSync(made.dir, join(dir, name), { recursive: true });
  return { store: new FileArtifactStore(join(dir, name)), inputs: made.inputs };
}

beforeAll(async () => {
  await initBackend('tensorflow');
  dir = mkdtempSync(join(tmpdir(), 'densepipe-pretrain-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each(METHOD_NAMES)('training loop (%s)', (method) => {
  it('resumes from a checkpoint to the same losses as an uninterrupted run, with flat memory', async () => {
    const { pretrain, proposals } = await testConfig(method);
    const { store: full, inputs } = await storeWithInputs(`${method}-full`, method, proposals);
    const tensorCounts: number[] = [];
    const uninterrupted = await runStage(pretrainStage, localContext(full, { onProgress: (u) => u.step && tensorCounts.push(tf.memory().numTensors) }), inputs, pretrain);
    const curveFull = (await getJson<{ points: LossPoint[] }>(full, uninterrupted.ref.result.lossCurveKey)).points;
    expect(curveFull.map((p) => p.step)).toEqual([1, 2, 3, 4]);
    for (const p of curveFull) expect(Number.isFinite(p.loss)).toBe(true);
    // The steps differ from each other (the model and the data move).
    expect(new Set(curveFull.map((p) => p.loss)).size).toBe(4);
    // Logged parts are the weighted terms of the loss: when there are several, they add up to it.
    const parts = Object.keys(curveFull[0]!).filter((k) => !['step', 'loss', 'lr'].includes(k));
    if (parts.length > 1) expect(parts.reduce((sum, k) => sum + curveFull[0]![k]!, 0)).toBeCloseTo(curveFull[0]!.loss, 4);
    expect(uninterrupted.ref.result.resumedFromStep).toBe(0);
    // Every step leaves exactly as many live tensors as the one before.
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);

    // Same run, cancelled after step 3 (a checkpoint exists at step 2), then resumed.
    const { store: broken } = await storeWithInputs(`${method}-resumed`, method, proposals);
    const abort = new AbortController();
    const firstTry = runStage(pretrainStage, localContext(broken, { signal: abort.signal, onProgress: (u) => u.step === 3 && abort.abort('test') }), inputs, pretrain);
    await expect(firstTry).rejects.toThrow(/cancelled/);
    const resumed = await runStage(pretrainStage, localContext(broken), inputs, pretrain);
    expect(resumed.ref.result.resumedFromStep).toBe(2);
    const curveResumed = (await getJson<{ points: LossPoint[] }>(broken, resumed.ref.result.lossCurveKey)).points;
    expect(curveResumed).toEqual(curveFull);
    expect(resumed.ref.result.finalLoss).toBe(uninterrupted.ref.result.finalLoss);

    // Backbone export: torchvision (ViT: timm) names, PyTorch layouts, identical after resume, no head weights.
    const a = decodeSafetensors(await full.get(uninterrupted.ref.result.backboneKey));
    const b = decodeSafetensors(await broken.get(resumed.ref.result.backboneKey));
    const expected = {
      resnet: { first: ['conv1.weight', [8, 3, 3, 3]], names: /^(conv1|bn1|layer\d)\./, last: 'layer4.0.conv2.weight' },
      vit: { first: ['patch_embed.proj.weight', [96, 3, 8, 8]], names: /^(cls_token$|pos_embed$|patch_embed\.|blocks\.\d+\.|norm\.)/, last: 'blocks.3.mlp.fc2.weight' },
    } as const;
    const e = expected[family(method)];
    expect(a.tensors.get(e.first[0])!.shape).toEqual(e.first[1]);
    expect([...a.tensors.keys()].filter((k) => !e.names.test(k))).toEqual([]);
    expect(Buffer.from(b.tensors.get(e.last)!.data).equals(Buffer.from(a.tensors.get(e.last)!.data))).toBe(true);
  });

  it('stops a diverging run as TrainingDivergedError, not retried', async () => {
    const { pretrain, proposals } = await testConfig(method, { optimizer: { baseLr: 1e30 }, checkpointEvery: { steps: 100, seconds: 600 } });
    const { store, inputs } = await storeWithInputs(`${method}-diverge`, method, proposals);
    const run = runStage(pretrainStage, localContext(store), inputs, pretrain);
    await expect(run).rejects.toBeInstanceOf(TrainingDivergedError);
  });

  it('refuses a checkpoint written by another method, naming the file', async () => {
    const other = METHOD_NAMES.find((m) => m !== method)!;
    const { pretrain: mine, proposals } = await testConfig(method);
    const { pretrain: theirs } = await testConfig(other);
    const { store, inputs } = await storeWithInputs(`${method}-foreign`, method, proposals);
    // Plant the other method's first checkpoint where this run will look for its own.
    const abort = new AbortController();
    const foreign = runStage(pretrainStage, localContext(store, { signal: abort.signal, onProgress: (u) => u.step === 2 && abort.abort('test') }), inputs, theirs);
    await expect(foreign).rejects.toThrow(/cancelled/);
    const theirsDir = `checkpoints/pretrain/${stageHash(pretrainStage, inputs, theirs)}`;
    const mineDir = `checkpoints/pretrain/${stageHash(pretrainStage, inputs, mine)}`;
    for (const key of await store.list(theirsDir)) await store.put(key.replace(theirsDir, mineDir), await store.get(key));
    expect((await checkpointIO(store, mineDir).latest())?.step).toBe(2);
    await expect(runStage(pretrainStage, localContext(store), inputs, mine)).rejects.toThrow(/checkpoint belongs to another model\/method: .*method/);
  });
});

describe('pretrain config', () => {
  it('has defaults for everything: DenseCL with the paper\'s arguments and optimizer', () => {
    const c = pretrainConfigSchema.parse({});
    expect(c.method).toBe('densecl');
    expect(c.args).toMatchObject({ temperature: 0.2, lossLambda: 0.5, queueSize: 65536, momentum: 0.999 });
    expect(c.optimizer).toEqual({ kind: 'sgd', baseLr: 0.03, momentum: 0.9, weightDecay: 1e-4 });
  });

  it('refuses unknown methods, misspelt arguments, arguments of another method and pre-args fields, naming each', () => {
    const issues = (raw: unknown) => {
      const r = pretrainConfigSchema.safeParse(raw);
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(issues({ method: 'simclr' })).toEqual([`method: unknown method "simclr" (valid: ${METHOD_NAMES.join(', ')})`]);
    expect(issues({ method: 'mocov2', args: { lossLambda: 0.3 } })[0]).toMatch(/^args\.lossLambda: an argument of densecl, not of mocov2 \(valid for mocov2: temperature, queueSize/);
    expect(issues({ method: 'mocov2', args: { temprature: 0.1 } })[0]).toMatch(/^args\.temprature: not an argument of mocov2/);
    expect(issues({ queueSize: 64 })).toEqual(['queueSize: method arguments live under pretrain.args now: write pretrain.args.queueSize']);
    expect(issues({ emaMomentum: 0.99 })).toEqual(['emaMomentum: method arguments live under pretrain.args now: write pretrain.args.momentum']);
    expect(issues({ temprature: 0.1 }).join()).toMatch(/temprature/);
    // A backbone of the other family is refused naming the field and the method's presets; a misspelt preset by zod's enum.
    expect(issues({ method: 'mocov2', backbone: { arch: 'vit-tiny' } })).toEqual([
      `backbone.arch: mocov2 trains a ResNet; 'vit-tiny' is a vit preset (valid: ${BACKBONE_FAMILIES.resnet.presets.join(', ')})`,
    ]);
    expect(issues({ method: 'mocov2', backbone: { arch: 'resnet19' } })[0]).toMatch(/^backbone\.arch: /);
  });

  it('keys a run by its proposals only when the method reads them', async () => {
    const dataset = { stage: 'shard', hash: 'd', manifestKey: 'm', result: { datasetManifestKey: 'd', splits: { train: { shardKeys: ['a'], samples: 100 } } } };
    const proposals = (hash: string) => [{ stage: 'proposals', hash, manifestKey: 'p', result: { proposalsKey: 'k' } }];
    for (const method of METHOD_NAMES) {
      const { pretrain } = await testConfig(method);
      const [a, b] = [stageHash(pretrainStage, { dataset, proposals: proposals('p1') }, pretrain), stageHash(pretrainStage, { dataset, proposals: proposals('p2') }, pretrain)];
      if (methodModule(method).consumes.proposals) expect(a, method).not.toBe(b);
      else expect(a, method).toBe(b);
    }
  });

  it('keys a run by its method\'s own version once bumped, and leaves the other methods\' keys as they were', () => {
    const dataset = { stage: 'shard', hash: 'd', manifestKey: 'm', result: { datasetManifestKey: 'd', splits: { train: { shardKeys: ['a'], samples: 100 } } } };
    const inputs = { dataset, proposals: [] };
    // Before per-method versions the key config was the config itself: a method at version 1 keeps that key.
    const legacy = (config: PretrainConfig) => stageHash({ ...pretrainStage, keyConfig: ({ checkpointEvery: _c, backend: _b, ...rest }: PretrainConfig) => rest }, inputs, config);
    const mocov2 = pretrainConfigSchema.parse({ method: 'mocov2' });
    expect(stageHash(pretrainStage, inputs, mocov2)).toBe(legacy(mocov2));
    const ccop = pretrainConfigSchema.parse({ method: 'ccop' });
    expect(methodModule('ccop').version).toBe('2');
    expect(stageHash(pretrainStage, inputs, ccop)).not.toBe(legacy(ccop));
  });

  it('refuses a queue that is not a multiple of the batch before training, naming the field', async () => {
    const inputs = { dataset: { stage: 'shard', hash: 'h', manifestKey: 'm', result: { datasetManifestKey: 'd', splits: { train: { shardKeys: ['a'], samples: 100 } } } } };
    const { pretrain } = await testConfig('mocov2', { args: { queueSize: 18 } });
    expect(() => pretrainStage.validate!(inputs, pretrain)).toThrow(/pretrain\.args\.queueSize: 18 must be a multiple of the batch size 4/);
    expect(() => pretrainStage.validate!(inputs, { ...pretrain, split: 'val' })).toThrow(/no split 'val'/);
  });
});
