/**
 * The data stage (issue #4): the built-in shapes-clutter benchmark, readers for COCO / VOC /
 * ImageFolder, WebDataset sharding with a dataset manifest, the training reader, and the
 * augmentations with tracked view geometry that the dense pretraining methods consume.
 */
export { shardConfigSchema, sourceSchema, type ShardConfig, type ShardConfigInput, type SourceConfig } from './config.js';
export { shardStage, shuffledOrder, shardKeyOf, type ShardInputs, type ShardResult } from './shard.js';
export { DATASET_MANIFEST_SCHEMA, type DatasetManifest, type SplitManifest, type SplitStats, type ShardRecord, type SkippedItem } from './manifest.js';
export { decodeSample, parseAnnotation, paintSemantic, sampleAnnotationSchema, type DecodedSample, type SampleAnnotation, type SampleObject } from './sample.js';
export { decodeImage, encodeImage, decodeGrayPng, encodeGrayPng, toFloat01, toUint8, sniffImageFormat, type RgbImage, type RgbU8, type RgbF32, type ImageFormat } from './image.js';
export { encodeRle, decodeRle, maskArea, maskBox, polygonsToMask, type CocoRle } from './masks.js';
export { generateSyntheticImage, semanticMapOf, SYNTHETIC_CLASS_NAMES, SYNTHETIC_SPECS, SYNTHETIC_SPLITS, type SyntheticSize, type SyntheticSpec, type SyntheticImage } from './synthetic.js';
export { writeSyntheticCoco } from './synthetic-coco.js';
export { openSource, sourceFingerprint, cocoSource, vocSource, imageFolderSource, syntheticSource, parseVocXml } from './sources/index.js';
export { createTrainLoader, planEpoch, viewsTransform, type TrainLoader, type TrainLoaderOptions, type LoaderCursor, type LoaderItem, type SampleTransform, type EpochPlan, type SampleRef } from './loader.js';
export {
  augmentView,
  augmentViews,
  sampleResizedCrop,
  resizedCrop,
  hflipInPlace,
  adjustBrightness,
  adjustContrast,
  adjustSaturation,
  adjustHue,
  grayscaleInPlace,
  gaussianBlurInPlace,
  solarizeInPlace,
  sampleRng,
  VIEW_PRESETS,
  type ViewSpec,
  type AugmentedView,
  type AppliedOps,
  type CropParams,
} from './augment.js';
export { resampleRegion, type Interpolation } from './resample.js';
export * from './geometry.js';
