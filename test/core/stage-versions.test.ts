// A stage whose code changed while its `version` did not would let re-runs reuse stale outputs.
// scripts/stage-code.ts explains the check and how to answer it.
import { describe, expect, it } from 'vitest';
import { compareWithRecord, currentStageCode, fingerprint, moduleClosure, readRecord, type StageCode } from '../../scripts/stage-code.js';

describe('stage code versions', () => {
  it('every stage matches stages/code-versions.json (bump `version` or re-record after a code change)', async () => {
    const problems = compareWithRecord(await currentStageCode(), readRecord());
    expect(problems, problems.join('\n')).toEqual([]);
  }, 60_000);

  it('reaches the files a stage imports and ignores artifact transport', () => {
    const files = moduleClosure('stages/data/shard.ts');
    expect(files).toContain('stages/data/synthetic.ts'); // imported through sources/
    expect(files).toContain('core/rng.ts');
    expect(files.some((f) => f.startsWith('core/store/'))).toBe(false);
  });

  it('flags a code change without a version bump, and a bump that was not recorded', () => {
    const files = moduleClosure('stages/data/shard.ts');
    const recorded: Record<string, StageCode> = { 'data-shard': { version: '1', fingerprint: fingerprint(files), files } };
    expect(compareWithRecord({ 'data-shard': { version: '1', fingerprint: 'changed', files } }, recorded)[0]).toMatch(/code changed since version '1'.*bump `version` in stages\/data\/shard\.ts/);
    expect(compareWithRecord({ 'data-shard': { version: '2', fingerprint: 'changed', files } }, recorded)[0]).toMatch(/version '1' -> '2' is not recorded/);
    expect(compareWithRecord(recorded, recorded)).toEqual([]);
  });
});
