/**
 * SiameseIM parity with OpenGVLab/Siamese-Image-Modeling@bbdec30: the official `engine_pretrain.train_one_epoch` (one
 * iteration) of `models_sim.SiameseIMViT`, views from `DataAugmentationForSIM`, masks from BEiT's `MaskingGenerator`,
 * run under PyTorch on identical weights. Reference values: test/fixtures/methods/siameseim/parity.json, written by
 * test/fixtures/methods/siameseim/make_parity.py (see its docstring).
 *
 * Checked: the flip-before-crop views (pixels and geometry) and the relative geometry (Δi, Δj, Δh, Δw, relative flip,
 * flip Δj); the relative position embedding; both sin-cos tables (SiameseIM's are row-first, unlike MAE's); the
 * blockwise masks replayed from the official generator's recorded draws; then one step per scenario: the lr and
 * momentum schedules, the loss and its two UniGrad terms, the (clipped) gradients handed to the optimizer, the
 * parameters after AdamW (β2 0.95, timm's decay groups, from a given Adam state), the BN running statistics, and the
 * momentum branch after its EMA update.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import { augmentView, type ViewSpec } from '../../stages/data/augment.js';
import { viewToView, type ViewGeometry } from '../../stages/data/geometry.js';
import type { RgbImage } from '../../stages/data/image.js';
import type { ParamStore } from '../../stages/engine/params.js';
import { VisionTransformer, type VitConfig } from '../../stages/engine/vit.js';
import { blockwiseMask, relativeGeometry, relativePositionEmbedding, siameseim, siameseimPositionEmbedding, type MaskRandom, type SiameseIM } from '../../stages/methods/siameseim.js';
import type { NamedGradients, VitBuild } from '../../stages/methods/shared/contract.js';
import { createOptimizer, learningRate, pretrainConfigSchema } from '../../stages/pretrain/index.js';
import { type Json, loadFixture, nhwc, REL_TOL, relErr, tensorRelErr, toOurLayout } from './parity-helpers.js';

interface Scenario {
  epoch: number;
  clipGrad: number;
  mm: number;
  lr: number;
  gradNorm: number | null;
  loss: number;
  pos: number;
  neg: number;
  grads: Record<string, Json>;
  paramsAfter: Record<string, Json>;
  buffersAfter: Record<string, Json>;
  targetAfter: Record<string, Json>;
}
type Draw = ['uniform', number, number, number] | ['randint', number, number, number] | ['shuffle', number, number[]];

const fixture = loadFixture('siameseim');
const s = fixture.sizes as Record<string, number>;
const hyper = fixture.hyper as Record<string, number>;
const G = s.img! / s.patch!;
const N = G * G;
const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];
/** Largest relative error per quantity over every check (printed at the end, for the card). */
const worst: Record<string, number> = {};
const note = (what: string, err: number) => {
  worst[what] = Math.max(worst[what] ?? 0, err);
  return err;
};

/** Official (state_dict) name → ours: the ViT lives under `backbone.` (the exported weights), the rest as named. */
const ours = (name: string) => (/^(patch_embed|cls_token|pos_embed|blocks)\b/.test(name) ? `backbone.${name}` : name);

const vitConfig: VitConfig = { imageSize: s.img!, patchSize: s.patch!, embedDim: s.D!, depth: s.depth!, numHeads: s.heads!, mlpRatio: s.mlpRatio! };
const vit: VitBuild = { preset: 'parity', config: vitConfig, build: (store, prefix, seed) => new VisionTransformer(vitConfig, seed, store, prefix) };

function build(clipGrad: number): SiameseIM {
  const args = siameseim.args.parse({
    numMaskingPatches: s.numMasking,
    minMaskPatchesPerBlock: s.minPerBlock,
    decoderEmbedDim: s.decoderDim,
    decoderNumHeads: s.decoderHeads,
    projectorDepth: s.projectorDepth,
    predictorDepth: s.predictorDepth,
    negWeight: hyper.negWeight,
    momentum: hyper.momentum,
    clipGrad,
  });
  const noResNet = () => {
    throw new Error('a ViT method builds no ResNet');
  };
  return siameseim.create({ args, vit, backbone: noResNet, backboneChannels: s.D!, seed: 0, batchSize: s.B!, imageSize: s.img!, totalSteps: hyper.epochs! }) as SiameseIM;
}

function assign(store: ParamStore, name: string, t: Json): void {
  const v = store.get(name);
  const value = v.dtype === 'int32' ? tf.tensor(t.data, t.shape, 'int32') : toOurLayout(name, t, store);
  v.assign(v.dtype === 'int32' ? tf.reshape(value, v.shape) : value);
  value.dispose();
}

/** The fixture's initial state into both branches; the fixed sin-cos tables are compared, not loaded. */
function load(method: SiameseIM): void {
  const init = fixture.init as { online: Record<string, Json>; target: Record<string, Json> };
  for (const [store, state] of [[method.online, init.online], [method.target, init.target]] as const) {
    for (const [name, t] of Object.entries(state)) {
      if (name.endsWith('pos_embed')) {
        const ref = toOurLayout(ours(name), t, store);
        expect(note('sin-cos tables', tensorRelErr(store.get(ours(name)), ref)), name).toBeLessThan(1e-6);
        ref.dispose();
      } else assign(store, ours(name), t);
    }
    // Everything we hold is in the official state, but the engine ViT's final norm (SiameseIMViT has none; ours stays
    // at its identity init, untrained) and, in the momentum branch, the position table (the official reuses the online one).
    const extra = [...store.vars.keys()].filter((n) => !Object.keys(state).map(ours).includes(n));
    expect(extra.sort()).toEqual((store === method.target ? ['backbone.norm.bias', 'backbone.norm.weight', 'backbone.pos_embed'] : ['backbone.norm.bias', 'backbone.norm.weight']).sort());
  }
}

/** The official image: [H, W, 3] bytes. */
function image(): RgbImage {
  const v = fixture.views as { image: number[] };
  return { width: s.imageWidth!, height: s.imageHeight!, data: Uint8Array.from(v.image) } as RgbImage;
}

/** Both views of every image through our pipeline, with the official draws: flip first, crop in the flipped frame. */
function ourViews(): { geometry: ViewGeometry[][]; pixels: Float32Array[][] } {
  const v = fixture.views as { flips: [boolean, boolean][]; crops: [number, number, number, number][][] };
  const spec: ViewSpec = { size: s.img!, scale: [0.08, 1], interpolation: 'bicubic', flipBeforeCrop: true };
  const geometry: ViewGeometry[][] = [[], []];
  const pixels: Float32Array[][] = [[], []];
  const src = image();
  v.flips.forEach((flips, b) => {
    for (const view of [0, 1]) {
      const [i, j, h, w] = v.crops[b]![view]!;
      const out = augmentView(new Rng(b), src, spec, flips[view], () => ({ i, j, h, w }));
      geometry[view]!.push(out.geometry);
      pixels[view]!.push(out.image.data);
    }
  });
  return { geometry, pixels };
}

/** The official draws, replayed: each call must ask for what the official asked for. */
function replay(draws: Draw[]): MaskRandom & { done(): boolean } {
  let k = 0;
  const next = (kind: Draw[0]) => {
    const d = draws[k++];
    expect(d?.[0], `draw ${k - 1}`).toBe(kind);
    return d!;
  };
  return {
    uniform(lo, hi) {
      const [, a, b, v] = next('uniform') as [string, number, number, number];
      expect([lo, hi]).toEqual([a, b]);
      return v;
    },
    randint(lo, hi) {
      const [, a, b, v] = next('randint') as [string, number, number, number];
      expect([lo, hi]).toEqual([a, b]);
      return v;
    },
    shuffle(items) {
      const [, n, order] = next('shuffle') as [string, number, number[]];
      expect(items.length).toBe(n);
      order.forEach((x, i) => (items[i] = x));
    },
    done: () => k === draws.length,
  };
}

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('SiameseIM views, geometry and masks (official DataAugmentationForSIM, pos_embed.py, MaskingGenerator)', () => {
  it('makes the official views: flip first, then the crop in the flipped frame (bicubic)', () => {
    const { pixels } = ourViews();
    const v = fixture.views as { x1: Json; x2: Json };
    for (const [view, ref] of [v.x1, v.x2].entries()) {
      // The official tensor is NCHW and normalised; ours [H, W, 3] in [0, 1].
      for (let b = 0; b < s.B!; b++) {
        let maxDiff = 0;
        // Every pixel, the view's edges included: torchvision crops the PIL image, then resizes (the filter taps clamp
        // at the crop's edge), and so does the engine's resampler (reading past the box put the outer 3 pixels off by
        // tens of grey levels).
        for (let y = 0; y < s.img!; y++) {
          for (let x = 0; x < s.img!; x++) {
            for (let c = 0; c < 3; c++) {
              const official = ref.data[((b * 3 + c) * s.img! + y) * s.img! + x]! * STD[c]! + MEAN[c]!;
              maxDiff = Math.max(maxDiff, Math.abs(pixels[view]![b]![(y * s.img! + x) * 3 + c]! - official));
            }
          }
        }
        // PIL rounds both bicubic passes to bytes, ours stays float: about one grey level on this noise image (a crop
        // taken in the wrong frame, or mirrored twice, differs by tens).
        worst['view pixels (max |Δ| × 255)'] = Math.max(worst['view pixels (max |Δ| × 255)'] ?? 0, maxDiff * 255);
        expect(maxDiff * 255, `view ${view + 1}, image ${b}`).toBeLessThan(1.5);
      }
    }
  });

  it('derives the official relative geometry (Δi, Δj, Δh, Δw, relative flip, flip Δj) from our views\' geometry', () => {
    const { geometry } = ourViews();
    const rel = (fixture.views as { rel: Record<string, (number | boolean)[]> }).rel;
    for (let b = 0; b < s.B!; b++) {
      const r = relativeGeometry(geometry[0]![b]!, geometry[1]![b]!);
      for (const k of ['deltaI', 'deltaJ', 'deltaH', 'deltaW', 'flipDeltaJ'] as const) expect(r[k], `${k} of image ${b}`).toBeCloseTo(rel[k]![b] as number, 12);
      expect(r.relativeFlip, `image ${b}`).toBe(rel.relativeFlip![b]);
    }
  });

  it('computes the official relative position embedding, and it places view 2\'s patch centres where view 1 sees them', () => {
    const { geometry } = ourViews();
    const rel = Array.from({ length: s.B! }, (_, b) => relativeGeometry(geometry[0]![b]!, geometry[1]![b]!));
    const ref = (fixture.views as { relEmbed: Json }).relEmbed;
    const got = tf.tensor(relativePositionEmbedding(rel, s.decoderDim!, G), ref.shape);
    const want = tf.tensor(ref.data, ref.shape);
    expect(note('relative position embedding', tensorRelErr(got, want))).toBeLessThan(REL_TOL);
    tf.dispose([got, want]);
    // The official formula's positions are the geometric correspondence: with D_d = 4 its first and third channels are
    // sin(row), sin(col) of view 2's cell centres in view 1's grid units; our geometry maps the same points.
    const one = relativePositionEmbedding(rel, 4, G);
    for (let b = 0; b < s.B!; b++) {
      const [g1, g2] = [geometry[0]![b]!, geometry[1]![b]!];
      for (let r = 0; r < G; r++) {
        for (let c = 0; c < G; c++) {
          const [x, y] = viewToView(g2, g1, [((c + 0.5) * g2.width) / G, ((r + 0.5) * g2.height) / G]);
          const base = (b * N + r * G + c) * 8;
          expect(one[base]!, `row of cell (${r}, ${c}), image ${b}`).toBeCloseTo(Math.sin((y * G) / g1.height - 0.5), 5);
          expect(one[base + 2]!, `column of cell (${r}, ${c}), image ${b}`).toBeCloseTo(Math.sin((x * G) / g1.width - 0.5), 5);
        }
      }
    }
  });

  it('draws the official blockwise masks from the official generator\'s draws', () => {
    const cases = fixture.maskGenerator as { name: string; grid: number; numMasking: number; minPerBlock: number; masks: { mask: number[]; draws: Draw[] }[]; filled: number }[];
    expect(cases.reduce((n, c) => n + c.filled, 0), 'some mask needs the random fill').toBeGreaterThan(0);
    for (const c of cases) {
      for (const [k, m] of c.masks.entries()) {
        const random = replay(m.draws);
        expect(Array.from(blockwiseMask(c.grid, c.numMasking, c.minPerBlock, random)), `${c.name} mask ${k}`).toEqual(m.mask);
        expect(random.done(), `${c.name} mask ${k}: every draw used`).toBe(true);
      }
    }
  });

  it('draws masks of exactly M patches from the step\'s randomness, the same for the same step', () => {
    const method = build(1);
    const a = method.drawMasks(6, new Rng(3));
    expect(a.map((m) => m.reduce((x, y) => x + y, 0))).toEqual(Array(6).fill(s.numMasking));
    expect(method.drawMasks(6, new Rng(3))).toEqual(a);
    method.dispose();
  });

  it('uses SiameseIM\'s row-first sin-cos table (MAE\'s halves swapped)', () => {
    const t = siameseimPositionEmbedding(8, 3);
    // Row 1 + (r = 1, c = 2): the first quarter is sin(r·ω), the third sin(c·ω).
    const base = (1 + 1 * 3 + 2) * 8;
    expect(t[base]).toBeCloseTo(Math.sin(1), 6);
    expect(t[base + 4]).toBeCloseTo(Math.sin(2), 6);
  });
});

describe.each(Object.keys(fixture.scenarios as object))('SiameseIM step (%s) against the official train_one_epoch', (name) => {
  const sc = (fixture.scenarios as Record<string, Scenario>)[name]!;

  it('gives the official schedules, loss terms, handed gradients, parameters, BN statistics and momentum branch', () => {
    const method = build(sc.clipGrad);
    load(method);
    const total = hyper.epochs!;
    const config = pretrainConfigSchema.parse({
      method: 'siameseim',
      batchSize: s.B,
      steps: total,
      optimizer: { baseLr: hyper.blr, weightDecay: hyper.weightDecay },
      schedule: { warmupSteps: hyper.warmupEpochs },
    });
    const lr = learningRate(config, sc.epoch, total);
    expect(note('lr', relErr(lr, sc.lr))).toBeLessThan(1e-9);
    expect(note('momentum', relErr(method.momentumAt(sc.epoch, total), sc.mm))).toBeLessThan(1e-9);
    // AdamW (β2 0.95, timm's groups) from the official state before the step: step 5, the given moments.
    const optimizer = createOptimizer(config, method.online);
    expect(optimizer).toMatchObject({ beta1: 0.9, beta2: 0.95, weightDecay: hyper.weightDecay });
    const adam = (fixture.init as { adam: { step: number; expAvg: Record<string, Json>; expAvgSq: Record<string, Json> } }).adam;
    optimizer.stepCount = adam.step;
    for (const [slot, state] of [['exp_avg', adam.expAvg], ['exp_avg_sq', adam.expAvgSq]] as const) {
      expect(Object.keys(state).map(ours).sort()).toEqual([...method.online.trainable().keys()].sort());
      for (const [n, t] of Object.entries(state)) {
        const v = toOurLayout(ours(n), t, method.online);
        optimizer.slots().get(`${slot}/${ours(n)}`)!.assign(v);
        v.dispose();
      }
    }

    const { geometry } = ourViews();
    const v = fixture.views as { x1: Json; x2: Json };
    const views = [nhwc(v.x1), nhwc(v.x2)];
    const masks = (fixture.masks as number[][]).map((m) => Uint8Array.from(m));
    let grads: NamedGradients = new Map();
    const result = method.stepWithMasks({ views, geometry }, masks, {
      step: sc.epoch,
      totalSteps: total,
      rng: new Rng(1),
      applyGradients: (g) => {
        grads = new Map([...g].map(([k, x]) => [k, tf.keep(x.clone())]));
        optimizer.step(g, lr);
      },
    });
    expect(note('loss', relErr(result.loss, sc.loss))).toBeLessThan(REL_TOL);
    const dd = s.decoderDim!;
    // parts: the weighted terms, pos / D_d and λ·neg / D_d (the fixture's pos and neg are those, from the official function).
    expect(note('loss pos term', relErr(result.parts.pos!, sc.pos))).toBeLessThan(REL_TOL);
    expect(note('loss neg term', relErr(result.parts.neg!, sc.neg))).toBeLessThan(REL_TOL);
    expect(sc.neg).toBeGreaterThan(0.05 * sc.loss); // the covariance term is not negligible here (λ = 0.3)
    expect(result.parts.pos! + result.parts.neg!).toBeCloseTo(result.loss, 5);
    expect(dd).not.toBe(s.D);

    // Gradients handed to the optimizer (clipped to half their norm in 'clipped'): the official trainable set exactly,
    // the frozen patch embedding not among them.
    if (sc.clipGrad > 0) expect(sc.gradNorm!).toBeGreaterThan(sc.clipGrad);
    expect([...grads.keys()].sort()).toEqual(Object.keys(sc.grads).map(ours).sort());
    expect(grads.has('backbone.patch_embed.proj.weight')).toBe(false);
    for (const [n, t] of Object.entries(sc.grads)) {
      const want = toOurLayout(ours(n), t, method.online);
      expect(note('gradients handed to the optimizer', tensorRelErr(grads.get(ours(n))!, want)), `grad ${n}`).toBeLessThan(REL_TOL);
      want.dispose();
    }
    // Parameters after AdamW, online BN running statistics, the momentum branch after the EMA (and its BN statistics).
    for (const [what, store, state] of [
      ['parameters after the step', method.online, sc.paramsAfter],
      ['online BN running statistics', method.online, sc.buffersAfter],
      ['momentum branch after the step', method.target, sc.targetAfter],
    ] as const) {
      for (const [n, t] of Object.entries(state)) {
        if (n.endsWith('num_batches_tracked')) {
          expect(store.get(ours(n)).dataSync()[0], n).toBe(t.data[0]);
          continue;
        }
        const want = toOurLayout(ours(n), t, store);
        expect(note(what, tensorRelErr(store.get(ours(n)), want)), `${what}: ${n}`).toBeLessThan(REL_TOL);
        want.dispose();
      }
    }
    // The frozen patch embedding is unchanged online, and averaged into the momentum branch.
    const init = fixture.init as { online: Record<string, Json> };
    const pe = toOurLayout('backbone.patch_embed.proj.weight', init.online['patch_embed.proj.weight']!, method.online);
    expect(tensorRelErr(method.online.get('backbone.patch_embed.proj.weight'), pe)).toBe(0);
    pe.dispose();
    tf.dispose([...views, ...grads.values()]);
    optimizer.dispose();
    method.dispose();
    console.log(`SiameseIM (${name}) max relative error`, worst);
  });
});
