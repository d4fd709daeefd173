// Prebuild the Temporal workflow bundle once at set-up, so a worker starts in about a second
// instead of running webpack on every start (which takes ~10 s on two cores).
import { bundleWorkflowCode } from '@temporalio/worker';
import { writeFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { code } = await bundleWorkflowCode({
  workflowsPath: `${root}dist/workflows/index.js`,
  logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error },
});
await mkdir(`${root}dist`, { recursive: true });
await writeFile(`${root}dist/workflow-bundle.js`, code);
