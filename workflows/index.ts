export { reproductionWorkflow, progressQuery } from './reproduction.js';
export { suiteWorkflow } from './suite.js';
