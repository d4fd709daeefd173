#!/usr/bin/env node
// `npm run bench -- NAME [args]`: runs bench/NAME.ts, prints its table and writes
// bench/results/NAME.json (our figures, the reference measured in the same run, speedup, machine).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [name, ...rest] = process.argv.slice(2);
const available = readdirSync(join(root, 'bench')).filter((f) => f.endsWith('.ts') && !f.startsWith('_')).map((f) => f.slice(0, -3));
if (!name || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench -- NAME\navailable: ${available.join(', ')}\n`);
  process.exit(name ? 2 : 0);
}
const tsx = join(root, 'node_modules', '.bin', 'tsx');
const res = spawnSync(tsx, [join(root, 'bench', '_run.ts'), name, ...rest], { stdio: 'inherit', cwd: root });
process.exit(res.status ?? 1);
