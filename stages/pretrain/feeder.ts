/**
 * Batches for a method, exactly as it declared them (stages/methods/shared/contract.ts `Consumes`): one
 * tensor per view with that view's augmentation recipe, every view's crop geometry, and when declared
 * the images' proposals mapped into each view and their class labels. Built on the data stage's
 * training loader (seeded shard order and shuffle buffer, sha256-checked shards, per-sample
 * augmentation randomness, exact resume from a cursor); pixels get torchvision's ToTensor +
 * Normalize(ImageNet mean/std). Batches run on across epoch boundaries.
 */
import { BadInputError } from '../../core/errors.js';
import { getJson, type ArtifactStore } from '../../core/store/index.js';
import { readShardFromStore } from '../../core/webdataset.js';
import { createTrainLoader, viewsTransform, type LoaderCursor, type LoaderItem, type TrainLoader } from '../data/loader.js';
import { sampleResizedCrop, type AugmentedView, type CropDraw, type CropParams, type ViewSpec } from '../data/augment.js';
import { boxesIntoView, type Box, type ViewGeometry } from '../data/geometry.js';
import type { DecodedSample } from '../data/sample.js';
import type { ProposalNeeds, ViewProposals } from '../methods/shared/contract.js';
import { decodeLabelPng } from '../proposals/image-io.js';
import type { ProposalsFile, SampleProposals } from '../proposals/stage.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

export type DataCursor = LoaderCursor;
export const START_CURSOR: DataCursor = { epoch: 0, position: 0 };

/** One batch on the host, before it becomes tensors. */
export interface HostBatch {
  /** One [B, h, w, 3] HWC float32 array per view, ImageNet-normalised, flattened. */
  views: Float32Array[];
  /** [width, height] of each view. */
  viewSizes: [number, number][];
  /** geometry[v][b]. */
  geometry: ViewGeometry[][];
  /** proposals[v][b], when asked for. */
  proposals?: ViewProposals[][];
  /** Multi-hot [B, classes], when asked for. */
  labels?: Float32Array;
  /** The cursor after this batch (what a checkpoint taken after this step stores). */
  next: DataCursor;
}

/** One image's proposals as the proposal stage stored them, with its region label map when kept. */
export interface ImageProposals {
  record: SampleProposals;
  regions?: { width: number; height: number; labels: Int32Array };
}

export interface FeederOptions {
  store: ArtifactStore;
  /** ShardResult.datasetManifestKey. */
  datasetManifestKey: string;
  split: string;
  seed: number;
  batchSize: number;
  /** One recipe per view. */
  views: ViewSpec[];
  sharedFlip?: boolean;
  /** Proposals by sample key, and how the method keeps them. */
  proposals?: { byKey: Map<string, ImageProposals>; needs: ProposalNeeds };
  /** Number of classes, when the method reads labels. */
  numClasses?: number;
  signal?: AbortSignal;
}

type Item = { sample: DecodedSample; views: AugmentedView[] };

/** Write one [0, 1] view into `out` at element `offset`, normalised channel by channel. */
function normalizeInto(out: Float32Array, offset: number, view: AugmentedView): void {
  const px = view.image.data;
  for (let i = 0; i < px.length; i++) out[offset + i] = (px[i]! - IMAGENET_MEAN[i % 3]!) / IMAGENET_STD[i % 3]!;
}

/** Classes present in a sample, as a multi-hot row (a single-label sample's label is its one positive). */
export function multiHotTarget(sample: DecodedSample, numClasses: number): Float32Array {
  const row = new Float32Array(numClasses);
  const labels = sample.labels.length > 0 ? Array.from(sample.labels) : sample.imageLabel !== undefined ? [sample.imageLabel] : [];
  for (const label of labels) {
    if (!(label >= 0 && label < numClasses)) throw new BadInputError(`label ${label} outside the dataset's ${numClasses} classes`, sample.key);
    row[label] = 1;
  }
  return row;
}

/** Stored boxes rescaled from the size they were computed at to the decoded image. */
export function boxesInImage(p: SampleProposals, image: { width: number; height: number }): Box[] {
  const sx = image.width / p.width, sy = image.height / p.height;
  return p.boxes.map((b): Box => [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]);
}

/**
 * An image's proposal boxes (in decoded-image pixels, `boxesInImage`) as seen in one view: mapped through the view's crop, flip and resize, clipped to the view, and kept when
 * enough of the box survived and both sides are long enough (`needs.boxes`), in stored order.
 */
export function proposalBoxesInView(original: readonly Box[], g: ViewGeometry, rules: NonNullable<ProposalNeeds['boxes']>): Box[] {
  const kept: Box[] = [];
  for (const { box, visibleFraction } of boxesIntoView(g, original)) {
    if (kept.length >= rules.maxPerView) break;
    if (!box || visibleFraction < rules.minVisible) continue;
    if (box[2] - box[0] < rules.minSize || box[3] - box[1] < rules.minSize) continue;
    kept.push(box);
  }
  return kept;
}

/**
 * `ProposalNeeds.cropRetry` (CCOP's `apply_aug`): draw up to `maxTries` crops; the first that keeps at least
 * min(`minBoxes`, #boxes) boxes more than `minVisible` inside it wins, else the one that kept the most (the
 * later on ties, as `n >= current_max`). A box's kept fraction: its area clipped to the crop over its area.
 */
export function cropWithRetry(boxes: readonly Box[], rule: NonNullable<ProposalNeeds['cropRetry']>): CropDraw {
  const need = Math.min(boxes.length, rule.minBoxes);
  const kept = (c: CropParams) => {
    let n = 0;
    for (const [x0, y0, x1, y1] of boxes) {
      const area = (x1 - x0) * (y1 - y0);
      const w = Math.min(x1, c.j + c.w) - Math.max(x0, c.j), h = Math.min(y1, c.i + c.h) - Math.max(y0, c.i);
      if (area > 0 && w > 0 && h > 0 && (w * h) / area > rule.minVisible) n++;
    }
    return n;
  };
  return (rng, width, height, scale, ratio) => {
    let best: CropParams | null = null;
    let most = 0;
    for (let t = 0; t < rule.maxTries; t++) {
      const crop = sampleResizedCrop(rng, width, height, scale, ratio);
      const n = kept(crop);
      if (n >= need) return crop;
      if (n >= most) [best, most] = [crop, n];
    }
    return best ?? sampleResizedCrop(rng, width, height, scale, ratio);
  };
}

/** A region label map resampled into a view by nearest neighbour at each view pixel's centre (-1 outside). */
export function regionsInView(regions: { width: number; height: number; labels: Int32Array }, image: { width: number; height: number }, g: ViewGeometry): Int32Array {
  const out = new Int32Array(g.width * g.height).fill(-1);
  const cw = g.crop[2] - g.crop[0], ch = g.crop[3] - g.crop[1];
  const rx = regions.width / image.width, ry = regions.height / image.height;
  for (let y = 0; y < g.height; y++) {
    const Y = g.crop[1] + ((y + 0.5) * ch) / g.height; // original pixel-edge frame
    const r = Math.floor(Y * ry);
    if (r < 0 || r >= regions.height) continue;
    for (let x = 0; x < g.width; x++) {
      const u = g.flipped ? g.width - (x + 0.5) : x + 0.5;
      const c = Math.floor((g.crop[0] + (u * cw) / g.width) * rx);
      if (c >= 0 && c < regions.width) out[y * g.width + x] = regions.labels[r * regions.width + c]!;
    }
  }
  return out;
}

/**
 * Load the proposal stage's outputs for the shards of a split into one map by sample key; label maps
 * too when `withRegions`. A sample without proposals is an error when it is met, naming the key.
 */
export async function loadProposals(store: ArtifactStore, results: { proposalsKey: string; segmentsKey?: string }[], withRegions: boolean): Promise<Map<string, ImageProposals>> {
  const byKey = new Map<string, ImageProposals>();
  for (const result of results) {
    const file = await getJson<ProposalsFile>(store, result.proposalsKey);
    if (file.schema !== 'densepipe.proposals/v1') throw new BadInputError(`unexpected schema ${JSON.stringify(file.schema)}`, result.proposalsKey);
    for (const record of file.samples) byKey.set(record.key, { record });
    if (!withRegions) continue;
    if (!result.segmentsKey) throw new BadInputError('these proposals kept no region label maps (use a preset with segments, e.g. r2o)', result.proposalsKey);
    for await (const sample of readShardFromStore(store, result.segmentsKey)) {
      const png = sample.files['seg.png'];
      const entry = byKey.get(sample.key);
      if (png && entry) entry.regions = await decodeLabelPng(png);
    }
  }
  return byKey;
}

/** Per sample, the crop draw its method's `cropRetry` asks for (none: the plain draw). */
function cropDrawFor(proposals: FeederOptions['proposals']): ((sample: DecodedSample) => CropDraw | undefined) | undefined {
  const rule = proposals?.needs.cropRetry;
  if (!proposals || !rule) return undefined;
  return (sample) => {
    const found = proposals.byKey.get(sample.key);
    return found ? cropWithRetry(boxesInImage(found.record, sample.image), rule) : undefined; // a missing sample fails in nextBatch, by name
  };
}

export class MethodBatchFeeder {
  private constructor(
    private readonly options: FeederOptions,
    readonly loader: TrainLoader<Item>,
    private readonly items: AsyncGenerator<LoaderItem<Item>>,
  ) {}

  static async open(options: FeederOptions, cursor: DataCursor = START_CURSOR): Promise<MethodBatchFeeder> {
    if (options.views.length === 0) throw new Error('MethodBatchFeeder: a method must consume at least one view');
    const loader = await createTrainLoader<Item>({
      store: options.store,
      dataset: options.datasetManifestKey,
      split: options.split,
      seed: options.seed,
      transform: viewsTransform(options.views, { sharedFlip: options.sharedFlip, drawCrop: cropDrawFor(options.proposals) }),
      signal: options.signal,
    });
    return new MethodBatchFeeder(options, loader, loader.iterate(cursor));
  }

  async nextBatch(): Promise<HostBatch> {
    const { batchSize, views: specs, proposals, numClasses } = this.options;
    const viewSizes = specs.map((s): [number, number] => [s.size, s.height ?? s.size]);
    const pixels = viewSizes.map(([w, h]) => w * h * 3);
    const views = pixels.map((p) => new Float32Array(batchSize * p));
    const geometry: ViewGeometry[][] = specs.map(() => []);
    const viewProposals: ViewProposals[][] | undefined = proposals ? specs.map(() => []) : undefined;
    const labels = numClasses !== undefined ? new Float32Array(batchSize * numClasses) : undefined;
    let next: DataCursor = START_CURSOR;
    for (let b = 0; b < batchSize; b++) {
      const item = await this.items.next();
      if (item.done) throw new Error('the training loader ended; it is expected to cycle through epochs forever');
      const { sample, views: augmented } = item.value.value;
      const found = proposals?.byKey.get(sample.key);
      if (proposals && !found) throw new BadInputError(`no proposals for sample '${sample.key}' (were they computed on this dataset?)`, 'inputs.proposals');
      const original = found ? boxesInImage(found.record, sample.image) : [];
      augmented.forEach((view, v) => {
        normalizeInto(views[v]!, b * pixels[v]!, view);
        geometry[v]!.push(view.geometry);
        if (viewProposals && found) {
          const rules = proposals!.needs.boxes ?? { minVisible: 0, minSize: 0, maxPerView: Number.POSITIVE_INFINITY };
          const entry: ViewProposals = { boxes: proposalBoxesInView(original, view.geometry, rules), original };
          if (proposals!.needs.kind === 'regions') {
            if (!found.regions) throw new BadInputError(`no region label map for sample '${sample.key}'`, 'inputs.proposals');
            entry.regions = regionsInView(found.regions, sample.image, view.geometry);
          }
          viewProposals[v]!.push(entry);
        }
      });
      if (labels && numClasses !== undefined) labels.set(multiHotTarget(sample, numClasses), b * numClasses);
      next = item.value.cursor;
    }
    return { views, viewSizes, geometry, ...(viewProposals ? { proposals: viewProposals } : {}), ...(labels ? { labels } : {}), next };
  }

  /** Stop the loader's prefetching. */
  async close(): Promise<void> {
    await this.items.return(undefined);
  }
}
