/** FCOS-style object detection for the evaluation stage (issue #6 item 5); see docs/downstream.md. */
export { decodeLtrb, encodeLtrb, centerness, iouXyxy, boxArea, toXywh, type Xyxy } from './boxes.js';
export { pyramidLevels, locationGrid, type PyramidLevel, type LocationGrid } from './points.js';
export { assignTargets, type GroundTruthBoxes, type LocationTargets, type AssignOptions } from './targets.js';
export { FcosHead, type FcosHeadConfig, type FcosOutput } from './head.js';
export { bceWithLogits, sigmoidFocalLoss, giouLossLtrb, fcosLosses, type BatchTargets, type FcosLosses, type FocalOptions } from './loss.js';
export { nms, classwiseNms, postprocessImage, type Detection, type PostprocessOptions } from './postprocess.js';
export { buildDetector, disposeDetector, trainDetector, detect, detectionStages, type Detector, type DetectorOptions, type DetectionSample, type MaskBranchOptions } from './train.js';
export { scoreDetections, scoreMasks, type DetectionScores, type ScoredImage } from './evaluate.js';
export { detectionConfigSchema, type DetectionConfig } from './config.js';
export { runDetectionTask, type DetectionTaskInput, type DetectionTaskOutcome } from './task.js';
export { MaskHead, maskLoss, type MaskHeadConfig } from './mask-head.js';
export { maskTarget, pasteMask } from './masks.js';
