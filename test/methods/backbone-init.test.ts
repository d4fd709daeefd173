/**
 * `MethodModule.backboneInit` against the survey of every registered method's official code (at its `code.commit`):
 * does the backbone its official pretraining builds zero-init the last BN γ of each residual branch? A method added
 * to the registry must get a row here, with its evidence, before this passes. And the pretrain stage applies the
 * declaration where it builds a method's backbone (`createMethod`), to the online and the momentum encoder alike.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../core/tf.js';
import { METHOD_NAMES, METHODS, type MethodName } from '../../stages/methods/index.js';
import type { MethodModule } from '../../stages/methods/shared/contract.js';
import { createMethod, pretrainConfigSchema } from '../../stages/pretrain/index.js';

/** The survey: `true` = the official backbone zero-inits the residual branch's last BN γ; `null` = no ResNet is initialised by the method. */
const SURVEY: Record<MethodName, { zeroInitResidual: boolean | null; evidence: string }> = {
  mocov2: { zeroInitResidual: false, evidence: 'moco/builder.py:31-32 base_encoder(num_classes=dim) with base_encoder = torchvision models.__dict__[args.arch] (main_moco.py:30, 248-249): torchvision default zero_init_residual=False' },
  densecl: { zeroInitResidual: false, evidence: 'configs/selfsup/densecl/densecl_imagenet_200ep.py:10-15 backbone dict without zero_init_residual; openselfsup/models/backbones/resnet.py:304 default False (397-402 unused)' },
  pixpro: { zeroInitResidual: true, evidence: "contrast/resnet.py:164-173 zeroes every parameter ending in 'bn3.weight' (Bottleneck) / 'bn2.weight' (BasicBlock); main_pretrain.py:30, models/PixPro.py:113, 117, 120-122" },
  scrl: { zeroInitResidual: false, evidence: 'models/backbone.py:19 eval(f"models.{name}")(): torchvision resnet50(), zero_init_residual=False' },
  regioncl: { zeroInitResidual: false, evidence: 'configs/selfsup/regionCL-M/regionCLM-r50.py:13-18 backbone dict without zero_init_residual; openselfsup/models/backbones/resnet.py:304 default False' },
  resim: { zeroInitResidual: false, evidence: 'moco/models.py:141 zero_init_residual=False, 193-198 unused: moco/builder.py:27-28 base_encoder(num_classes=dim, use_fpn_norm=fpn_bn), main_moco.py:166' },
  r2o: { zeroInitResidual: false, evidence: "model/basic_modules.py:33 torchvision models.__dict__[net_name](pretrained=False) (config/train_imagenet_300.yaml:4-5): zero_init_residual=False" },
  ccop: { zeroInitResidual: false, evidence: 'openselfsup/models/utils/d2_fpn.py:11, 229 detectron2 build_resnet_backbone; detectron2 modeling/backbone/resnet.py:190 the zero-init line is commented out (BottleneckBlock)' },
  densesiam: { zeroInitResidual: false, evidence: 'densesiam/models/architectures/densesiam.py:64 resnet.__dict__[arch](pretrained=pretrained); densesiam/models/backbones/picie_resnet.py:162 default False (222-227 unused); the config loads ImageNet weights (pretrained=True) anyway' },
  detco: { zeroInitResidual: false, evidence: 'no pretext code released (README "Coming Soon"): the transcription keeps the default, as MoCo v2 (its base)' },
  lcloss: { zeroInitResidual: false, evidence: "no official code: the default. Its base BYOL (deepmind-research byol/utils/networks.py, haiku BlockV1) zeroes batchnorm_2's scale in Bottleneck blocks only (scale_init=jnp.zeros), not in basic blocks" },
  swav: { zeroInitResidual: false, evidence: 'src/resnet50.py:139 zero_init_residual=False, 229-234 unused: main_swav.py:150-155 does not pass it' },
  scfs: { zeroInitResidual: false, evidence: 'main_scfs.py:221-222 torchvision_models.__dict__[args.arch](): zero_init_residual=False' },
  updetr: { zeroInitResidual: null, evidence: 'trains a detector on a frozen backbone of an earlier run (consumes.pretrainedBackbone): no ResNet init of its own' },
  mocov3: { zeroInitResidual: null, evidence: 'ViT (architecture vit)' },
  detreg: { zeroInitResidual: null, evidence: 'trains a detector on a frozen backbone of an earlier run (consumes.pretrainedBackbone): no ResNet init of its own' },
  siameseim: { zeroInitResidual: null, evidence: 'ViT (architecture vit)' },
};

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('backboneInit', () => {
  it('the survey has a row for every registered method, and nothing else', () => {
    expect(Object.keys(SURVEY).sort()).toEqual([...METHOD_NAMES].sort());
  });

  it.each(METHOD_NAMES)('%s declares what its official code does', (name) => {
    const module = METHODS[name] as MethodModule;
    const row = SURVEY[name];
    if (row.zeroInitResidual === null) {
      expect(module.backboneInit, `${name}: ${row.evidence}`).toBeUndefined();
      return;
    }
    expect(module.backboneInit?.zeroInitResidual ?? false, `${name}: ${row.evidence}`).toBe(row.zeroInitResidual);
    if (module.backboneInit) {
      expect(module.architecture ?? 'resnet').toBe('resnet');
      // The reason cites the official file and line, and the change is in the method's cache key.
      expect(module.backboneInit.why).toMatch(/\.py:\d+/);
      expect(module.version ?? '1', `${name}: a backbone init changes what the method learns`).not.toBe('1');
    }
  });

  it('createMethod applies it to the online and the momentum encoder (PixPro), and not to a method without it (MoCo v2)', () => {
    const lastBn = (name: string) => /^backbone\.layer\d+\.\d+\.bn2\.weight$/.test(name);
    const otherBnWeight = (name: string) => /^backbone\.(.*bn\d|.*downsample\.1)\.weight$/.test(name) && !lastBn(name);
    const build = (method: 'pixpro' | 'mocov2') =>
      createMethod(pretrainConfigSchema.parse({ method, backbone: { arch: 'resnet-tiny' }, batchSize: 4, imageSize: 32, steps: 2, ...(method === 'mocov2' ? { args: { queueSize: 8 } } : {}) }));
    for (const method of ['pixpro', 'mocov2'] as const) {
      const instance = build(method);
      const stores = [instance.online.vars, ...Object.values(instance.state).map((c) => c.tensors)].filter((t) => [...t.keys()].some((n) => n.startsWith('backbone.')));
      expect(stores, `${method}: the online and the momentum encoder`).toHaveLength(2);
      for (const tensors of stores) {
        const names = [...tensors.keys()];
        expect(names.filter(lastBn)).toHaveLength(4);
        for (const n of names.filter(lastBn)) expect(Array.from(tensors.get(n)!.dataSync()), `${method} ${n}`).toEqual(new Array(tensors.get(n)!.size).fill(method === 'pixpro' ? 0 : 1));
        for (const n of names.filter(otherBnWeight)) expect(Array.from(tensors.get(n)!.dataSync()), `${method} ${n}`).toEqual(new Array(tensors.get(n)!.size).fill(1));
      }
      instance.dispose();
    }
  });
});
