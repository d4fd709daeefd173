/**
 * SCFS parity with skyoux/scfs@7bb7c37: the official `main_scfs.train_one_epoch` (one iteration) with the official
 * `models/scfs.py` wrappers, heads and losses, run under PyTorch on identical weights. Reference values:
 * test/fixtures/methods/scfs/parity.json, written by test/fixtures/methods/scfs/make_parity.py (see its docstring).
 * The trunk's parameters ARE the layer-2/3/4 maps (one set for the global-crop call, one for the local-crop call; the
 * teacher has its own), so one `step` exercises exactly the method: the DINO head with its weight-normalised last layer,
 * the shallow heads, the feature search, the DINO loss and the six shallow terms with centring and the teacher
 * temperature of an epoch inside the warm-up, per-parameter clipping, the last-layer freeze, the four centres and the
 * EMA teacher (frozen weight_g included) at the scheduled momentum.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import type { ParamStore } from '../../stages/engine/params.js';
import { createOptimizer, pretrainConfigSchema } from '../../stages/pretrain/index.js';
import { featureSearch, LEVELS, localCropSize, SCFS, scfs, type SCFSArgs } from '../../stages/methods/scfs.js';
import type { BackboneFactory } from '../../stages/methods/shared/contract.js';
import { type Json, loadFixture, nhwc, REL_TOL, relErr, stepCapturing, tensorRelErr, toOurLayout } from './parity-helpers.js';

interface Scenario {
  epoch: number;
  step: number;
  clipGrad: number;
  freezeLastLayer: number;
  teacherTemp: number;
  momentum: number;
  outputs: {
    loss: number;
    terms: Record<string, number>;
    lastLayerFrozen: boolean;
    clipped: number;
    grads: Record<string, Json>;
    teacherLocal: Json[];
    attention: Json[][];
    teacherAfter: Record<string, Json>;
    studentBuffersAfter: Record<string, Json>;
    centersAfter: Record<string, Json>;
  };
}

const fixture = loadFixture('scfs');
const { B, N, channels, globalSides, localSides, imgGlobal, imgLocal, K, hidden, bottleneck, D, shallowHidden, shallowBottleneck } = fixture.sizes as Record<string, number> & Record<'channels' | 'globalSides' | 'localSides', number[]>;
const sch = fixture.schedule as Record<string, number>;
const TOTAL_STEPS = sch.epochs! * sch.itersPerEpoch!;
const scenarios = fixture.scenarios as Record<string, Scenario>;
/** Largest relative error per quantity over all scenarios (printed at the end, for the card). */
const worst: Record<string, number> = {};
const note = (what: string, err: number) => {
  worst[what] = Math.max(worst[what] ?? 0, err);
  return err;
};

function argsOf(sc: Scenario): SCFSArgs {
  return {
    ...scfs.args.parse({}),
    outDim: K,
    hiddenDim: hidden,
    bottleneckDim: bottleneck,
    shallowBottleneckDim: shallowBottleneck,
    shallowHiddenDim: shallowHidden,
    shallowOutDim: D,
    studentTemp: sch.studentTemp!,
    warmupTeacherTemp: sch.warmupTeacherTemp!,
    teacherTemp: sch.teacherTemp!,
    warmupTeacherTempEpochs: sch.warmupTeacherTempEpochs!,
    epochs: sch.epochs!,
    centerMomentum: sch.centerMomentum!,
    momentumTeacher: sch.momentumTeacher!,
    clipGrad: sc.clipGrad,
    freezeLastLayerEpochs: sc.freezeLastLayer,
    localCrops: N,
  };
}

/** The trunk of these tests: its parameters are the layer-2/3/4 maps (NHWC); a global-size input gets the global ones. */
const mapTrunk: BackboneFactory = (store, prefix) => {
  const maps = (which: string, sides: number[], crops: number) =>
    LEVELS.map((level, l) => store.add(`${prefix}.${which}_${level}`, tf.zeros([crops * B, sides[l]!, sides[l]!, channels[l]!]), { layout: 'same', role: 'weight' }));
  const global = maps('global', globalSides, 2);
  const local = maps('local', localSides, N);
  return {
    outChannels: channels[2]!,
    stageChannels: channels,
    apply: () => {
      throw new Error('SCFS reads applyStages');
    },
    applyStages: (x) => {
      const out = x.shape[1] === imgGlobal ? global : local;
      expect(x.shape[0], 'one trunk call per crop size, crops concatenated').toBe(out[0]!.shape[0]);
      return out.map((v) => tf.mul(v, 1) as tf.Tensor4D);
    },
  };
};

/** Our name for an official state_dict entry: the trunk's maps keep theirs, the heads live under `neck.`. */
const ours = (name: string) => (name.startsWith('backbone.') ? name : `neck.${name}`);
const toOurs = (name: string, t: Json, store: ParamStore) => (name.startsWith('backbone.') ? nhwc(t) : toOurLayout(ours(name), t, store));

function loadState(store: ParamStore, state: Record<string, Json>): void {
  const expected = [...store.vars.keys()].filter((k) => !k.endsWith('num_batches_tracked')).sort();
  expect(Object.keys(state).map(ours).sort(), 'the fixture holds every tensor of the network').toEqual(expected);
  for (const [name, t] of Object.entries(state)) {
    const value = toOurs(name, t, store);
    store.get(ours(name)).assign(value);
    value.dispose();
  }
}

function build(sc: Scenario): SCFS {
  const method = new SCFS(argsOf(sc), mapTrunk, 1, TOTAL_STEPS);
  loadState(method.online, fixture.inputs.student);
  loadState(method.teacher, fixture.inputs.teacher);
  const centers = fixture.inputs.centers as Record<string, Json>;
  [method.centers.dino, ...method.centers.levels].forEach((c) => {
    const v = tf.tensor(centers[c.name]!.data, centers[c.name]!.shape);
    c.value.assign(v);
    v.dispose();
  });
  return method;
}

const views = () => [...Array.from({ length: 2 }, () => tf.zeros([B, imgGlobal, imgGlobal, 3])), ...Array.from({ length: N }, () => tf.zeros([B, imgLocal, imgLocal, 3]))] as tf.Tensor4D[];

function expectStore(store: ParamStore, state: Record<string, Json>, what: string): void {
  for (const [name, t] of Object.entries(state)) {
    const ref = toOurs(name, t, store);
    expect(note(what, tensorRelErr(store.get(ours(name)), ref)), `${what}: ${name}`).toBeLessThan(REL_TOL);
    ref.dispose();
  }
}

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('SCFS parity with skyoux/scfs main_scfs.train_one_epoch', () => {
  for (const [name, sc] of Object.entries(scenarios)) {
    it(`${name}: schedules, every loss term, the gradients handed to the optimizer, the teacher, BN statistics and centres after one step`, () => {
      const method = build(sc);
      const s = method.schedules(sc.step);
      expect(s.epoch).toBe(sc.epoch);
      expect(note('teacher temperature', relErr(s.teacherTemp, sc.teacherTemp))).toBeLessThan(1e-12);
      expect(note('EMA momentum', relErr(s.momentum, sc.momentum))).toBeLessThan(1e-12);
      expect(sc.teacherTemp).toBeGreaterThan(sch.warmupTeacherTemp!); // inside the warm-up, not at either end
      expect(sc.teacherTemp).toBeLessThan(sch.teacherTemp!);

      const v = views();
      const { result, grads } = stepCapturing(method, v, {}, sc.step, TOTAL_STEPS);
      expect(note('loss', relErr(result.loss, sc.outputs.loss))).toBeLessThan(REL_TOL);
      const { terms } = sc.outputs;
      expect(note('loss dino', relErr(result.parts.dino!, terms.dino!))).toBeLessThan(REL_TOL);
      for (const level of LEVELS) {
        for (const side of ['Global', 'Local']) {
          const key = `${level}${side}`;
          expect(note(`loss ${side.toLowerCase()} terms`, relErr(result.parts[key]!, 0.5 * terms[key]!)), key).toBeLessThan(REL_TOL);
        }
      }

      // Exactly the official set: every trainable parameter, minus the last layer while frozen (weight_g never: frozen).
      expect(grads.has('neck.head.last_layer.weight_v')).toBe(!sc.outputs.lastLayerFrozen);
      expect([...grads.keys()].sort()).toEqual(Object.keys(sc.outputs.grads).map(ours).sort());
      for (const [n, t] of Object.entries(sc.outputs.grads)) {
        const [got, ref] = [grads.get(ours(n))!, toOurs(n, t, method.online)];
        if (/_head\.mlp\.[03]\.bias$/.test(n)) {
          // A bias right before a train-mode BatchNorm has a zero gradient (BN subtracts the batch mean): both sides hold
          // float32 rounding noise only, so compare them to the scale of the layer's weight gradient instead (within
          // REL_TOL, as every gradient: the noise depends on the kernels' summation order, 1.2e-5 with oneDNN's).
          const w = sc.outputs.grads[n.replace(/bias$/, 'weight')]!;
          const scale = Math.max(...w.data.map(Math.abs));
          const noise = tf.tidy(() => Math.max(tf.max(tf.abs(got)).dataSync()[0]!, tf.max(tf.abs(ref)).dataSync()[0]!));
          expect(noise / scale, `grad ${n} (zero up to rounding)`).toBeLessThan(REL_TOL);
        } else {
          const what = n.startsWith('backbone.') ? 'grad maps (trunk)' : n.startsWith('head.') ? 'grad DINO head' : 'grad shallow heads';
          expect(note(what, tensorRelErr(got, ref)), `grad ${n}`).toBeLessThan(REL_TOL);
        }
        ref.dispose();
      }

      expectStore(method.teacher, sc.outputs.teacherAfter, 'teacher after EMA (params + BN buffers)');
      expectStore(method.online, sc.outputs.studentBuffersAfter, 'student BN buffers after');
      for (const c of [method.centers.dino, ...method.centers.levels]) {
        const ref = tf.tensor(sc.outputs.centersAfter[c.name]!.data, sc.outputs.centersAfter[c.name]!.shape);
        expect(note('centres after', tensorRelErr(c.value, ref)), `centre ${c.name}`).toBeLessThan(REL_TOL);
        ref.dispose();
      }
      expect(Object.values(result.parts).reduce((a, b) => a + b, 0)).toBeCloseTo(result.loss, 4);
      tf.dispose([...v, ...grads.values()]);
      method.dispose();
    });
  }

  it('feature search: a_i ⊙ t and the searched targets h^l_ξ(a_i ⊙ t) of every layer and local crop', () => {
    const sc = scenarios.warmup!;
    const method = build(sc);
    const v = views();
    const teacher = method.teacherGlobal(v.slice(0, 2));
    const studentLocal = LEVELS.map((level) => nhwc(fixture.inputs.student[`backbone.local_${level}`]));
    const pooled = tf.concat(studentLocal.map((m) => tf.mean(m, [1, 2])), 1) as tf.Tensor2D;
    LEVELS.forEach((_, l) => {
      const searched = featureSearch(teacher.firstCrop[l]!, tf.split(pooled, channels, 1)[l] as tf.Tensor2D);
      const ref = tf.tidy(() => {
        const [b, h, w] = [B, globalSides[l]!, globalSides[l]!];
        const a = tf.concat(sc.outputs.attention[l]!.map((t) => tf.reshape(tf.tensor(t.data, t.shape), [b, h, w, 1])), 0); // [N·B, h, w, 1]
        return tf.mul(a, tf.tile(teacher.firstCrop[l]!, [N, 1, 1, 1]));
      });
      expect(note('searched features a_i ⊙ t', tensorRelErr(searched, ref)), `layer ${l + 2}`).toBeLessThan(REL_TOL);
      tf.dispose([searched, ref]);
    });
    const targets = method.searchTargets(teacher.firstCrop, pooled);
    sc.outputs.teacherLocal.forEach((t, l) => {
      const ref = tf.tensor(t.data, t.shape);
      const got = tf.squeeze(tf.slice(targets, [l, 0, 0], [1, -1, -1]), [0]);
      expect(note('searched targets h_ξ', tensorRelErr(got, ref)), `layer ${l + 2}`).toBeLessThan(REL_TOL);
      tf.dispose([ref, got]);
    });
    tf.dispose([...v, ...studentLocal, pooled, targets, teacher.out, ...teacher.shallow, ...teacher.firstCrop]);
    method.dispose();
  });

  it('keeps the teacher, the centres and the schedule clock as checkpoint state; leaks no tensors across steps', () => {
    const sc = scenarios.warmup!;
    const method = build(sc);
    expect(Object.keys(method.state).sort()).toEqual(['centers', 'schedule', 'teacher']);
    expect([...method.state.centers!.tensors.keys()]).toEqual(['dino', ...LEVELS]);
    expect(method.state.teacher!.tensors).toBe(method.teacher.vars);
    expect(method.state.schedule!.counters!()).toEqual({ totalSteps: TOTAL_STEPS });
    expect(() => method.state.schedule!.loadCounters!({ totalSteps: TOTAL_STEPS + 1 })).toThrow(/timed for 101 steps, this run has 100/);
    const v = views();
    const counts: number[] = [];
    for (let step = 0; step < 3; step++) {
      const { grads } = stepCapturing(method, v, {}, step, TOTAL_STEPS);
      tf.dispose([...grads.values()]);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
    tf.dispose(v);
    method.dispose();
  });

  it('exports the teacher, and decays weights but not biases or norm parameters (get_params_groups)', () => {
    const sc = scenarios.frozen!;
    const method = build(sc);
    expect(method.exported).toBe(method.teacher);
    const config = pretrainConfigSchema.parse({ method: 'scfs', optimizer: { weightDecay: 0.1 } });
    const optimizer = createOptimizer(config, method.online);
    const names = ['neck.layer2_head.mlp.0.weight', 'neck.layer2_head.mlp.0.bias', 'neck.layer2_head.bn1.weight', 'neck.head.last_layer.weight_v'];
    const before = names.map((n) => method.online.get(n).clone());
    const zeros = new Map(names.map((n) => [n, tf.zerosLike(method.online.get(n))]));
    optimizer.step(zeros, 1);
    const moved = names.map((n, i) => tf.tidy(() => tf.max(tf.abs(tf.sub(method.online.get(n), before[i]!))).dataSync()[0]!));
    expect(moved.map((d) => d > 0)).toEqual([true, false, false, true]);
    tf.dispose([...before, ...zeros.values()]);
    optimizer.dispose();
    method.dispose();
  });

  it('declares DINO multi-crop views: 2 global + N local crops, local side 96/224 of the global rounded to 8 px', () => {
    const args = scfs.args.parse({});
    const specs = scfs.consumes.views(224, args);
    expect(specs.map((s) => s.size)).toEqual([224, 224, ...Array.from({ length: 8 }, () => 96)]);
    expect(specs.map((s) => s.scale)).toEqual([[0.25, 1], [0.25, 1], ...Array.from({ length: 8 }, () => [0.05, 0.25])]);
    expect(specs.map((s) => s.blur?.p)).toEqual([1, 0.1, ...Array.from({ length: 8 }, () => 0.5)]);
    expect(specs.map((s) => s.solarizeP ?? 0)).toEqual([0, 0.2, ...Array.from({ length: 8 }, () => 0)]);
    expect([localCropSize(64, 96 / 224), localCropSize(64, 0.5), localCropSize(32, 0.5)]).toEqual([24, 32, 16]);
  });

  it('has the sizes the tests assume', () => {
    expect(fixture.official.commit.startsWith(scfs.code.commit)).toBe(true);
    expect(scenarios.warmup!.outputs.clipped).toBeGreaterThan(0); // clipping acted on some parameters…
    expect(scenarios.warmup!.outputs.clipped).toBeLessThan(Object.keys(scenarios.warmup!.outputs.grads).length); // …not all
    console.log('SCFS parity, max relative error per quantity:', JSON.stringify(worst));
  });
});
