/**
 * The evaluation stage's 'pairdetr' task: train a Pair DETR detector (arXiv 2210.16476; pairdetr.ts has the model and
 * its objective, docs/methods/pairdetr.md the reading of the paper) on the training split's boxes and score the eval
 * split with cocoEvaluate (bbox), as the `detr` task (../detr/task.ts) trains and scores DETR:
 *
 *   - the detector: `PairDetrHead` on the evaluated backbone's last map, from scratch at `evaluation.pairdetr`'s
 *     sizes; its centre branch is DETR's head built with the `detr` task's seed, so at equal sizes the shared weights
 *     (input projection, encoder, centre decoder, queries, classifier, box head) start where the `detr` task's do;
 *   - the backbone as DETR's: FrozenBatchNorm2d, conv1 and layer1 frozen, layer2-4 at `lrBackbone` (0 = frozen);
 *   - the loss: L_set(centre) + L_set(top-left) + λ_pair · L_pair (engine matcher and SetCriterion per decoder, with
 *     auxiliary losses; the pair-association InfoNCE on the last layers);
 *   - AdamW (transformers/heads at `lr`, backbone at `lrBackbone`, decay on every parameter), gradient norm clipped to
 *     `clipMaxNorm`, both rates ×0.1 from `lrDropAt` of the epochs; the same shuffling and dropout streams as `detr`;
 *   - inference: every centre query with its most similar top-left query; joint class probabilities; the box from
 *     the keypoint pair; all Q pairs of an image are scored.
 * Epoch checkpoints hold every weight, both optimizers' moments, the shuffling RNG and the step count, so a retried
 * attempt resumes at the next epoch and ends with the same numbers.
 */
import { BadInputError, throwIfAborted } from '../../../core/errors.js';
import { Rng } from '../../../core/rng.js';
import { tf } from '../../../core/tf.js';
import { clipGradientsByGlobalNorm, disposeGradients, namedGradients } from '../../engine/grads.js';
import { AdamW, excludeNothing } from '../../engine/optim.js';
import { ParamStore } from '../../engine/params.js';
import { scoreDetections } from '../detection/evaluate.js';
import type { Detection } from '../detection/postprocess.js';
import type { EvalSample } from '../eval-data.js';
import { detrHeadConfig, detrTargets, type DetrTaskInput, type DetrTaskOutcome } from '../detr/task.js';
import type { PairDetrConfig } from './config.js';
import { PairDetrHead, pairDetrCriterion, pairDetrInferenceArrays, pairDetrPostprocess, type PairDetrCriterionConfig, type PairDetrInferenceInput } from './pairdetr.js';

export interface PairDetrTaskInput extends Omit<DetrTaskInput, 'config' | 'detector'> {
  config: PairDetrConfig;
}

const batchOf = (samples: EvalSample[], idx: number[], size: number): tf.Tensor4D => {
  const data = new Float32Array(idx.length * size * size * 3);
  idx.forEach((i, j) => data.set(samples[i]!.pixels, j * size * size * 3));
  return tf.tensor4d(data, [idx.length, size, size, 3]);
};

export async function runPairDetrTask(t: PairDetrTaskInput): Promise<DetrTaskOutcome> {
  const c = t.config;
  const size = t.imageSize;
  const targets = t.train.map((s) => detrTargets(s, size));
  if (targets.every((x) => x.labels.length === 0)) throw new BadInputError('pairdetr needs training samples with boxes (the training split has no objects)', 'evaluation.tasks');
  for (const s of [...t.train, ...t.evalSamples]) {
    const bad = s.labels.find((l) => !(l >= 0 && l < t.classes.length));
    if (bad !== undefined) throw new BadInputError(`object class ${bad} is outside the dataset's ${t.classes.length} classes`, s.key);
  }
  const backbone = await t.loadCopy();
  const head = new ParamStore();
  const optimizers: AdamW[] = [];
  try {
    const config = detrHeadConfig({ ...c, pretrainedDetector: false }, t.classes.length, backbone.outChannels, null);
    // The `detr` task's seed: the centre branch starts from the weights DETR starts from.
    const model = new PairDetrHead(head.scope(''), config, `downstream-detr-${t.seed}`);
    const backboneParams = new Map<string, tf.Variable>();
    for (const [name, v] of backbone.params.vars) {
      const role = backbone.params.info.get(name)?.role;
      v.trainable = c.lrBackbone > 0 && /^layer[234]\./.test(name) && role !== 'norm' && role !== 'buffer';
      if (v.trainable) backboneParams.set(`backbone.${name}`, v);
    }
    const headParams = head.trainable();
    const headOpt = new AdamW(headParams, { weightDecay: c.weightDecay, noDecay: excludeNothing }, head.info);
    optimizers.push(headOpt);
    const backboneOpt = backboneParams.size ? new AdamW(backboneParams, { weightDecay: c.weightDecay, noDecay: excludeNothing }) : null;
    if (backboneOpt) optimizers.push(backboneOpt);
    const criterion: PairDetrCriterionConfig = {
      numClasses: t.classes.length,
      eosCoef: c.eosCoef,
      costs: { costClass: c.costClass, costBbox: c.costBbox, costGiou: c.costGiou },
      weights: { ce: 1, bbox: c.bboxLossCoef, giou: c.giouLossCoef },
      pairLossCoef: c.pairLossCoef,
      temperature: c.temperature,
    };
    const all = new Map([...backboneParams, ...headParams]);
    const state = () =>
      new Map<string, tf.Variable>([
        ...[...backbone.params.vars].map(([k, v]): [string, tf.Variable] => [`backbone.${k}`, v]),
        ...[...head.vars].map(([k, v]): [string, tf.Variable] => [`pairdetr.${k}`, v]),
        ...optimizers.flatMap((o, i) => [...o.slots()].map(([k, v]): [string, tf.Variable] => [`optimizer${i}.${k}`, v])),
      ]);

    const stepsPerEpoch = Math.ceil(t.train.length / c.batchSize);
    const dropEpoch = Math.round(c.lrDropAt * c.epochs);
    // The `detr` task's streams: at equal batch sizes both see the same batches.
    const rng = Rng.fromSeed('downstream-detr', t.seed);
    let startEpoch = 0;
    const resume = await t.checkpointer?.load();
    if (resume) {
      resume.restore(state());
      rng.state = resume.rngState;
      for (const o of optimizers) o.loadCounters({ stepCount: resume.stepCount });
      startEpoch = resume.epoch;
    }
    const mask = (n: number, h: number, w: number) => tf.zeros([n, h, w], 'bool') as tf.Tensor3D;
    let finalLoss = NaN;
    let finalPairLoss = NaN;
    const secondsPerEpoch: number[] = [];
    for (let epoch = startEpoch; epoch < c.epochs; epoch++) {
      const t0 = performance.now();
      const scale = epoch >= dropEpoch ? 0.1 : 1;
      const order = rng.shuffle(Array.from({ length: t.train.length }, (_, i) => i));
      let sum = 0;
      let pairSum = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
        throwIfAborted(t.signal);
        const idx = order.slice(s * c.batchSize, (s + 1) * c.batchSize);
        const x = batchOf(t.train, idx, size);
        const dropoutRng = Rng.fromSeed('downstream-detr-dropout', t.seed, headOpt.stepCount);
        const kept: { pair?: tf.Scalar } = {};
        const { loss, grads } = namedGradients(() => {
          const features = backbone.apply(x, { training: false }).dense;
          const [n, h, w] = features.shape;
          const r = pairDetrCriterion(model.apply(features, mask(n, h, w), { training: true, rng: dropoutRng }), idx.map((i) => targets[i]!), criterion);
          kept.pair = tf.keep(r.losses.loss_pair!.clone());
          return r.total;
        }, all);
        const clipped = c.clipMaxNorm > 0 ? clipGradientsByGlobalNorm(grads, c.clipMaxNorm) : { grads, totalNorm: null };
        const pick = (names: Map<string, tf.Variable>) => new Map([...clipped.grads].filter(([k]) => names.has(k)));
        headOpt.step(pick(headParams), c.lr * scale);
        backboneOpt?.step(pick(backboneParams), c.lrBackbone * scale);
        sum += (await loss.data())[0]!;
        pairSum += kept.pair ? kept.pair.dataSync()[0]! : 0;
        tf.dispose([x, loss, ...(kept.pair ? [kept.pair] : []), ...(clipped.totalNorm ? [clipped.totalNorm] : [])]);
        disposeGradients(clipped.grads);
      }
      finalLoss = sum / stepsPerEpoch;
      finalPairLoss = pairSum / stepsPerEpoch;
      const seconds = (performance.now() - t0) / 1000;
      secondsPerEpoch.push(seconds);
      await t.checkpointer?.save(epoch + 1, state(), rng.state, headOpt.stepCount);
      t.onEpoch?.(epoch + 1, finalLoss, seconds, { lr: c.lr * scale, imagesPerSecond: t.train.length / Math.max(seconds, 1e-9) });
    }

    const t0 = performance.now();
    const detections: Detection[][] = [];
    for (let start = 0; start < t.evalSamples.length; start += t.batchSize) {
      const idx = Array.from({ length: Math.min(t.batchSize, t.evalSamples.length - start) }, (_, j) => start + j);
      let arrays: PairDetrInferenceInput | null = null;
      tf.tidy(() => {
        const features = backbone.apply(batchOf(t.evalSamples, idx, size), { training: false }).dense;
        const [n, h, w] = features.shape;
        arrays = pairDetrInferenceArrays(model.apply(features, mask(n, h, w), { training: false }));
      });
      detections.push(...pairDetrPostprocess(arrays!, config.numQueries, t.classes.length, size).map((img) => img.map(({ box, label, score }) => ({ box, label, score }))));
    }
    const evalSeconds = (performance.now() - t0) / 1000;
    const scores = scoreDetections(t.evalSamples, detections, t.classes, size);
    const metrics = Object.fromEntries(Object.entries(scores.metrics).map(([k, v]) => [k.replace(/^det\./, 'pairdetr.'), v]));
    return {
      metrics: {
        ...metrics,
        'pairdetr.finalLoss': finalLoss,
        'pairdetr.finalPairLoss': finalPairLoss,
        'pairdetr.secondsPerEpoch': secondsPerEpoch.length ? secondsPerEpoch.reduce((a, b) => a + b, 0) / secondsPerEpoch.length : NaN,
        'pairdetr.imagesPerSecond': t.evalSamples.length / Math.max(evalSeconds, 1e-9),
      },
      perClass: scores.perClass,
      predictions: scores.predictions,
    };
  } finally {
    for (const o of optimizers) o.dispose();
    head.dispose();
    backbone.dispose();
  }
}
