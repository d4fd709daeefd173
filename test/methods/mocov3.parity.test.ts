/**
 * MoCo v3 parity with facebookresearch/moco-v3@c349e6e `moco/builder.py` MoCo_ViT + `vits.py` VisionTransformerMoCo,
 * RUN under PyTorch on identical inputs and weights. Reference values: test/fixtures/methods/mocov3/parity.json, written
 * by `~/.cache/mocov3-venv/bin/python test/fixtures/methods/mocov3/make_parity.py` (see its docstring: Debian torch 1.13 +
 * timm 0.4.9). One process: `concat_all_gather` is the identity, so the negatives are the batch's own keys (no
 * all_gather across GPUs is exercised). One full step through `step` on a toy ViT (32 px, patch 8, width 16, 2 blocks):
 * both loss directions, every gradient handed to AdamW (none for the frozen patch projection), every parameter and BN
 * buffer after one AdamW step (lr 0.01, wd 0.1 on every parameter), and the momentum encoder after the EMA at
 * m = adjust_moco_momentum(1 of 4 epochs, --moco-m 0.9) and its two key forwards. Also: the fixed position embedding,
 * the official init, and the learning-rate and momentum schedules against main_moco.py's functions.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng.js';
import { initBackend, tf } from '../../core/tf.js';
import type { ParamStore } from '../../stages/engine/params.js';
import { cosineMomentum } from '../../stages/engine/schedule.js';
import { VisionTransformer, type VitConfig } from '../../stages/engine/vit.js';
import { mocov3, MoCoV3 } from '../../stages/methods/mocov3.js';
import type { NamedGradients, VitBuild } from '../../stages/methods/shared/contract.js';
import { createOptimizer, learningRate, pretrainConfigSchema } from '../../stages/pretrain/index.js';
import { loadFixture, nhwc, REL_TOL, relErr, tensorRelErr, toOurLayout, type Json } from './parity-helpers.js';

const fixture = loadFixture('mocov3');
const s = fixture.sizes as Record<string, number>;
const config: VitConfig = { imageSize: s.imageSize!, patchSize: s.patchSize!, embedDim: s.embedDim!, depth: s.depth!, numHeads: s.numHeads!, mlpRatio: s.mlpRatio! };
const vit: VitBuild = { preset: 'parity', config, build: (store, prefix, seed) => new VisionTransformer(config, seed, store, prefix) };
const args = { ...mocov3.args.parse({}), temperature: fixture.temperature, momentum: fixture.baseMomentum, dim: s.dim!, mlpDim: s.mlpDim! };
/** Largest relative error seen per quantity (printed at the end, quoted on the card). */
const measured: Record<string, number> = {};
const record = (what: string, err: number) => (measured[what] = Math.max(measured[what] ?? 0, err));

beforeAll(async () => {
  await initBackend('tensorflow');
});

/** Official names → ours: the base encoder's ViT under `backbone.`, its `head.*` (the projector) and `predictor.*` as they are. */
const baseName = (n: string) => (n.startsWith('head.') ? n : `backbone.${n}`);
const officialName = (n: string) => (n.startsWith('base_encoder.') ? baseName(n.slice('base_encoder.'.length)) : n);

function load(store: ParamStore, state: Record<string, Json>, rename: (n: string) => string): void {
  for (const [name, t] of Object.entries(state)) {
    if (name === 'pos_embed') continue; // built, not loaded: checked against the official buffer below
    const value = toOurLayout(rename(name), t, store);
    store.get(rename(name)).assign(value);
    value.dispose();
  }
}

function expectMatches(what: string, ours: tf.Tensor, ref: Json, store: ParamStore, name: string): void {
  const expected = toOurLayout(name, ref, store);
  const err = tensorRelErr(ours, expected);
  record(what, err);
  expect(err, `${what} ${name}`).toBeLessThan(REL_TOL);
  expected.dispose();
}

/**
 * A parameter after AdamW's first step. Gradients are checked to REL_TOL of each tensor's largest element; an element
 * whose official gradient is below that is zero at the precision checked, and Adam's g / (|g| + 1e-8) turns the last
 * bits of such a gradient into a step anywhere up to lr (predictor.1.bias element 18: official gradient 8.1e-7 of a
 * tensor max of 0.19; a 2.5e-7 difference, 1.3e-6 of the max, moves its update by 2.8e-5). Those elements are held to
 * the Adam-step bound; every other element to REL_TOL.
 */
function expectAfterAdamW(ours: tf.Tensor, ref: Json, grad: Json, before: Json, store: ParamStore, name: string): void {
  const [expected, g, p0] = [toOurLayout(name, ref, store), toOurLayout(name, grad, store), toOurLayout(name, before, store)];
  const { err, step } = tf.tidy(() => {
    const noise = tf.less(tf.abs(g), tf.mul(tf.max(tf.abs(g)), REL_TOL));
    const decayed = tf.mul(p0, 1 - fixture.lr * fixture.weightDecay);
    const step = tf.max(tf.where(noise, tf.abs(tf.sub(ours, decayed)), tf.zerosLike(ours))).dataSync()[0]!;
    return { err: tensorRelErr(tf.where(noise, expected, ours), expected), step };
  });
  record('online after AdamW', err);
  expect(err, `online after AdamW ${name}`).toBeLessThan(REL_TOL);
  expect(step, `${name}: an Adam step on a gradient that is zero at REL_TOL moves at most lr`).toBeLessThanOrEqual(fixture.lr * (1 + 1e-6));
  tf.dispose([expected, g, p0]);
}

function build(): MoCoV3 {
  const method = new MoCoV3(args, vit, 1);
  load(method.online, fixture.inputs.base, baseName);
  load(method.online, fixture.inputs.predictor, (n) => `predictor.${n}`);
  load(method.momentumEncoder, fixture.inputs.momentum, baseName);
  return method;
}

describe('MoCo v3 parity with facebookresearch/moco-v3 builder.py MoCo_ViT', () => {
  it('matches the loss, the gradients, AdamW\'s update, the EMA and the BN buffers after one step', () => {
    const { inputs, outputs } = fixture;
    const method = build();
    const optimizer = createOptimizer({ method: 'mocov3', optimizer: { kind: 'adamw', baseLr: fixture.lr, momentum: 0.9, weightDecay: fixture.weightDecay } }, method.online);
    const views = [nhwc(inputs.x1), nhwc(inputs.x2)];
    let grads: NamedGradients = new Map();
    const result = method.step(
      { views, geometry: [] },
      {
        step: fixture.step,
        totalSteps: fixture.totalSteps,
        rng: new Rng(1), // unused: MoCo v3 draws nothing in its step
        applyGradients: (g) => {
          grads = new Map([...g].map(([k, v]) => [k, tf.keep(v.clone())]));
          optimizer.step(g, fixture.lr);
        },
      },
    );
    expect(relErr(method.momentumAt(fixture.step, fixture.totalSteps), fixture.momentum)).toBeLessThan(1e-12);

    for (const [what, ours, ref] of [['loss', result.loss, outputs.loss], ['loss ctr(q0, k1)', result.parts.view0!, outputs.loss12], ['loss ctr(q1, k0)', result.parts.view1!, outputs.loss21]] as const) {
      record(what, relErr(ours, ref));
      expect(relErr(ours, ref), what).toBeLessThan(REL_TOL);
    }
    // The gradients handed to the optimizer: exactly the official parameters with a .grad (no patch projection, no
    // position embedding), each within tolerance.
    const refGrads = Object.entries(outputs.grads as Record<string, Json>).map(([n, t]) => [officialName(n), t] as const);
    expect([...grads.keys()].sort()).toEqual(refGrads.map(([n]) => n).sort());
    for (const [name, t] of refGrads) {
      if (name === 'backbone.norm.bias') {
        // The final norm's shift adds one vector to every image's [CLS] before head.0 (Linear, no bias) → BatchNorm,
        // which subtracts the batch mean: its gradient is 0 in exact arithmetic, PyTorch's is float noise, so a relative
        // error is meaningless; both must be ~0 next to the final norm's scale gradient.
        const scale = tf.tidy(() => tf.max(tf.abs(grads.get('backbone.norm.weight')!)).dataSync()[0]!);
        const ours = tf.tidy(() => tf.max(tf.abs(grads.get(name)!)).dataSync()[0]!);
        record('grad backbone.norm.bias (|g| / |g_norm.weight|, exactly 0 in exact arithmetic)', ours / scale);
        expect(ours / scale).toBeLessThan(REL_TOL);
        expect(Math.max(...t.data.map(Math.abs)) / scale).toBeLessThan(REL_TOL);
        continue;
      }
      expectMatches(name.startsWith('backbone.') ? 'grad ViT' : 'grad projector / predictor', grads.get(name)!, t, method.online, name);
    }

    // After AdamW (parameters) and the query forwards (BN buffers). Where the exact gradient is 0 (the final norm's
    // shift, see above; the key third of every qkv bias: q·(k + b) shifts a query's logits by the same q·b, which
    // softmax ignores), both gradients are float noise and Adam's g/(|g| + 1e-8) turns noise into steps of up to lr:
    // those elements are held to that bound here, and to the official values exactly by the next test, which steps
    // AdamW on the official gradients.
    const c = config.embedDim;
    for (const [name, t] of Object.entries(outputs.base_after as Record<string, Json>)) {
      const ours = baseName(name);
      if (name === 'norm.bias' || /attn\.qkv\.bias$/.test(name)) {
        const [after, ref, before] = [method.online.get(ours), tf.tensor1d(t.data), tf.tensor1d(inputs.base[name].data)];
        const keys = (x: tf.Tensor) => (name === 'norm.bias' ? x : tf.slice(x, [c], [c]));
        const rest = (x: tf.Tensor) => tf.concat([tf.slice(x, [0], [c]), tf.slice(x, [2 * c], [c])]);
        const step = tf.tidy(() => tf.max(tf.abs(tf.sub(keys(after), tf.mul(keys(before), 1 - fixture.lr * fixture.weightDecay)))).dataSync()[0]!);
        expect(step, `${name}: an Adam step on a noise gradient moves at most lr`).toBeLessThanOrEqual(fixture.lr * (1 + 1e-6));
        if (name !== 'norm.bias') {
          const err = tf.tidy(() => tensorRelErr(rest(after), rest(ref)));
          record('online after AdamW', err);
          expect(err, `${name} (query and value thirds)`).toBeLessThan(REL_TOL);
        }
        tf.dispose([ref, before]);
        continue;
      }
      if (name.includes('running')) expectMatches('online BN buffers', method.online.get(ours), t, method.online, ours);
      else expectAfterAdamW(method.online.get(ours), t, outputs.grads[`base_encoder.${name}`], inputs.base[name], method.online, ours);
    }
    for (const [name, t] of Object.entries(outputs.predictor_after as Record<string, Json>)) {
      const ours = `predictor.${name}`;
      if (name.includes('running')) expectMatches('online BN buffers', method.online.get(ours), t, method.online, ours);
      else expectAfterAdamW(method.online.get(ours), t, outputs.grads[ours], inputs.predictor[name], method.online, ours);
    }
    // After the EMA (parameters) and the two key forwards (BN buffers).
    for (const [name, t] of Object.entries(outputs.momentum_after as Record<string, Json>)) {
      const ours = baseName(name);
      expectMatches(name.includes('running') ? 'momentum BN buffers' : 'momentum encoder after EMA', method.momentumEncoder.get(ours), t, method.momentumEncoder, ours);
    }
    // The frozen patch projection: untouched on both sides (no gradient, so no AdamW update and no decay).
    for (const store of [method.online, method.momentumEncoder]) {
      for (const name of ['patch_embed.proj.weight', 'patch_embed.proj.bias']) {
        const before = toOurLayout(`backbone.${name}`, inputs.base[name], store);
        expect(tensorRelErr(store.get(`backbone.${name}`), before), name).toBe(0);
        before.dispose();
      }
    }
    tf.dispose([...views, ...grads.values()]);
    optimizer.dispose();
    method.dispose();
  });

  it('steps AdamW on the official gradients to the official parameters, every element (one group, all decayed)', () => {
    const { outputs } = fixture;
    const method = build();
    const optimizer = createOptimizer({ method: 'mocov3', optimizer: { kind: 'adamw', baseLr: fixture.lr, momentum: 0.9, weightDecay: fixture.weightDecay } }, method.online);
    const grads: NamedGradients = new Map(Object.entries(outputs.grads as Record<string, Json>).map(([n, t]) => [officialName(n), toOurLayout(officialName(n), t, method.online)]));
    // The optimizer covers exactly the parameters with a gradient: nothing else is trainable.
    expect([...method.online.trainable().keys()].sort()).toEqual([...grads.keys()].sort());
    optimizer.step(grads, fixture.lr);
    for (const [name, t] of Object.entries(outputs.base_after as Record<string, Json>)) {
      if (!name.includes('running')) expectMatches('AdamW on the official gradients', method.online.get(baseName(name)), t, method.online, baseName(name));
    }
    for (const [name, t] of Object.entries(outputs.predictor_after as Record<string, Json>)) {
      if (!name.includes('running')) expectMatches('AdamW on the official gradients', method.online.get(`predictor.${name}`), t, method.online, `predictor.${name}`);
    }
    tf.dispose([...grads.values()]);
    optimizer.dispose();
    method.dispose();
  });

  it('builds vits.py\'s fixed 2-D sin-cos position embedding (row first), not MAE\'s (column first)', () => {
    const method = new MoCoV3(args, vit, 1);
    const ref = tf.tensor(fixture.init.pos_embed.data, fixture.init.pos_embed.shape);
    const err = tensorRelErr(method.online.get('backbone.pos_embed'), ref);
    record('pos_embed', err);
    expect(err).toBeLessThan(1e-6);
    expect(method.online.get('backbone.pos_embed').trainable).toBe(false);
    // The engine's own (MAE) embedding differs: the swap is what makes it MoCo v3's.
    const mae = new VisionTransformer(config, 1);
    expect(tensorRelErr(mae.params.get('pos_embed'), ref)).toBeGreaterThan(0.1);
    tf.dispose(ref);
    mae.dispose();
    method.dispose();
  });

  it('initialises and freezes as VisionTransformerMoCo(stop_grad_conv1=True)', () => {
    const { init } = fixture;
    const method = new MoCoV3(args, vit, 1);
    const maxAbs = (name: string) => tf.tidy(() => tf.max(tf.abs(method.online.get(name))).dataSync()[0]!);
    // qkv as three D×D matrices: U(±√(6/2D)), not xavier over [D, 3D]; the official draw reaches the same bound.
    for (let i = 0; i < config.depth; i++) {
      expect(maxAbs(`backbone.blocks.${i}.attn.qkv.weight`)).toBeLessThanOrEqual(init.qkv_bound);
      expect(maxAbs(`backbone.blocks.${i}.attn.qkv.weight`)).toBeGreaterThan(0.95 * init.qkv_bound);
    }
    expect(init.qkv_max_abs).toBeGreaterThan(0.95 * init.qkv_bound);
    expect(maxAbs('backbone.patch_embed.proj.weight')).toBeLessThanOrEqual(init.patch_bound);
    expect(maxAbs('backbone.patch_embed.proj.bias')).toBe(init.patch_bias_max_abs); // 0
    expect(maxAbs('backbone.cls_token')).toBeLessThan(1e-5); // N(0, 1e-6)
    expect(init.cls_token_max_abs).toBeLessThan(1e-5);
    expect(maxAbs('backbone.cls_token')).toBeGreaterThan(0);
    // What gets no gradient: the official `requires_grad=False` set (BN running statistics aside, buffers in PyTorch).
    const frozen = [...method.online.vars].filter(([n, v]) => !v.trainable && !/running_|num_batches/.test(n)).map(([n]) => n);
    expect(frozen.sort()).toEqual((init.frozen as string[]).map((n) => `backbone.${n}`).sort());
    // The momentum encoder starts as a copy and takes no gradient; the predictor is online only.
    expect([...method.momentumEncoder.vars.values()].every((v) => !v.trainable)).toBe(true);
    expect(tensorRelErr(method.momentumEncoder.get('backbone.blocks.0.attn.qkv.weight'), method.online.get('backbone.blocks.0.attn.qkv.weight'))).toBe(0);
    expect([...method.momentumEncoder.vars.keys()].some((n) => n.startsWith('predictor.'))).toBe(false);
    // Without --stop-grad-conv1 the projection trains.
    const unfrozen = new MoCoV3({ ...args, stopGradConv1: false }, vit, 1);
    expect(unfrozen.online.get('backbone.patch_embed.proj.weight').trainable).toBe(true);
    unfrozen.dispose();
    method.dispose();
  });

  it('follows main_moco.py\'s learning-rate (warm-up 40 of 300 epochs, cosine) and momentum (cosine to 1) schedules', () => {
    const sch = fixture.schedules;
    // One step per "epoch" at batch 256, so the loop's linear scaling is 1 and its step is main_moco.py's epoch.
    const run = pretrainConfigSchema.parse({ method: 'mocov3', batchSize: 256, steps: sch.epochs });
    expect(run.optimizer).toMatchObject({ kind: 'adamw', baseLr: sch.lr, weightDecay: 0.1 });
    sch.points.forEach((epoch: number, i: number) => {
      const lr = learningRate(run, epoch, sch.epochs);
      const m = cosineMomentum(epoch, sch.baseM, sch.epochs);
      record('schedules', Math.max(relErr(m, sch.momentum[i]), Math.abs(lr - sch.learningRate[i]) / sch.lr));
      expect(relErr(m, sch.momentum[i]), `m at epoch ${epoch}`).toBeLessThan(1e-12);
      expect(Math.abs(lr - sch.learningRate[i]) / sch.lr, `lr at epoch ${epoch}`).toBeLessThan(1e-12);
    });
  });

  it('has the sizes the tests assume, and prints the measured errors', () => {
    expect(fixture.official).toContain(mocov3.code.commit);
    expect(fixture.temperature).not.toBe(0.2); // τ differs from the default: the 2τ factor is exercised, not a constant
    expect(fixture.momentum).not.toBe(fixture.baseMomentum); // a cosine-scheduled m, not the base value
    console.log('mocov3 parity, max relative error:', JSON.stringify(measured));
  });
});
