/**
 * The DETR family's engine pieces (docs/ENGINE.md, "DETR and Deformable DETR"): transformer with object queries,
 * sine position encodings, multi-scale deformable attention, box utilities, the Hungarian matcher and the set
 * criterion. Each is at parity with the official PyTorch code (test/engine/detr.test.ts, test/engine/ms_deform_attn.test.ts).
 */
export { additiveMask, dropout, MultiheadAttention, type AttentionMasks, type DropoutContext } from './attention.js';
export { boxCxcywhToXyxy, boxIou, boxXyxyToCxcywh, generalizedBoxIou, generalizedBoxIouPaired } from './box_ops.js';
export { detrCriterionDefaults, lossBoxes, setCriterion, type DetrOutputs, type DetrPredictions, type SetCriterionConfig, type SetCriterionResult } from './criterion.js';
export { DetrHead, DetrMlp, maskToFeatureSize, type DetrHeadConfig, type DetrHeadOutput } from './detr.js';
export { DETR_MATCHER_COSTS, hungarianMatcher, matcherCostMatrix, validateTargets, type DetrTarget, type MatchIndices, type MatcherCosts } from './matcher.js';
export { MSDeformAttn, msDeformAttnCore, type MSDeformAttnConfig, type SpatialShapes } from './ms_deform_attn.js';
export { positionEmbeddingSine, type PositionEmbeddingSineOptions } from './position_encoding.js';
export {
  DETR_TRANSFORMER_DEFAULTS,
  DetrTransformer,
  TransformerDecoder,
  TransformerDecoderLayer,
  TransformerEncoder,
  TransformerEncoderLayer,
  type DecoderMasks,
  type DetrTransformerConfig,
  type DetrTransformerOutput,
  type EncoderMasks,
} from './transformer.js';
export {
  DEFORMABLE_TRANSFORMER_DEFAULTS,
  DeformableDetr,
  DeformableTransformer,
  DeformableTransformerDecoderLayer,
  DeformableTransformerEncoderLayer,
  encoderReferencePoints,
  GroupNorm,
  inverseSigmoid,
  validRatios,
  type DeformableDetrConfig,
  type DeformableDetrOutput,
  type DeformableTransformerConfig,
  type DeformableTransformerOutput,
} from './deformable.js';
export {
  deformableCriterionDefaults,
  deformableSetCriterion,
  focalHungarianMatcher,
  focalMatcherCostMatrix,
  sigmoidFocalLoss,
  type DeformableCriterionConfig,
  type DeformableCriterionResult,
} from './deformable_criterion.js';
