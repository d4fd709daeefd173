/**
 * The zoo's detector chains (bench/zoo.ts `DETECTOR_CHAINS`): every method that builds on a pretrained backbone has
 * one, on a backbone method of its family, with claims over its own controls; and every arm of a chain fine-tunes the
 * same detector: the from-scratch detector the `detr` task builds from the zoo's evaluation block has the shape the
 * method's run exports (built here at the zoo's settings on resnet-tiny), also under a `set=` override.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { DETECTOR_CHAINS, detectorEvaluation, parseOptions, type DetectorChain, type DetectorMethod } from '../../bench/zoo.js';
import { initBackend } from '../../core/tf.js';
import { deformableDetrConfig, detrHeadConfig } from '../../stages/downstream/detr/task.js';
import { evaluationConfigSchema } from '../../stages/downstream/index.js';
import type { MethodBuild, MethodModule } from '../../stages/methods/shared/contract.js';
import { METHOD_NAMES, methodModule } from '../../stages/methods/index.js';
import { resnetBackbone } from '../../stages/pretrain/index.js';

beforeAll(async () => {
  await initBackend('tensorflow');
});

const moduleOf = (name: string) => methodModule(name as (typeof METHOD_NAMES)[number]) as MethodModule;
const chains = Object.entries(DETECTOR_CHAINS) as Array<[DetectorMethod, DetectorChain]>;

/** The detector shape the method's run exports (its `exports.detector` metadata), at the zoo's settings of `argv`. */
function exportedShape(name: DetectorMethod, argv: string[]): Record<string, unknown> {
  const o = parseOptions(argv);
  const module = moduleOf(name);
  const overrides = Object.fromEntries((o.set.get(name) ?? []).filter((s) => s.path[0] === 'args').map((s) => [s.path[1], s.value]));
  const args = module.args.parse({ ...module.smallScale?.args, ...overrides });
  const build = { args, backbone: resnetBackbone('resnet-tiny'), backboneChannels: 0, seed: 0, batchSize: o.batch, imageSize: o.imageSize, totalSteps: 1 } as unknown as MethodBuild<typeof args>;
  const method = module.create(build);
  try {
    const metadata = method.exports?.detector?.metadata ?? {};
    const json = metadata.detr ?? metadata.deformableDetr;
    if (typeof json !== 'string') throw new Error(`${name} exports no detector shape`);
    return JSON.parse(json) as Record<string, unknown>;
  } finally {
    method.dispose();
  }
}

/** The from-scratch detector of the chain's control arms: the `detr` task's config from the zoo's evaluation block. */
function scratchShape(name: DetectorMethod, argv: string[], exported: Record<string, unknown>): { transformer: object; numQueries: number } {
  const evaluation = evaluationConfigSchema.parse(detectorEvaluation(parseOptions(argv), name, 0, false, 20));
  expect(evaluation.tasks).toEqual(['detr']);
  expect(evaluation.labelFraction).toBe(DETECTOR_CHAINS[name].labelFraction);
  expect(evaluation.detr.pretrainedDetector).toBe(false);
  expect(evaluation.detr.kind).toBe(DETECTOR_CHAINS[name].kind);
  if (DETECTOR_CHAINS[name].kind === 'deformable') {
    const c = deformableDetrConfig(evaluation.detr.deformable!, 3, exported.backboneChannels as number[], null);
    return { transformer: c.transformer, numQueries: c.numQueries };
  }
  const c = detrHeadConfig(evaluation.detr, 3, exported.backboneChannels as number, null);
  return { transformer: c.transformer, numQueries: c.numQueries };
}

describe('zoo detector chains', () => {
  it('chain every method that builds on a pretrained backbone, on a backbone method of its family, with claims over their own controls', () => {
    const detectors = METHOD_NAMES.filter((m) => moduleOf(m).consumes.pretrainedBackbone);
    expect(detectors.length).toBeGreaterThan(0);
    expect(Object.keys(DETECTOR_CHAINS).sort()).toEqual([...detectors].sort());
    for (const [name, chain] of chains) {
      expect(METHOD_NAMES, `${name}'s backbone`).toContain(chain.backbone);
      expect(moduleOf(chain.backbone).consumes.pretrainedBackbone, `${name}'s backbone ${chain.backbone} must pretrain a backbone`).toBeUndefined();
      expect(moduleOf(chain.backbone).architecture ?? 'resnet').toBe(moduleOf(name).architecture ?? 'resnet');
      expect(chain.claims.length).toBeGreaterThan(0);
      for (const claim of chain.claims) expect(Object.keys(chain.controls), `${name} claims over '${claim.over}'`).toContain(claim.over);
    }
  });

  it('refuse a detector method without a chain and a detector method as the detector backbone', () => {
    expect(() => parseOptions(['detectorBackbone=updetr'])).toThrow(/not a backbone method/);
    expect(() => parseOptions(['out=../x'])).toThrow(/out=/);
    expect(parseOptions(['methods=all']).methods).toEqual(expect.arrayContaining(Object.keys(DETECTOR_CHAINS)));
  });

  for (const [name] of chains) {
    for (const argv of [[], name === 'updetr' ? ['set=updetr.args.hiddenDim=32', 'set=updetr.args.preNorm=false'] : ['set=detreg.args.hiddenDim=64', 'set=detreg.args.decNPoints=3']]) {
      it(`${name}${argv.length ? ` (${argv.join(' ')})` : ''}: the from-scratch arms fine-tune a detector of the exported shape`, () => {
        const exported = exportedShape(name, argv);
        const scratch = scratchShape(name, argv, exported);
        expect(scratch.numQueries).toBe(exported.numQueries);
        for (const [k, v] of Object.entries(scratch.transformer)) if (k in exported) expect(exported[k], `${name} transformer.${k}`).toEqual(v);
        // Every field of the exported transformer is compared (the from-scratch config names each of them).
        const compared = Object.keys(scratch.transformer).filter((k) => k in exported);
        expect(compared.length).toBeGreaterThanOrEqual(DETECTOR_CHAINS[name].shape.length - 1);
        // The arm with the method's detector differs from the from-scratch ones in pretrainedDetector only.
        const o = parseOptions(argv);
        const withDetector = detectorEvaluation(o, name, 0, true, 20) as { detr: Record<string, unknown> };
        const without = detectorEvaluation(o, name, 0, false, 20) as { detr: Record<string, unknown> };
        expect({ ...withDetector, detr: { ...withDetector.detr, pretrainedDetector: false } }).toEqual(without);
      });
    }
  }
});
