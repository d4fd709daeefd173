/**
 * Writes docs/methods/README.md from the method registry. Run after adding or changing a method:
 *   npx tsx scripts/methods-index.ts
 */
import { writeFileSync } from 'node:fs';
import { methodsIndexMarkdown } from '../stages/methods/shared/describe.js';

const path = new URL('../docs/methods/README.md', import.meta.url);
writeFileSync(path, methodsIndexMarkdown());
process.stdout.write(`wrote ${path.pathname}\n`);
