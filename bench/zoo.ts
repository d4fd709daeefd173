// The method zoo: every registered method × seeds on the built-in benchmark at one budget, evaluated on the
// localization tasks (frozen-backbone semantic segmentation, unsupervised object segmentation) and the global
// ones (kNN, linear), beside a random-init backbone and the supervised baseline trained on the same data and
// budget. A claim-check row per method: the paper's headline claim over MoCo v2 (the module's `claims`) and
// whether its direction holds here, paired by seed. A method that beats random init on no localization
// metric is flagged SUSPECT. Detector methods (UP-DETR, DETReg: a whole detector pretrained on a frozen backbone of an
// earlier run) run as chains: the backbone run, the method on it, and the `detr` fine-tune of its detector against
// the same detector from scratch (`DETECTOR_CHAINS`; docs/ZOO.md "Detector methods").
//
// Usage: npm run bench -- zoo [key=value ...]
//   methods=all|name,name  seeds=0,1,2  steps=STEPS  size=small arch=resnet-tiny imageSize=64 batch=32
//   maxSamples=1000 semsegEpochs=10 linearEpochs=30
//   set=METHOD.PATH=VALUE      (repeatable) override one pretrain setting of one method, e.g.
//                               set=pixpro.optimizer.baseLr=32 or set=pixpro.args.insLossWeight=1: a probe of a
//                               suspect; the arm is labelled with its overrides and cached apart
//   calibrate=1000,2000,3000   only MoCo v2 and DenseCL at each budget in turn, stopping at the first at which
//                               DenseCL's semseg advantage is resolved (see `resolved` below); writes zoo-calibration.json
//   detrEpochs=20 detrShortEpochs=5 detectorBackbone=swav
//                              detector methods (UP-DETR, DETReg): chained arms (`DETECTOR_CHAINS`): the backbone run
//                               they build on, their pretraining on it, the `detr` fine-tune (detrEpochs; UP-DETR's
//                               convergence claim also after detrShortEpochs) against the same detector from scratch
//   out=NAME                   write bench/results/zoo-NAME.json and leave docs/ZOO-TABLE.md alone (smoke runs)
// Each method runs with its module's `smallScale` settings (arguments and optimizer for short runs, with
// the reason in the module). Every stage output is cached in the experiment store (DENSEPIPE_EXPERIMENT_CACHE),
// so adding a method costs only that method's runs, and an interrupted run continues where it stopped.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { localContext, runStage, type StageRef } from '../core/stage.js';
import { initBackend } from '../core/tf.js';
import type { ShardResult } from '../stages/data/index.js';
import type { DetrKind } from '../stages/downstream/detr/config.js';
import type { Claim, MethodModule } from '../stages/methods/shared/contract.js';
import { METHOD_NAMES, methodModule, type MethodName } from '../stages/methods/index.js';
import { proposalStage, type ProposalResult } from '../stages/proposals/index.js';
import type { PretrainResult } from '../stages/pretrain/index.js';
import { supervisedConfigFor, supervisedStage } from '../stages/pretrain/supervised.js';
import { claimVerdict, paired, type Paired } from '../stages/regression/claims.js';
import type { BenchResult, BenchRow } from './_run.js';
import { evaluate, experimentStore, meanStd, pretrain, runConfig, say, shard } from './_stage-runs.js';

const LOCALIZATION = ['semseg.mIoU', 'unsup-seg.mIoU'] as const;
const GLOBAL = ['knn.top1', 'linear.top1'] as const;
const METRICS = [...LOCALIZATION, ...GLOBAL] as const;
type Metric = (typeof METRICS)[number];

/**
 * The budget, calibrated (docs/ZOO.md §Budget): the cheapest number of steps at which DenseCL's known semseg
 * advantage over MoCo v2 (docs/EXPERIMENTS.md §1: 5/5 seeds at 3000 steps, unresolved at 300) is still resolved
 * over seed noise with 3 seeds. Set from `calibrate=` runs; see bench/results/zoo-calibration.json.
 */
const CALIBRATED_STEPS = 1000;

export interface Options {
  /** Backbone methods (the zoo's arms) and detector methods (chained arms, `DETECTOR_CHAINS`). */
  methods: MethodName[];
  seeds: number[];
  steps: number;
  size: 'tiny' | 'small' | 'full';
  /** The ResNet preset of ResNet-family methods and the baselines. */
  arch: string;
  /** The ViT preset of ViT-family methods (SiameseIM, MoCo v3) and their random-init baseline. */
  vitArch: string;
  imageSize: number;
  batch: number;
  maxSamples: number;
  semsegEpochs: number;
  linearEpochs: number;
  calibrate: number[];
  /** Per method, pretrain settings overridden by `set=` (path below `pretrain`, value parsed as JSON when it parses). */
  set: Map<MethodName, Array<{ path: string[]; value: unknown }>>;
  /** Epochs of every detector arm's `detr` fine-tune. */
  detrEpochs: number;
  /** Epochs of the short fine-tune of a convergence claim (UP-DETR's: AP after fewer epochs). */
  detrShortEpochs: number;
  /** The backbone method every detector method builds on; null = each chain's own (`DETECTOR_CHAINS[m].backbone`). */
  detectorBackbone: MethodName | null;
  /** Not null: a smoke or side run, written to bench/results/zoo-OUT.json; docs/ZOO-TABLE.md is left alone. */
  out: string | null;
}

/**
 * A detector method: it builds on a frozen backbone of an earlier run (`consumes.pretrainedBackbone`: UP-DETR, DETReg)
 * and trains a whole detector, which the backbone-only tasks cannot see. The zoo runs it as a chain
 * (`DETECTOR_CHAINS`): the backbone run, the method on that backbone, the `detr` fine-tune against from-scratch arms.
 */
const isDetectorMethod = (m: MethodName): boolean => Boolean((methodModule(m) as MethodModule).consumes.pretrainedBackbone);

/** `methods=all`: every registered method; the detector methods as chained arms. */
const ZOO_METHODS = [...METHOD_NAMES];

const DEFAULTS: Options = { methods: [...ZOO_METHODS], seeds: [0, 1, 2], steps: CALIBRATED_STEPS, size: 'small', arch: 'resnet-tiny', vitArch: 'vit-micro-64', imageSize: 64, batch: 32, maxSamples: 1000, semsegEpochs: 10, linearEpochs: 30, calibrate: [], set: new Map(), detrEpochs: 20, detrShortEpochs: 5, detectorBackbone: null, out: null };

export function parseOptions(args: string[]): Options {
  const o: Options = { ...DEFAULTS, methods: [...DEFAULTS.methods], seeds: [...DEFAULTS.seeds], set: new Map() };
  const keys = Object.keys(DEFAULTS).join(', ');
  for (const arg of args) {
    const eq = arg.indexOf('=');
    if (eq <= 0) throw new Error(`zoo: argument ${JSON.stringify(arg)} is not key=value (keys: ${keys})`);
    const key = arg.slice(0, eq);
    const value = arg.slice(eq + 1);
    const numbers = () => value.split(',').map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) throw new Error(`zoo: ${key}=${value}: '${s}' is not a non-negative integer`);
      return n;
    });
    switch (key) {
      case 'methods': {
        const names = value === 'all' ? [...ZOO_METHODS] : value.split(',');
        const unknown = names.filter((n) => !(METHOD_NAMES as readonly string[]).includes(n));
        if (unknown.length) throw new Error(`zoo: unknown method(s) ${unknown.join(', ')} (registered: ${METHOD_NAMES.join(', ')})`);
        const unchained = (names as MethodName[]).filter((n) => isDetectorMethod(n) && !Object.hasOwn(DETECTOR_CHAINS, n));
        if (unchained.length) throw new Error(`zoo: ${unchained.join(', ')} build(s) on a pretrained backbone but bench/zoo.ts DETECTOR_CHAINS has no chain for it (chains: ${Object.keys(DETECTOR_CHAINS).join(', ')})`);
        o.methods = names as MethodName[];
        break;
      }
      case 'detectorBackbone': {
        if (!(METHOD_NAMES as readonly string[]).includes(value) || isDetectorMethod(value as MethodName)) throw new Error(`zoo: detectorBackbone=${value}: not a backbone method (registered: ${METHOD_NAMES.filter((m) => !isDetectorMethod(m)).join(', ')})`);
        o.detectorBackbone = value as MethodName;
        break;
      }
      case 'out': {
        if (!/^[a-z0-9][a-z0-9-]*$/.test(value)) throw new Error(`zoo: out=${value}: expected a name of lower-case letters, digits and '-' (the result goes to bench/results/zoo-NAME.json)`);
        o.out = value;
        break;
      }
      case 'seeds': o.seeds = numbers(); break;
      case 'set': {
        const m = /^([a-z0-9]+)\.((?:args|optimizer)\.[A-Za-z0-9.]+)=(.+)$/.exec(value);
        if (!m) throw new Error(`zoo: set=${value}: expected METHOD.args.NAME=VALUE or METHOD.optimizer.NAME=VALUE`);
        if (!(METHOD_NAMES as readonly string[]).includes(m[1]!)) throw new Error(`zoo: set=${value}: unknown method '${m[1]}' (registered: ${METHOD_NAMES.join(', ')})`);
        let parsed: unknown = m[3];
        try { parsed = JSON.parse(m[3]!); } catch { /* a bare string */ }
        const list = o.set.get(m[1] as MethodName) ?? [];
        list.push({ path: m[2]!.split('.'), value: parsed });
        o.set.set(m[1] as MethodName, list);
        break;
      }
      case 'calibrate': o.calibrate = numbers(); break;
      case 'size': o.size = value as Options['size']; break;
      case 'arch': o.arch = value; break;
      case 'vitArch': o.vitArch = value; break;
      case 'steps': case 'imageSize': case 'batch': case 'maxSamples': case 'semsegEpochs': case 'linearEpochs': case 'detrEpochs': case 'detrShortEpochs': o[key] = numbers()[0]!; break;
      default: throw new Error(`zoo: unknown key '${key}' (keys: ${keys})`);
    }
  }
  return o;
}

/**
 * Control arms: a registered method run again with one thing changed, so that its claim can be checked against
 * itself (issue 12 §4: the same method on degenerate priors; a loss added to a base method, against the base).
 * Each runs for every seed whenever its method is in the zoo; its claim rows say "METHOD > VARIANT".
 */
interface Variant {
  method: MethodName;
  /** What the control is, in a table cell. */
  what: string;
  /** Replaces the method's proposals settings (below the preset the zoo would pick). */
  proposals?: Record<string, unknown>;
  /** Merged into the method's `pretrain.args`. */
  args?: Record<string, unknown>;
  /** Backbone metrics: a control arm is a backbone, evaluated as its method is. */
  claims: Array<Pick<Claim, 'paper'> & { metric: Metric }>;
}

const VARIANTS = {
  // SLIC with 16 segments at compactness 10^4: the colour term vanishes, the superpixels are a 4×4 grid of the
  // 224 px squash (what issue 12 calls a degenerate prior for R2O); everything else as the r2o preset.
  'r2o@grid': {
    method: 'r2o',
    what: 'R2O on a 4×4 grid of regions (SLIC at 16 segments, compactness 1e4) instead of SLIC superpixels',
    proposals: { preset: 'r2o', slic: { nSegments: 16, compactness: 10000 } },
    claims: [
      { metric: 'semseg.mIoU', paper: 'the superpixel prior is what R2O adds (its §3.1); a grid prior should do worse at localization' },
      { metric: 'unsup-seg.mIoU', paper: 'as above, on unsupervised object segmentation' },
    ],
  },
  // Random boxes (UP-DETR's generator) through CCOP's own filters, NMS and top 50, instead of selective search.
  'ccop@random-boxes': {
    method: 'ccop',
    what: 'CCOP on random boxes (50 per image, CCOP\'s filters and NMS) instead of selective-search boxes',
    proposals: { preset: 'updetr-random', random: { count: 200, minPixel: 8 }, filters: [{ minAspect: 1 / 3, maxAspect: 3, aspectInclusive: false, minSqrtArea: 20 }], nmsThreshold: 0.5, maxBoxes: 50 },
    claims: [
      { metric: 'semseg.mIoU', paper: 'CCOP\'s object-level contrast rests on object-like boxes (its §3); random boxes should do worse at localization' },
      { metric: 'unsup-seg.mIoU', paper: 'as above, on unsupervised object segmentation' },
    ],
  },
  // The base method the paper adds its loss to (BYOL: the module with λ = 0 is exactly BYOL's step).
  'lcloss@byol': {
    method: 'lcloss',
    what: 'its base method, BYOL (the same module with λ = 0: no local term)',
    args: { lambda: 0 },
    claims: [
      { metric: 'semseg.mIoU', paper: 'abstract: LC-loss "can be added to existing self-supervised learning methods"; WACV p.1: gains on VOC / Cityscapes segmentation' },
      { metric: 'unsup-seg.mIoU', paper: 'stand-in for detection: abstract +1.9 AP COCO, +1.4 AP VOC' },
    ],
  },
} as const satisfies Record<string, Variant>;
type VariantName = keyof typeof VARIANTS;

/**
 * Detector methods as chained arms (issue 15 §6). A detector method pretrains a whole detector on a frozen backbone of
 * an earlier run, so per seed the zoo runs, on the same data, seed and budget (`steps`):
 *   1. the backbone it builds on: the zoo's own run of `backbone` for that seed (a cache hit when that method is in
 *      the zoo too; `detectorBackbone=` picks another);
 *   2. the method's pretraining with that run's `backbone.safetensors` key in its `consumes.pretrainedBackbone` arg;
 *   3. the evaluation's `detr` task on the method's run (its exported detector fine-tuned, `pretrainedDetector`), and
 *      on each control: the same detector from scratch on the backbone run, or on a random-init backbone.
 * Every arm's detector has the method's shape (its `smallScale` args: `shape` picks the fields the `detr` block names
 * alike), the same `labelFraction` subset (seeded by the seed) and the same fine-tune, so the arms differ in the
 * detector's (and backbone's) starting weights only.
 *
 * The claims live here, not in the modules' `claims`: their baselines are from-scratch detectors and a backbone-only
 * run fine-tuned with the method's detector, which are not registered methods (the registry requires a claim's
 * baseline to be a method of the same family), and the suite report's claimCheck compares members' own evaluations,
 * which do not fine-tune that detector on that subset.
 */
export interface DetectorControl {
  /** What the arm is, in a table cell. */
  what: string;
  /** The backbone the from-scratch detector is fine-tuned on: the chain's backbone run, or a random-init backbone. */
  backbone: 'pretrained' | 'random-init';
}

export interface DetectorChain {
  /** The backbone method whose zoo run of the same seed the method builds on (the paper's frozen CNN). */
  backbone: MethodName;
  /** Why that backbone, in a table cell. */
  backboneWhy: string;
  /** The detector the `detr` task fine-tunes. */
  kind: DetrKind;
  /** `evaluation.labelFraction` of every arm (the low-data setting of a low-data claim). */
  labelFraction: number;
  /** The method's `args` that are the detector's shape, under the same names in the `detr` block (`kind` 'deformable': `detr.deformable`). */
  shape: readonly string[];
  /** Set in every arm's detector block (`detr`, or `detr.deformable`) besides the shape: the paper's fine-tune settings that differ from the task's defaults. */
  finetune?: Record<string, unknown>;
  /** The proposals preset of a proposal-reading method (its own config's). */
  proposals?: Record<string, unknown>;
  controls: Record<string, DetectorControl>;
  /** `fineTune` 'short': AP after `detrShortEpochs` epochs (a convergence claim), both sides fine-tuned that long. */
  claims: Array<Pick<Claim, 'paper'> & { metric: Extract<Claim['metric'], 'detr.AP'>; over: string; fineTune: 'full' | 'short' }>;
}

export type DetectorMethod = Extract<MethodName, 'updetr' | 'detreg'>;

export const DETECTOR_CHAINS = {
  // docs/methods/updetr.md: UP-DETR freezes a SwAV CNN; its comparison is DETR with the same backbone and a random
  // transformer, fine-tuned as long (AP) and shorter (convergence).
  updetr: {
    backbone: 'swav',
    backboneWhy: 'the paper freezes a SwAV ResNet-50 (models/backbone.py swav_800ep_pretrain)',
    kind: 'detr',
    labelFraction: 1,
    shape: ['hiddenDim', 'nheads', 'encLayers', 'decLayers', 'dimFeedforward', 'dropout', 'preNorm', 'numQueries'],
    controls: {
      'updetr@scratch-detr': { what: 'DETR from scratch (random transformer and queries) on the backbone UP-DETR was given', backbone: 'pretrained' },
    },
    claims: [
      { metric: 'detr.AP', over: 'updetr@scratch-detr', fineTune: 'full', paper: 'README: 43.1 AP vs 42.1 AP for DETR on the SwAV backbone (COCO, 300 epochs); abstract: "higher average precision"' },
      { metric: 'detr.AP', over: 'updetr@scratch-detr', fineTune: 'short', paper: 'abstract: UP-DETR "significantly boosts the performance of DETR with faster convergence"' },
    ],
  },
  // docs/methods/detreg.md "Fine-tuning the detector, and the low-data comparison": DETReg freezes a SwAV backbone;
  // the low-data configs (--filter_pct 0.1, --lr_drop = --epochs) against the same Deformable DETR from scratch on a
  // random-init backbone and on the backbone DETReg was given.
  detreg: {
    backbone: 'swav',
    backboneWhy: 'the paper freezes a SwAV ResNet-50 (--load_backbone swav)',
    kind: 'deformable',
    labelFraction: 0.1,
    shape: ['hiddenDim', 'nheads', 'encLayers', 'decLayers', 'dimFeedforward', 'dropout', 'numFeatureLevels', 'encNPoints', 'decNPoints', 'numQueries'],
    finetune: { lrDropAt: 1 },
    proposals: { preset: 'detreg' },
    controls: {
      'detreg@backbone-only': { what: 'the same Deformable DETR from scratch on the backbone DETReg was given (backbone-only pretraining)', backbone: 'pretrained' },
      'detreg@scratch': { what: 'the same Deformable DETR from scratch on a random-init backbone', backbone: 'random-init' },
    },
    claims: [
      { metric: 'detr.AP', over: 'detreg@scratch', fineTune: 'full', paper: 'abstract: +3.5 AP on COCO with 1 % of the labels, +6.0 AP 10-shot (low-data regimes); here 10 % of the labels' },
      { metric: 'detr.AP', over: 'detreg@backbone-only', fineTune: 'full', paper: 'abstract: pretraining "the entire object detection network" beats pretraining the backbone only; low-data, 10 % of the labels here' },
    ],
  },
} as const satisfies Record<DetectorMethod, DetectorChain>;

/**
 * Baselines: the random-init backbone of each family in the zoo (a ViT method is judged against a random ViT), the
 * supervised ResNet.
 */
type Baseline = 'random-init' | 'random-init@vit' | 'supervised';
type Arm = Baseline | MethodName | VariantName;
type Values = Map<Arm, Record<Metric, number[]>>;
const isVariant = (arm: Arm): arm is VariantName => Object.hasOwn(VARIANTS, arm);

/** A method's pretrain settings in the zoo: its `smallScale`, the zoo's sizes, `args`, then any `set=` overrides. */
function pretrainSettings(o: Options, method: MethodName, seed: number, args: Record<string, unknown>): Record<string, any> {
  const module = methodModule(method) as MethodModule;
  const small = module.smallScale;
  const arch = (module.architecture ?? 'resnet') === 'vit' ? o.vitArch : o.arch;
  const pretrainConfig: Record<string, any> = { method, seed, backbone: { arch }, batchSize: o.batch, steps: o.steps, imageSize: o.imageSize, args, optimizer: { ...small?.optimizer } };
  for (const { path, value } of o.set.get(method) ?? []) {
    let at = pretrainConfig;
    for (const key of path.slice(0, -1)) at = at[key] ??= {};
    at[path.at(-1)!] = value;
  }
  return pretrainConfig;
}

const DATA = (o: Options) => ({ source: { kind: 'synthetic', size: o.size, seed: 0 }, shardSamples: 256 });

/** The run config of a backbone arm (a method or a control arm): pretraining and the backbone-only evaluation. */
function armConfig(o: Options, arm: MethodName | VariantName, seed: number) {
  const variant: Variant | null = isVariant(arm) ? VARIANTS[arm] : null;
  const method = variant?.method ?? (arm as MethodName);
  const module = methodModule(method) as MethodModule;
  return runConfig(
    {
      // A run name allows no '@' (core/config.ts); the name enters no stage's key.
      name: `zoo-${arm.replaceAll('@', '_')}-s${seed}`,
      data: DATA(o),
      // The preset each proposal-reading method's own config names; others skip the stage.
      proposals: module.consumes.proposals ? { enabled: true, ...(variant?.proposals ?? { preset: module.consumes.proposals.kind === 'regions' ? 'r2o' : 'ccop' }) } : { enabled: false },
      pretrain: pretrainSettings(o, method, seed, { ...module.smallScale?.args, ...variant?.args }),
      evaluation: { tasks: ['knn', 'linear', 'semseg', 'unsup-seg'], imageSize: o.imageSize, maxSamplesPerSplit: o.maxSamples, seed, linear: { epochs: o.linearEpochs }, semseg: { mode: 'frozen', epochs: o.semsegEpochs } },
    },
    `bench/zoo (${arm}, seed ${seed})`,
  );
}

/** The zoo's store, its dataset, and the proposals of a run config (computed once per settings, cached in the store). */
async function zooData(o: Options) {
  const store = experimentStore('zoo');
  // The parsed data block (defaults filled in, as the stage's key has it); the same for every arm.
  const dataset = await shard(store, armConfig(o, 'mocov2', o.seeds[0] ?? 0).data);
  say(`dataset synthetic-${o.size}: ${Object.entries(dataset.ref.result.splits).map(([k, v]) => `${k} ${v.samples}`).join(', ')}`);
  const proposalRefs = new Map<string, StageRef<ProposalResult>[]>();
  const proposalsFor = async (cfg: ReturnType<typeof armConfig>): Promise<StageRef<ProposalResult>[]> => {
    if (!cfg.proposals.enabled) return [];
    const { enabled: _e, ...p } = cfg.proposals;
    const key = JSON.stringify(p);
    if (!proposalRefs.has(key)) {
      const refs: StageRef<ProposalResult>[] = [];
      for (const shardKey of dataset.ref.result.splits.train!.shardKeys) refs.push((await runStage(proposalStage, localContext(store), { dataset: dataset.ref, shardKey }, p)).ref);
      proposalRefs.set(key, refs);
    }
    return proposalRefs.get(key)!;
  };
  return { store, dataset, proposalsFor };
}

async function runArms(o: Options, methods: MethodName[], withBaselines: boolean): Promise<{ values: Values; runs: Array<Record<string, unknown>> }> {
  const { store, dataset, proposalsFor } = await zooData(o);
  const config = (arm: MethodName | VariantName, seed: number) => armConfig(o, arm, seed);

  // Per seed: the methods first, then the baselines (the supervised one costs a training run), so an interrupted
  // zoo has complete method rows for the seeds it finished.
  const variants = (Object.keys(VARIANTS) as VariantName[]).filter((v) => withBaselines && methods.includes(VARIANTS[v].method));
  const vitInZoo = methods.some((m) => familyOf(m) === 'vit');
  const baselines: Baseline[] = withBaselines ? ['random-init', ...(vitInZoo ? (['random-init@vit'] as const) : []), 'supervised'] : [];
  const arms: Arm[] = [...methods, ...variants, ...baselines];
  const values: Values = new Map(arms.map((a) => [a, Object.fromEntries(METRICS.map((m) => [m, [] as number[]])) as Record<Metric, number[]>]));
  const runs: Array<Record<string, unknown>> = [];
  for (const seed of o.seeds) {
    for (const arm of arms) {
      // A baseline is evaluated (and the supervised one trained) as a run of its family's reference method would be.
      const cfg = config(arm === 'random-init@vit' ? 'mocov3' : arm === 'random-init' || arm === 'supervised' ? 'mocov2' : arm, seed);
      let backbone: StageRef<{ backboneKey: string; backboneArch: string }> | null = null;
      let trainedSeconds: number | null = null;
      let result: PretrainResult | undefined;
      const t0 = performance.now();
      if (arm === 'supervised') {
        const out = await runStage(supervisedStage, localContext(store), { dataset: dataset.ref as StageRef<ShardResult & { classes: string[] }> }, supervisedConfigFor(cfg.pretrain));
        backbone = out.ref;
        trainedSeconds = out.cached ? null : (performance.now() - t0) / 1000;
      } else if (arm !== 'random-init' && arm !== 'random-init@vit') {
        const trained = await pretrain(store, dataset.ref, cfg.pretrain, await proposalsFor(cfg));
        backbone = trained.ref;
        result = trained.ref.result;
        trainedSeconds = trained.cached ? null : trained.seconds;
        say(`${arm} s${seed}: ${o.steps} steps, final loss ${result.finalLoss.toFixed(4)}, ${trained.cached ? 'cached' : `${trained.seconds.toFixed(0)} s`}`);
      }
      const evaluated = await evaluate(store, dataset.ref, backbone as StageRef<PretrainResult> | null, cfg.evaluation);
      const m = evaluated.ref.result.metrics;
      for (const k of METRICS) values.get(arm)![k].push(m[k] ?? Number.NaN);
      say(`${armLabel(o, arm)} s${seed}: ${METRICS.map((k) => `${k} ${m[k]?.toFixed(4)}`).join(' ')}`);
      runs.push({ arm, seed, metrics: Object.fromEntries(METRICS.map((k) => [k, m[k]])), pretrainSeconds: trainedSeconds, finalLoss: result?.finalLoss ?? null, imagesPerSecond: result?.imagesPerSecond ?? null });
    }
  }
  return { values, runs };
}

/** A detector arm's metrics: `detr.AP@short` is detr.AP after the short fine-tune (the arms of a convergence claim). */
const DETECTOR_METRICS = ['detr.AP', 'detr.AP50', 'detr.AP@short'] as const;
type DetectorMetric = (typeof DETECTOR_METRICS)[number];
type DetectorValues = Map<string, { chain: DetectorMethod; backbone: string; what: string; values: Record<DetectorMetric, number[]> }>;

const isDetectorChain = (m: MethodName): m is DetectorMethod => Object.hasOwn(DETECTOR_CHAINS, m);

/**
 * The `evaluation` block of a chain's arms: the `detr` task on the chain's label subset, its detector at the method's
 * shape (the method's smallScale args with any `set=`, as its pretraining has them); per arm `pretrainedDetector` and
 * the epochs.
 */
export function detectorEvaluation(o: Options, method: DetectorMethod, seed: number, pretrainedDetector: boolean, epochs: number): Record<string, unknown> {
  const chain: DetectorChain = DETECTOR_CHAINS[method];
  const module = methodModule(method) as MethodModule;
  const args = module.args.parse(pretrainSettings(o, method, seed, { ...module.smallScale?.args }).args) as Record<string, unknown>;
  const block = { ...Object.fromEntries(chain.shape.map((k) => [k, args[k]])), ...chain.finetune };
  return {
    tasks: ['detr'],
    imageSize: o.imageSize,
    maxSamplesPerSplit: o.maxSamples,
    seed,
    labelFraction: chain.labelFraction,
    detr: chain.kind === 'deformable' ? { kind: 'deformable', epochs, pretrainedDetector, deformable: block } : { kind: 'detr', epochs, pretrainedDetector, ...block },
  };
}

/** The run config of a detector method: its pretraining on the backbone run's file (`backboneKey`), and an evaluation block. */
function detectorConfig(o: Options, method: DetectorMethod, seed: number, backboneKey: string, evaluation: Record<string, unknown>) {
  const chain: DetectorChain = DETECTOR_CHAINS[method];
  const module = methodModule(method) as MethodModule;
  const field = module.consumes.pretrainedBackbone!.arg;
  return runConfig(
    {
      name: `zoo-${method}-s${seed}`,
      data: DATA(o),
      proposals: module.consumes.proposals ? { enabled: true, ...chain.proposals } : { enabled: false },
      pretrain: pretrainSettings(o, method, seed, { ...module.smallScale?.args, [field]: backboneKey }),
      evaluation,
    },
    `bench/zoo (${method}, seed ${seed})`,
  );
}

/**
 * The chained arms of the detector methods (`DETECTOR_CHAINS`), per seed: the backbone run, the method on it, and the
 * `detr` fine-tunes of the method's detector and of each control (and the short fine-tunes of a convergence claim).
 */
async function runDetectorArms(o: Options, methods: DetectorMethod[]): Promise<{ values: DetectorValues; runs: Array<Record<string, unknown>> }> {
  const { store, dataset, proposalsFor } = await zooData(o);
  const values: DetectorValues = new Map();
  const runs: Array<Record<string, unknown>> = [];
  for (const seed of o.seeds) {
    for (const method of methods) {
      const chain: DetectorChain = DETECTOR_CHAINS[method];
      const backboneMethod = o.detectorBackbone ?? chain.backbone;
      // 1. The backbone run: the zoo's own config of that method, so the same cached run as its zoo arm.
      const sourceConfig = armConfig(o, backboneMethod, seed);
      const source = await pretrain(store, dataset.ref, sourceConfig.pretrain, await proposalsFor(sourceConfig));
      say(`${backboneMethod} s${seed} (the backbone ${method} builds on): ${o.steps} steps, ${source.cached ? 'cached' : `${source.seconds.toFixed(0)} s`}`);
      // 2. The method on that backbone.
      const config = detectorConfig(o, method, seed, source.ref.result.backboneKey, detectorEvaluation(o, method, seed, true, o.detrEpochs));
      const trained = await pretrain(store, dataset.ref, config.pretrain, await proposalsFor(config));
      if (!trained.ref.result.exports?.detector) throw new Error(`zoo: ${method} s${seed}: its run exported no detector (exports: ${JSON.stringify(trained.ref.result.exports ?? {})})`);
      say(`${method} s${seed} on ${backboneMethod}: ${o.steps} steps, final loss ${trained.ref.result.finalLoss.toFixed(4)}, ${trained.cached ? 'cached' : `${trained.seconds.toFixed(0)} s`}`);
      // 3. The fine-tunes: the method's detector, and each control's detector from scratch.
      const shortOver = new Set(chain.claims.filter((c) => c.fineTune === 'short').map((c) => c.over));
      const arms = [
        { arm: method as string, what: `${method}'s detector, pretrained on the ${backboneMethod} backbone`, ref: trained.ref, pretrainedDetector: true, short: shortOver.size > 0 },
        ...Object.entries(chain.controls).map(([arm, c]) => ({ arm, what: c.what, ref: c.backbone === 'pretrained' ? source.ref : null, pretrainedDetector: false, short: shortOver.has(arm) })),
      ];
      for (const a of arms) {
        const evaluation = (epochs: number) => detectorConfig(o, method, seed, source.ref.result.backboneKey, detectorEvaluation(o, method, seed, a.pretrainedDetector, epochs)).evaluation;
        if (!values.has(a.arm)) values.set(a.arm, { chain: method, backbone: a.ref === null ? 'random-init' : backboneMethod, what: a.what, values: Object.fromEntries(DETECTOR_METRICS.map((k) => [k, [] as number[]])) as Record<DetectorMetric, number[]> });
        const v = values.get(a.arm)!.values;
        const full = await evaluate(store, dataset.ref, a.ref, evaluation(o.detrEpochs));
        const m = full.ref.result.metrics;
        v['detr.AP'].push(m['detr.AP'] ?? Number.NaN);
        v['detr.AP50'].push(m['detr.AP50'] ?? Number.NaN);
        const short = a.short ? await evaluate(store, dataset.ref, a.ref, evaluation(o.detrShortEpochs)) : null;
        if (short) v['detr.AP@short'].push(short.ref.result.metrics['detr.AP'] ?? Number.NaN);
        const took = (t: { cached: boolean; seconds: number }) => (t.cached ? 'cached' : `${t.seconds.toFixed(0)} s`);
        say(`${a.arm} s${seed}: detr.AP ${m['detr.AP']?.toFixed(4)} AP50 ${m['detr.AP50']?.toFixed(4)} after ${o.detrEpochs} epochs on ${m['eval.trainSamples']} images (${took(full)})${short ? `; detr.AP ${short.ref.result.metrics['detr.AP']?.toFixed(4)} after ${o.detrShortEpochs} (${took(short)})` : ''}`);
        runs.push({
          arm: a.arm,
          chain: method,
          backbone: a.ref === null ? 'random-init' : backboneMethod,
          seed,
          metrics: { 'detr.AP': m['detr.AP'], 'detr.AP50': m['detr.AP50'], 'eval.trainSamples': m['eval.trainSamples'], 'detr.pretrainedDetector': m['detr.pretrainedDetector'], ...(short ? { 'detr.AP@short': short.ref.result.metrics['detr.AP'] } : {}) },
          evalSeconds: full.cached ? null : full.seconds,
          pretrainSeconds: a.arm === method && !trained.cached ? trained.seconds : null,
          finalLoss: a.arm === method ? trained.ref.result.finalLoss : null,
        });
      }
    }
  }
  return { values, runs };
}

const isMetric = (metric: string): metric is Metric => (METRICS as readonly string[]).includes(metric);
const familyOf = (method: MethodName) => (methodModule(method) as MethodModule).architecture ?? 'resnet';
/** The random-init arm a method is judged against: the same backbone family at random init. */
const randomInitOf = (method: MethodName): Baseline => (familyOf(method) === 'vit' ? 'random-init@vit' : 'random-init');

const archLabel = (o: Options) => (o.methods.some((m) => familyOf(m) === 'vit') ? `${o.arch} (ViT methods: ${o.vitArch})` : o.arch);

/** An arm's name in tables: the method, with any `set=` overrides it ran under. */
function armLabel(o: Options, arm: Arm): string {
  const set = o.set.get(arm as MethodName);
  return set?.length ? `${arm} (${set.map((s) => `${s.path.join('.')}=${JSON.stringify(s.value)}`).join(', ')})` : arm;
}

const fmt = (s: { mean: number; std: number }) => `${s.mean.toFixed(3)} ± ${s.std.toFixed(3)}`;

async function calibrate(o: Options): Promise<BenchResult> {
  const steps: Array<Record<string, unknown>> = [];
  const rows: BenchRow[] = [];
  let chosen: number | null = null;
  for (const budget of o.calibrate) {
    const { values } = await runArms({ ...o, steps: budget }, ['mocov2', 'densecl'], false);
    const p = paired(values.get('densecl')!['semseg.mIoU'], values.get('mocov2')!['semseg.mIoU']);
    const v = claimVerdict(p);
    steps.push({ steps: budget, semseg: { densecl: meanStd(values.get('densecl')!['semseg.mIoU']), mocov2: meanStd(values.get('mocov2')!['semseg.mIoU']), paired: p, verdict: v } });
    rows.push({ case: `steps=${budget} semseg DenseCL−MoCo v2`, ours: { mean: p.mean, std: p.std, t: p.t, ahead: p.positive, seeds: p.diffs.length }, reference: null });
    say(`calibration: ${budget} steps: DenseCL − MoCo v2 semseg ${p.mean.toFixed(4)} (paired t ${p.t.toFixed(2)}, ahead in ${p.positive}/${p.diffs.length}): ${v}`);
    if (v === 'holds') {
      chosen = budget;
      break;
    }
  }
  return { name: 'zoo-calibration', rows, notes: [chosen === null ? 'no budget tried resolves the gap' : `cheapest resolving budget: ${chosen} steps`], options: { ...o, set: Object.fromEntries(o.set) }, steps, chosen };
}

export async function main(args: string[]): Promise<BenchResult> {
  const o = parseOptions(args);
  const info = await initBackend('tensorflow');
  if (o.calibrate.length) return calibrate(o);
  const t0 = performance.now();
  // Backbone methods run as the zoo's arms, detector methods as chains (`DETECTOR_CHAINS`) after them.
  const detectors = o.methods.filter(isDetectorChain);
  const backbones = o.methods.filter((m) => !isDetectorMethod(m));
  // The arms every claim is checked against: MoCo v2, and each method a claim names (MoCo v3 for the ViT methods).
  if (backbones.length) {
    for (const over of ['mocov2', ...backbones.flatMap((m) => ((methodModule(m) as MethodModule).claims ?? []).map((c) => c.over))]) {
      if ((METHOD_NAMES as readonly string[]).includes(over) && !backbones.includes(over as MethodName)) backbones.unshift(over as MethodName);
    }
  }
  o.methods = [...backbones, ...detectors];
  const { values, runs } = backbones.length ? await runArms(o, backbones, true) : { values: new Map() as Values, runs: [] };
  const detector = detectors.length ? await runDetectorArms(o, detectors) : { values: new Map() as DetectorValues, runs: [] };

  const rows: BenchRow[] = [];
  for (const [arm, byMetric] of values) rows.push({ case: armLabel(o, arm), ours: Object.fromEntries(METRICS.map((k) => [k, meanStd(byMetric[k]).mean])), reference: null });
  for (const [arm, d] of detector.values) rows.push({ case: armLabel(o, arm as Arm), ours: Object.fromEntries(DETECTOR_METRICS.filter((k) => d.values[k].length).map((k) => [k, meanStd(d.values[k]).mean])), reference: null });
  const table = [...values].map(([arm, byMetric]) => ({ arm: armLabel(o, arm), ...Object.fromEntries(METRICS.map((k) => [k, meanStd(byMetric[k])])) }));
  const detectorTable = [...detector.values].map(([arm, d]) => ({ arm: armLabel(o, arm as Arm), chain: d.chain, backbone: d.backbone, what: d.what, ...Object.fromEntries(DETECTOR_METRICS.filter((k) => d.values[k].length).map((k) => [k, meanStd(d.values[k])])) }));

  const claims: Array<Record<string, unknown>> = [];
  const suspects: string[] = [];
  for (const method of backbones) {
    const module = methodModule(method) as MethodModule;
    const own = values.get(method)!;
    const random = randomInitOf(method);
    const overRandom = LOCALIZATION.map((k) => ({ metric: k, ...paired(own[k], values.get(random)![k]) }));
    const beatsRandom = overRandom.filter((p) => claimVerdict(p) === 'holds').map((p) => p.metric);
    // With one seed nothing is resolved, so nothing is a suspect yet either.
    const judged = o.seeds.length >= 2;
    if (judged && beatsRandom.length === 0) suspects.push(method);
    for (const claim of module.claims ?? ([] as Claim[])) {
      const base = values.get(claim.over as Arm);
      const metric = claim.metric;
      if (!base || !isMetric(metric)) continue;
      const p = paired(own[metric], base[metric]);
      claims.push({ method, metric, over: claim.over, paper: claim.paper, ours: meanStd(own[metric]), baseline: meanStd(base[metric]), paired: p, verdict: claimVerdict(p) });
    }
    for (const [name, variant] of Object.entries(VARIANTS) as Array<[VariantName, Variant]>) {
      const control = values.get(name);
      if (variant.method !== method || !control) continue;
      for (const claim of variant.claims) {
        const p = paired(own[claim.metric], control[claim.metric]);
        claims.push({ method, metric: claim.metric, over: name, paper: `${variant.what}: ${claim.paper}`, ours: meanStd(own[claim.metric]), baseline: meanStd(control[claim.metric]), paired: p, verdict: claimVerdict(p) });
      }
    }
    claims.push({ method, metric: 'localization', over: random, paper: 'any pretraining should beat random init at localization', beatsRandomOn: beatsRandom, verdict: !judged ? 'too few seeds' : beatsRandom.length ? 'holds' : 'SUSPECT: beats random init on no localization metric' });
  }
  // Detector methods: their chain's claims, each paired by seed against a control of the same chain.
  for (const method of detectors) {
    const chain: DetectorChain = DETECTOR_CHAINS[method];
    const own = detector.values.get(method)!.values;
    for (const claim of chain.claims) {
      const base = detector.values.get(claim.over)?.values;
      if (!base) continue;
      const key: DetectorMetric = claim.fineTune === 'short' ? 'detr.AP@short' : claim.metric;
      const epochs = claim.fineTune === 'short' ? o.detrShortEpochs : o.detrEpochs;
      const p = paired(own[key], base[key]);
      claims.push({ method, metric: `${claim.metric} (${epochs}-epoch fine-tune)`, over: claim.over, paper: `${chain.controls[claim.over]!.what}: ${claim.paper}`, ours: meanStd(own[key]), baseline: meanStd(base[key]), paired: p, verdict: claimVerdict(p) });
    }
  }

  // A probe (`set=`) or a side run (`out=`, e.g. a smoke run) is not the zoo: its own result file, and the committed
  // table is left alone.
  const probe = o.set.size > 0;
  const committed = !probe && o.out === null;
  if (committed) writeFileSync(join(import.meta.dirname, '..', 'docs', 'ZOO-TABLE.md'), zooMarkdown(o, table, detectorTable, claims, suspects));
  return {
    name: o.out !== null ? `zoo-${o.out}` : probe ? 'zoo-probe' : 'zoo',
    rows,
    notes: [
      `backend ${info.backend}; synthetic-${o.size}, ${archLabel(o)}, ${o.imageSize} px, batch ${o.batch}, ${o.steps} steps, seeds ${o.seeds.join(',')}; each method with its module's smallScale settings`,
      ...(detectors.length ? [`detector chains: ${detectors.map((m) => `${m} on ${o.detectorBackbone ?? DETECTOR_CHAINS[m].backbone}`).join(', ')}; detr fine-tune ${o.detrEpochs} epochs (short: ${o.detrShortEpochs}) on at most ${o.maxSamples} samples per split, label fractions ${detectors.map((m) => `${m} ${DETECTOR_CHAINS[m].labelFraction}`).join(', ')}`] : []),
      ...claims.map((c) => `${c.method} ${c.metric} over ${c.over}: ${c.verdict}${c.paired ? ` (paired mean ${(c.paired as Paired).mean.toFixed(4)}, t ${(c.paired as Paired).t.toFixed(2)})` : ''}`),
      ...(backbones.length ? [suspects.length ? `SUSPECT (no localization gain over random init): ${suspects.join(', ')}` : 'every method beats random init on at least one localization metric'] : []),
      `wall time ${((performance.now() - t0) / 1000).toFixed(0)} s${committed ? '; tables also in docs/ZOO-TABLE.md' : ''}`,
    ],
    options: { ...o, set: Object.fromEntries(o.set) },
    table,
    detectorTable,
    claims,
    suspects,
    runs: [...runs, ...detector.runs],
  };
}

function zooMarkdown(o: Options, table: Array<Record<string, unknown>>, detectorTable: Array<Record<string, unknown>>, claims: Array<Record<string, unknown>>, suspects: string[]): string {
  const detectorCols = DETECTOR_METRICS.filter((k) => detectorTable.some((r) => r[k]));
  const colName = (k: DetectorMetric) => (k === 'detr.AP@short' ? `detr.AP (${o.detrShortEpochs} epochs)` : `${k} (${o.detrEpochs} epochs)`);
  const lines = [
    '<!-- Written by `npm run bench -- zoo` (bench/zoo.ts); numbers from bench/results/zoo.json. -->',
    `Budget: synthetic-${o.size}, ${archLabel(o)}, ${o.imageSize} px, batch ${o.batch}, **${o.steps} steps**, seeds ${o.seeds.join(', ')}; frozen-backbone evaluation on ${o.maxSamples} samples per split. Mean ± std over seeds.`,
    '',
    ...(table.length
      ? [
          `| backbone | ${METRICS.join(' | ')} |`,
          `|---|${METRICS.map(() => '---').join('|')}|`,
          ...table.map((r) => `| ${r.arm} | ${METRICS.map((k) => fmt(r[k] as { mean: number; std: number })).join(' | ')} |`),
          '',
        ]
      : []),
    ...(detectorTable.length
      ? [
          `### Detector methods (the \`detr\` task fine-tuned ${o.detrEpochs} epochs; label fractions ${[...new Set(detectorTable.map((r) => r.chain as DetectorMethod))].map((m) => `${m} ${DETECTOR_CHAINS[m].labelFraction}`).join(', ')})`,
          '',
          `| arm | backbone | detector | ${detectorCols.map(colName).join(' | ')} |`,
          `|---|---|---|${detectorCols.map(() => '---').join('|')}|`,
          ...detectorTable.map((r) => `| ${r.arm} | ${r.backbone} | ${r.what} | ${detectorCols.map((k) => (r[k] ? fmt(r[k] as { mean: number; std: number }) : '–')).join(' | ')} |`),
          '',
        ]
      : []),
    '### Claim check (paired by seed; "holds" = ahead in every seed and paired t past the one-sided 5 % value)',
    '',
    '| method | claim | paper | here: method | here: baseline | paired diff (t) | verdict |',
    '|---|---|---|---|---|---|---|',
    ...claims.map((c) => {
      const p = c.paired as Paired | undefined;
      return p
        ? `| ${c.method} | ${c.metric} > ${c.over} | ${c.paper} | ${fmt(c.ours as { mean: number; std: number })} | ${fmt(c.baseline as { mean: number; std: number })} | ${p.mean >= 0 ? '+' : ''}${p.mean.toFixed(3)} (${p.t.toFixed(2)}) | ${c.verdict} |`
        : `| ${c.method} | localization > random init | ${c.paper} | ${(c.beatsRandomOn as string[]).join(', ') || '–'} | | | ${c.verdict} |`;
    }),
    '',
    !table.length ? '' : suspects.length ? `**Suspects:** ${suspects.join(', ')} (see docs/ZOO.md).` : 'No suspects: every method beats random init on at least one localization metric.',
    '',
  ];
  return lines.join('\n');
}
