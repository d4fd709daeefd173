/**
 * Two-view batches from WebDataset shards, in an order that is a pure function of (seed, cursor), so a
 * resumed run sees exactly the batches the uninterrupted run would have seen.
 *
 * Order: each epoch visits the shards in a seeded random order and the samples of each shard in a seeded
 * random order; batches run on across shard and epoch boundaries. The randomness of sample i's two views
 * comes from its own stream Rng(seed, epoch, shard, offset), independent of batching and of resumes.
 */
import { BadInputError } from '../../core/errors.js';
import { Rng } from '../../core/rng.js';
import type { ArtifactStore } from '../../core/store/index.js';
import { readShardFromStore } from '../../core/webdataset.js';
import { decodeImage, type RgbU8 } from '../data/image.js';
import { mocoV2View, type ViewOptions } from './views.js';

/** Where the next batch starts: epoch, position in that epoch's shard order, position in that shard's sample order. */
export interface DataCursor {
  epoch: number;
  shard: number;
  offset: number;
}

export const START_CURSOR: DataCursor = { epoch: 0, shard: 0, offset: 0 };

export interface ViewBatch {
  /** [B, size, size, 3] HWC float32, flattened. */
  view0: Float32Array;
  view1: Float32Array;
  /** The cursor after this batch (what a checkpoint taken after this step stores). */
  next: DataCursor;
}

const IMAGE_EXTENSIONS = ['png', 'jpg', 'jpeg'];

export class ViewBatchFeeder {
  private cursor: DataCursor;
  private loaded: { epoch: number; shard: number; images: RgbU8[] } | null = null;

  constructor(
    private readonly store: ArtifactStore,
    private readonly shardKeys: readonly string[],
    private readonly options: ViewOptions & { batchSize: number; seed: number },
    cursor: DataCursor = START_CURSOR,
  ) {
    if (shardKeys.length === 0) throw new BadInputError('the dataset split has no shards', 'dataset.splits');
    this.cursor = { ...cursor };
  }

  /** The shard visited at position `position` of `epoch`. */
  private shardAt(epoch: number, position: number): string {
    const order = Rng.fromSeed('pretrain-shard-order', this.options.seed, epoch).shuffle(this.shardKeys.map((_, i) => i));
    return this.shardKeys[order[position]!]!;
  }

  private async loadShard(epoch: number, position: number): Promise<RgbU8[]> {
    if (this.loaded && this.loaded.epoch === epoch && this.loaded.shard === position) return this.loaded.images;
    const key = this.shardAt(epoch, position);
    const images: RgbU8[] = [];
    for await (const sample of readShardFromStore(this.store, key)) {
      const ext = IMAGE_EXTENSIONS.find((e) => sample.files[e]);
      if (!ext) throw new BadInputError(`sample '${sample.key}' has no image member (.png/.jpg)`, key);
      images.push(await decodeImage(sample.files[ext]!, `${key}:${sample.key}.${ext}`));
    }
    Rng.fromSeed('pretrain-sample-order', this.options.seed, epoch, position).shuffle(images);
    this.loaded = { epoch, shard: position, images };
    return images;
  }

  async nextBatch(): Promise<ViewBatch> {
    const { batchSize, size } = this.options;
    const pixels = size * size * 3;
    const view0 = new Float32Array(batchSize * pixels);
    const view1 = new Float32Array(batchSize * pixels);
    let filled = 0;
    let emptyShardsInARow = 0;
    while (filled < batchSize) {
      const { epoch, shard, offset } = this.cursor;
      const images = await this.loadShard(epoch, shard);
      if (offset < images.length) {
        const rng = Rng.fromSeed('pretrain-views', this.options.seed, epoch, shard, offset);
        view0.set(mocoV2View(images[offset]!, this.options, rng), filled * pixels);
        view1.set(mocoV2View(images[offset]!, this.options, rng), filled * pixels);
        filled += 1;
        emptyShardsInARow = 0;
        this.cursor = { epoch, shard, offset: offset + 1 };
        continue;
      }
      if (images.length === 0 && ++emptyShardsInARow > this.shardKeys.length) {
        throw new BadInputError('every shard of the split is empty', 'dataset.splits');
      }
      this.cursor = shard + 1 < this.shardKeys.length ? { epoch, shard: shard + 1, offset: 0 } : { epoch: epoch + 1, shard: 0, offset: 0 };
    }
    return { view0, view1, next: { ...this.cursor } };
  }
}
