/** Code version and code diff, read from package.json and git when the checkout has them. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../../cli/env.js';
import type { CodeVersion } from './types.js';

function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, { cwd: projectRoot(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim();
  } catch {
    return null; // no git, not a checkout (a worker image), or an unknown commit
  }
}

export function codeVersion(): CodeVersion {
  const pkg = JSON.parse(readFileSync(join(projectRoot(), 'package.json'), 'utf8')) as { version: string };
  const commit = git(['rev-parse', 'HEAD']);
  const status = commit ? git(['status', '--porcelain', '--untracked-files=no']) : null;
  return { packageVersion: pkg.version, gitCommit: commit, dirty: Boolean(status) };
}

export function describeCodeVersion(v: CodeVersion): string {
  return `${v.packageVersion}${v.gitCommit ? ` (${v.gitCommit.slice(0, 12)}${v.dirty ? ', uncommitted changes' : ''})` : ' (no git commit recorded)'}`;
}

/** Commits and changed files between the baseline's code and now; a sentence when git cannot tell. */
export function codeDiffSince(base: CodeVersion, head: CodeVersion): string {
  if (!base.gitCommit || !head.gitCommit) return `code diff unavailable: ${!base.gitCommit ? 'the baseline' : 'this run'} recorded no git commit (package ${base.packageVersion} → ${head.packageVersion})`;
  if (base.gitCommit === head.gitCommit) return `same commit ${head.gitCommit.slice(0, 12)}${head.dirty ? ' (this run had uncommitted changes)' : ''}`;
  const log = git(['log', '--oneline', '--no-decorate', '-n', '50', `${base.gitCommit}..${head.gitCommit}`]);
  const stat = git(['diff', '--stat', base.gitCommit, head.gitCommit]);
  if (log === null || stat === null) return `code diff unavailable: commits ${base.gitCommit.slice(0, 12)}..${head.gitCommit.slice(0, 12)} are not in this checkout`;
  return `${log || '(no commits: the baseline is ahead)'}\n\n${stat}`;
}
