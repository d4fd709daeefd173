/**
 * The compute engine: torchvision-named models on tfjs (NHWC inside), optimizers with PyTorch
 * semantics, EMA/queues, dense ops, training-state checkpoints and safetensors export.
 * See docs/ENGINE.md.
 */
export { Initializer, ParamStore, ParamScope, uniqueVariableName, type ParamInfo, type ParamLayout, type ParamRole } from './params.js';
export { BatchNorm, Conv2d, LayerNorm, Linear, maxPool2d, shuffleBatch, type Conv2dArgs, type ForwardOptions } from './layers.js';
export { ResNet, RESNET_PRESETS, type ResNetConfig, type ResNetOutput, type ResNetPreset } from './resnet.js';
export { DenseProjectionHead, MlpHead, mocoV2Head, type MlpHeadConfig } from './heads.js';
export { AdamW, LARS, Optimizer, SGD, excludeBiasAndNorm, excludeNothing, type AdamWOptions, type LarsOptions, type ParamFilter, type SgdOptions } from './optim.js';
export { cosineMomentum, multiStepLr, warmupCosineLr, type WarmupCosineOptions } from './schedule.js';
export { clipGradientsByGlobalNorm, disposeGradients, namedGradients } from './grads.js';
export { assertSameLayout, copyWeights, emaUpdate, type EmaBufferMode } from './ema.js';
export { MemoryQueue } from './queue.js';
export {
  encodeTrainingState,
  optimizerComponent,
  paramsComponent,
  peekTrainingState,
  queuesComponent,
  restoreTrainingState,
  TRAINING_STATE_FORMAT,
  type CheckpointComponent,
  type TrainingStateSpec,
  type TrainingStateValues,
} from './checkpoint.js';
export { decodeSafetensors, encodeSafetensors, type SafeTensor } from './safetensors.js';
export { exportStateDict, type ExportOptions } from './export.js';
export { importStateDict, type TorchTensor } from './export.js';
export { FeaturePyramid, type FpnConfig } from './fpn.js';
export { sincosPositionEmbedding2d, VisionTransformer, VIT_PRESETS, type VitConfig, type VitOutput, type VitPreset } from './vit.js';
export { roiAlign, roiAlignPlan, type RoiAlignOptions, type RoiBox } from './ops/roi_align.js';
export { gridSampleBilinear } from './ops/grid_sample.js';
