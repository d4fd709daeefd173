import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../core/tf.js';
import { buildBackbone } from '../../stages/downstream/backbone.js';
import { scoreDetections } from '../../stages/downstream/detection/evaluate.js';
import { detect, disposeDetector, trainDetector } from '../../stages/downstream/detection/train.js';
import { POST, detectorOptions as options, squareScenes } from './detection-helpers.js';

const SIZE = 32;
const CLASSES = ['red', 'green', 'blue'];

beforeAll(async () => {
  await initBackend('tensorflow');
});

describe('FCOS detector training', () => {
  it('overfits a few synthetic images to AP50 > 0.5 (fine-tuned resnet-tiny)', async () => {
    const scenes = squareScenes(8, SIZE, 'overfit');
    const model = buildBackbone('resnet-tiny', 0);
    const before = tf.memory().numTensors;
    const losses: number[] = [];
    const { detector, finalLoss, positivesPerImage } = await trainDetector(model, scenes, SIZE, CLASSES.length, options({ onEpoch: (_, loss) => losses.push(loss) }));
    const detections = detect(model, detector, scenes.map((s) => s.pixels), 8, POST);
    const scores = scoreDetections(scenes, detections, CLASSES);
    expect(positivesPerImage).toBeGreaterThan(1);
    expect(finalLoss).toBeLessThan(losses[0]! * 0.75);
    expect(scores.metrics['det.AP50']).toBeGreaterThan(0.5);
    expect(scores.predictions).toHaveLength(8);
    expect(scores.perClass.support.reduce((a, b) => a + b, 0)).toBe(scenes.reduce((a, s) => a + s.labels.length, 0));
    disposeDetector(detector);
    model.dispose();
    // Only the backbone's and head's variables were alive in between: training and inference leak nothing.
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  });

  it('frozen mode trains the pyramid and head only, leaving every backbone tensor unchanged', async () => {
    const scenes = squareScenes(4, SIZE, 'frozen');
    const model = buildBackbone('resnet-tiny', 1);
    const snapshot = new Map([...model.params.vars].map(([k, v]) => [k, v.dataSync().slice()]));
    const losses: number[] = [];
    const { detector } = await trainDetector(model, scenes, SIZE, CLASSES.length, options({ mode: 'frozen', epochs: 8, onEpoch: (_, loss) => losses.push(loss) }));
    for (const [k, v] of model.params.vars) expect(v.dataSync(), k).toEqual(snapshot.get(k));
    expect(losses[losses.length - 1]).toBeLessThan(losses[0]!);
    disposeDetector(detector);
    model.dispose();
  });
});
