export { reproductionWorkflow, progressQuery } from './reproduction.js';
