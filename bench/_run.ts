// Bench harness: imports bench/<name>.ts, calls its main(), prints a table, writes the JSON.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BenchRow {
  case: string;
  ours: Record<string, number>;
  reference?: Record<string, number> | null;
  /** reference time / our time: above 1 means we are faster. */
  speedup?: number | null;
}

export interface BenchResult {
  name: string;
  rows: BenchRow[];
  notes?: string[];
  [extra: string]: unknown;
}

export function machine() {
  return { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform}-${process.arch}` };
}

function fmt(v: unknown): string {
  if (typeof v !== 'number') return v === undefined || v === null ? '–' : String(v);
  return Math.abs(v) >= 100 ? v.toFixed(1) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toPrecision(3);
}

export function printTable(result: BenchResult): void {
  const lines = [`# ${result.name}`, ''];
  for (const row of result.rows) {
    const ours = Object.entries(row.ours).map(([k, v]) => `${k}=${fmt(v)}`).join(' ');
    const ref = row.reference ? Object.entries(row.reference).map(([k, v]) => `${k}=${fmt(v)}`).join(' ') : 'n/a';
    lines.push(`${row.case.padEnd(40)} ours: ${ours.padEnd(44)} reference: ${ref.padEnd(44)} speedup: ${fmt(row.speedup)}`);
  }
  for (const n of result.notes ?? []) lines.push(`note: ${n}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

const invokedDirectly = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (invokedDirectly) {
  const [name, ...args] = process.argv.slice(2);
  const root = join(dirname(fileURLToPath(import.meta.url)));
  const mod = (await import(join(root, `${name}.ts`))) as { main: (args: string[]) => Promise<BenchResult> };
  const result = await mod.main(args);
  const out = { ...result, machine: machine(), date: new Date().toISOString() };
  printTable(out);
  mkdirSync(join(root, 'results'), { recursive: true });
  const file = join(root, 'results', `${result.name}.json`); // zoo writes zoo-calibration / zoo-probe by mode
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`wrote ${file}\n`);
}
