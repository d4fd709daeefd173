/**
 * Assembles stages/proposals/slic-kernel-wasm.ts's WebAssembly module and writes it into
 * stages/proposals/slic-kernel.ts (KERNEL_BASE64). Run after editing slic-kernel-wasm.ts:
 *
 *   npx tsx scripts/slic-kernel.ts
 *
 * test/proposals/slic-kernel.test.ts fails while the two disagree.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernelBytes } from '../stages/proposals/slic-kernel-wasm.js';

const file = join(dirname(fileURLToPath(import.meta.url)), '../stages/proposals/slic-kernel.ts');
const bytes = kernelBytes();
const lines = Buffer.from(bytes).toString('base64').match(/.{1,96}/g)!.map((line) => `  '${line}'`);
const source = readFileSync(file, 'utf8');
const next = source.replace(/export const KERNEL_BASE64 =[^;]*;/, `export const KERNEL_BASE64 =\n${lines.join(' +\n')};`);
if (next === source) {
  console.log(`KERNEL_BASE64 already holds the module (${bytes.length} bytes)`);
} else {
  writeFileSync(file, next);
  console.log(`wrote the module (${bytes.length} bytes) into ${file}`);
}
