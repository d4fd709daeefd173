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
 * The loop (backbone freezing, optimizers, clipping, schedule, checkpoints, scoring) is the `detr` task's
 * `fineTuneDetector`: a retried attempt resumes at the next epoch and ends with the same numbers.
 */
import { tf } from '../../../core/tf.js';
import { ParamStore } from '../../engine/params.js';
import type { ResNet } from '../../engine/resnet.js';
import { detectorTargets, detrHeadConfig, fineTuneDetector, renameDetectionMetrics, type DetrTaskInput, type DetrTaskOutcome } from '../detr/task.js';
import type { PairDetrConfig } from './config.js';
import { PairDetrHead, pairDetrCriterion, pairDetrInferenceArrays, pairDetrPostprocess, type PairDetrCriterionConfig, type PairDetrInferenceInput } from './pairdetr.js';

export interface PairDetrTaskInput extends Omit<DetrTaskInput, 'config' | 'detector'> {
  config: PairDetrConfig;
}

export async function runPairDetrTask(t: PairDetrTaskInput): Promise<DetrTaskOutcome> {
  const c = t.config;
  const targets = detectorTargets(t, 'pairdetr');
  const backbone = await t.loadCopy();
  const head = new ParamStore();
  try {
    const config = detrHeadConfig({ ...c, pretrainedDetector: false }, t.classes.length, backbone.outChannels, null);
    // The `detr` task's seed: the centre branch starts from the weights DETR starts from.
    const model = new PairDetrHead(head.scope(''), config, `downstream-detr-${t.seed}`);
    const criterion: PairDetrCriterionConfig = {
      numClasses: t.classes.length,
      eosCoef: c.eosCoef,
      costs: { costClass: c.costClass, costBbox: c.costBbox, costGiou: c.costGiou },
      weights: { ce: 1, bbox: c.bboxLossCoef, giou: c.giouLossCoef },
      pairLossCoef: c.pairLossCoef,
      temperature: c.temperature,
    };
    const mask = (n: number, h: number, w: number) => tf.zeros([n, h, w], 'bool') as tf.Tensor3D;
    const features = (net: ResNet, x: tf.Tensor4D) => net.apply(x, { training: false }).dense;
    const run = await fineTuneDetector(t, c, backbone, targets, {
      store: head,
      name: 'pairdetr',
      lr: c.lr,
      lrBackbone: c.lrBackbone,
      lrDropAt: c.lrDropAt,
      loss(net, x, batchTargets, ctx) {
        const f = features(net, x);
        const [n, h, w] = f.shape;
        const r = pairDetrCriterion(model.apply(f, mask(n, h, w), ctx), batchTargets, criterion);
        return { total: r.total, extras: { pair: r.losses.loss_pair! } };
      },
      detect(net, x) {
        let arrays: PairDetrInferenceInput | null = null;
        tf.tidy(() => {
          const f = features(net, x);
          const [n, h, w] = f.shape;
          arrays = pairDetrInferenceArrays(model.apply(f, mask(n, h, w), { training: false }));
        });
        return pairDetrPostprocess(arrays!, config.numQueries, t.classes.length, t.imageSize).map((img) => img.map(({ box, label, score }) => ({ box, label, score })));
      },
    });
    return {
      metrics: {
        ...renameDetectionMetrics(run.scores.metrics, 'pairdetr'),
        'pairdetr.finalLoss': run.finalLoss,
        'pairdetr.finalPairLoss': run.finalExtras.pair ?? NaN,
        'pairdetr.secondsPerEpoch': run.secondsPerEpoch,
        'pairdetr.imagesPerSecond': run.evalImagesPerSecond,
      },
      perClass: run.scores.perClass,
      predictions: run.scores.predictions,
    };
  } finally {
    head.dispose();
    backbone.dispose();
  }
}
