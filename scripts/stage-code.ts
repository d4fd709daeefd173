// Guards the content-addressed cache against a forgotten `version` bump.
//
// A stage's output key hashes its name, its hand-written `version`, its config and its inputs, not
// its code (as Dagster's code_version and Flyte's cache_version do: a code hash would throw away
// every cached output on a comment or a refactor). The risk of that choice is a code change that
// alters outputs while `version` stays put: re-runs would then silently reuse stale artifacts.
//
// This script fingerprints each stage's code: every repository file its entry module reaches through
// relative imports, re-printed by TypeScript's printer so comments and formatting do not count. The
// fingerprints are recorded with the versions in stages/code-versions.json, and test/core/
// stage-versions.test.ts fails when the code no longer matches the record. The fix is a conscious
// choice, visible in review as a one-line diff of that file:
//   - the change can alter what the stage writes: bump the stage's `version`, then record;
//   - it cannot (refactor, speed, logging): record without bumping.
//
//   npx tsx scripts/stage-code.ts            # print each stage's version, fingerprint and status
//   npx tsx scripts/stage-code.ts --record   # rewrite stages/code-versions.json
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const RECORD_PATH = join(ROOT, 'stages', 'code-versions.json');

/** Artifact transport (S3, file): it moves the bytes a stage produces and cannot change them, so editing it needs no re-record. */
const TRANSPORT_ONLY = join('core', 'store') + '/';

/** Stage name -> the module that defines it (its `Stage` object). */
export const STAGE_ENTRIES: Record<string, string> = {
  'data-shard': 'stages/data/shard.ts',
  proposals: 'stages/proposals/stage.ts',
  pretrain: 'stages/pretrain/index.ts',
  'pretrain-supervised': 'stages/pretrain/supervised.ts',
  evaluate: 'stages/downstream/index.ts',
};

export interface StageCode {
  version: string;
  /** sha256 over every file in `files`, re-printed without comments, in path order. */
  fingerprint: string;
  files: string[];
}

const printer = ts.createPrinter({ removeComments: true });

/** The file re-printed from its syntax tree without comments: edits to comments or formatting leave this unchanged. */
function normalizedSource(path: string): string {
  return printer.printFile(ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, false, ts.ScriptKind.TS));
}

/** The entry file and every repository .ts file it reaches through relative imports (static, dynamic, `export from`). */
export function moduleClosure(entry: string): string[] {
  const seen = new Set<string>();
  const queue = [resolve(ROOT, entry)];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    for (const { fileName } of info.importedFiles) {
      if (!fileName.startsWith('.')) continue; // packages are pinned by package-lock.json
      const target = resolve(dirname(file), fileName.replace(/\.js$/, '.ts'));
      if (!existsSync(target)) throw new Error(`${relative(ROOT, file)}: import '${fileName}' resolves to no .ts file`);
      if (relative(ROOT, target).startsWith(TRANSPORT_ONLY)) continue;
      queue.push(target);
    }
  }
  return [...seen].map((f) => relative(ROOT, f)).sort();
}

export function fingerprint(files: string[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f}\n${normalizedSource(join(ROOT, f))}\n`);
  return h.digest('hex');
}

/** The current code of every stage, with the `version` its module declares. */
export async function currentStageCode(): Promise<Record<string, StageCode>> {
  const out: Record<string, StageCode> = {};
  for (const [name, entry] of Object.entries(STAGE_ENTRIES)) {
    const mod = (await import(join(ROOT, entry))) as Record<string, unknown>;
    const stage = Object.values(mod).find((v): v is { name: string; version: string } => typeof v === 'object' && v !== null && (v as { name?: unknown }).name === name && typeof (v as { run?: unknown }).run === 'function');
    if (!stage) throw new Error(`${entry} exports no stage named '${name}' (STAGE_ENTRIES in scripts/stage-code.ts is out of date)`);
    const files = moduleClosure(entry);
    out[name] = { version: stage.version, fingerprint: fingerprint(files), files };
  }
  return out;
}

export function readRecord(): Record<string, StageCode> {
  return existsSync(RECORD_PATH) ? (JSON.parse(readFileSync(RECORD_PATH, 'utf8')) as Record<string, StageCode>) : {};
}

/** Human-readable problems, one per stage whose code or version no longer matches the record. */
export function compareWithRecord(current: Record<string, StageCode>, recorded: Record<string, StageCode>): string[] {
  const problems: string[] = [];
  for (const [name, now] of Object.entries(current)) {
    const then = recorded[name];
    if (!then) {
      problems.push(`stage '${name}' has no entry in stages/code-versions.json`);
      continue;
    }
    if (then.fingerprint === now.fingerprint && then.version === now.version) continue;
    const added = now.files.filter((f) => !then.files.includes(f));
    const removed = then.files.filter((f) => !now.files.includes(f));
    const fileNote = [added.length ? `files added: ${added.join(', ')}` : '', removed.length ? `files removed: ${removed.join(', ')}` : ''].filter(Boolean).join('; ');
    if (then.version === now.version) {
      problems.push(
        `stage '${name}': its code changed since version '${now.version}' was recorded${fileNote ? ` (${fileNote})` : ''}. ` +
          `If the change can alter what the stage writes, bump \`version\` in ${STAGE_ENTRIES[name]}; either way, then run \`npx tsx scripts/stage-code.ts --record\`.`,
      );
    } else {
      problems.push(`stage '${name}': version '${then.version}' -> '${now.version}' is not recorded yet: run \`npx tsx scripts/stage-code.ts --record\`.`);
    }
  }
  for (const name of Object.keys(recorded)) if (!(name in current)) problems.push(`stages/code-versions.json records '${name}', which is no longer a stage`);
  return problems;
}

async function main(): Promise<void> {
  const current = await currentStageCode();
  if (process.argv.includes('--record')) {
    writeFileSync(RECORD_PATH, `${JSON.stringify(current, null, 2)}\n`);
    process.stdout.write(`recorded ${Object.keys(current).length} stages in ${relative(ROOT, RECORD_PATH)}\n`);
    return;
  }
  const problems = compareWithRecord(current, readRecord());
  for (const [name, c] of Object.entries(current)) process.stdout.write(`${name.padEnd(20)} version ${c.version.padEnd(4)} ${c.fingerprint.slice(0, 12)}  ${c.files.length} files\n`);
  for (const p of problems) process.stdout.write(`\n${p}\n`);
  process.exitCode = problems.length > 0 ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
