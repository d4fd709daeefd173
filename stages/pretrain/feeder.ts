/**
 * Two-view batches for MoCo v2 / DenseCL, from the data stage's training loader (stages/data/loader.ts:
 * seeded shard order and shuffle buffer, sha256-checked shards, per-sample augmentation randomness, exact
 * resume from a cursor) with MoCo v2's view recipe (`VIEW_PRESETS.mocoV2`: RandomResizedCrop scale (0.2, 1),
 * ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, blur p 0.5 with σ scaled from 224 px, flip), then
 * torchvision's ToTensor + Normalize(ImageNet mean/std). Batches run on across epoch boundaries.
 */
import type { ArtifactStore } from '../../core/store/index.js';
import { createTrainLoader, viewsTransform, type LoaderCursor, type LoaderItem, type TrainLoader } from '../data/loader.js';
import { VIEW_PRESETS, type AugmentedView } from '../data/augment.js';
import type { DecodedSample } from '../data/sample.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

export type DataCursor = LoaderCursor;
export const START_CURSOR: DataCursor = { epoch: 0, position: 0 };

export interface ViewBatch {
  /** [B, size, size, 3] HWC float32, ImageNet-normalised, flattened. */
  view0: Float32Array;
  view1: Float32Array;
  /** The cursor after this batch (what a checkpoint taken after this step stores). */
  next: DataCursor;
}

export interface FeederOptions {
  store: ArtifactStore;
  /** ShardResult.datasetManifestKey. */
  datasetManifestKey: string;
  split: string;
  seed: number;
  batchSize: number;
  imageSize: number;
  signal?: AbortSignal;
}

type TwoViews = { sample: DecodedSample; views: AugmentedView[] };

/** Write one [0, 1] view into `out` at element `offset`, normalised channel by channel. */
function normalizeInto(out: Float32Array, offset: number, view: AugmentedView): void {
  const px = view.image.data;
  for (let i = 0; i < px.length; i++) out[offset + i] = (px[i]! - IMAGENET_MEAN[i % 3]!) / IMAGENET_STD[i % 3]!;
}

export class ViewBatchFeeder {
  private constructor(
    private readonly options: FeederOptions,
    readonly loader: TrainLoader<TwoViews>,
    private readonly items: AsyncGenerator<LoaderItem<TwoViews>>,
  ) {}

  static async open(options: FeederOptions, cursor: DataCursor = START_CURSOR): Promise<ViewBatchFeeder> {
    const loader = await createTrainLoader<TwoViews>({
      store: options.store,
      dataset: options.datasetManifestKey,
      split: options.split,
      seed: options.seed,
      transform: viewsTransform(VIEW_PRESETS.mocoV2(options.imageSize)),
      signal: options.signal,
    });
    return new ViewBatchFeeder(options, loader, loader.iterate(cursor));
  }

  async nextBatch(): Promise<ViewBatch> {
    const { batchSize, imageSize } = this.options;
    const pixels = imageSize * imageSize * 3;
    const view0 = new Float32Array(batchSize * pixels);
    const view1 = new Float32Array(batchSize * pixels);
    let next: DataCursor = START_CURSOR;
    for (let b = 0; b < batchSize; b++) {
      const item = await this.items.next();
      if (item.done) throw new Error('the training loader ended; it is expected to cycle through epochs forever');
      normalizeInto(view0, b * pixels, item.value.value.views[0]!);
      normalizeInto(view1, b * pixels, item.value.value.views[1]!);
      next = item.value.cursor;
    }
    return { view0, view1, next };
  }

  /** Stop the loader's prefetching. */
  async close(): Promise<void> {
    await this.items.return(undefined);
  }
}
