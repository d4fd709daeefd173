import { describe, expect, it } from 'vitest';
import { claimCheck, claimVerdict, paired } from '../../stages/regression/claims.js';
import { renderRegressionHtml } from '../../stages/regression/report.js';
import type { MemberOutcome } from '../../stages/regression/types.js';

const member = (method: string, seed: number, semseg: number): MemberOutcome => ({
  id: `${method}-synthetic-small-s${seed}`,
  series: `${method}@synthetic-small`,
  method,
  dataset: 'synthetic-small',
  seed,
  configHash: 'h',
  workflowId: `w-${method}-${seed}`,
  status: 'completed',
  metrics: { 'semseg.mIoU': semseg, 'unsup-seg.mIoU': 0.2 },
});

describe('claim check', () => {
  it('pairs by seed: a small difference shared by every seed holds although the seeds spread widely', () => {
    const p = paired([0.30, 0.22, 0.41], [0.28, 0.20, 0.38]);
    expect(p.diffs.map((d) => +d.toFixed(3))).toEqual([0.02, 0.02, 0.03]);
    expect(p.positive).toBe(3);
    expect(claimVerdict(p)).toBe('holds');
    expect(claimVerdict(paired([0.3, 0.2, 0.4], [0.29, 0.21, 0.35]))).toBe('direction holds, not resolved');
    expect(claimVerdict(paired([0.2, 0.1, 0.3], [0.3, 0.21, 0.39]))).toBe('reversed');
    expect(claimVerdict(paired([0.2], [0.1]))).toBe('too few seeds');
  });

  it('checks each registered claim against the suite members of its baseline method, over common seeds', () => {
    const members = [member('mocov2', 0, 0.2), member('mocov2', 1, 0.25), member('mocov2', 2, 0.22), member('densecl', 0, 0.23), member('densecl', 1, 0.29), member('densecl', 2, 0.24), { ...member('densecl', 3, 0.9), status: 'failed' as const }];
    const rows = claimCheck(members);
    const semseg = rows.find((r) => r.method === 'densecl' && r.metric === 'semseg.mIoU')!;
    expect(semseg.over).toBe('mocov2');
    expect(semseg.seeds).toEqual([0, 1, 2]);
    expect(semseg.verdict).toBe('holds');
    // A suite without the baseline method has nothing to check.
    expect(claimCheck(members.filter((m) => m.method === 'densecl'))).toEqual([]);
  });

  it('appears in the suite report', () => {
    const members = [0, 1, 2].flatMap((s) => [member('mocov2', s, 0.2 + s / 100), member('densecl', s, 0.25 + s / 100)]);
    const html = renderRegressionHtml({
      suite: 's',
      suiteHash: 'h',
      workflowId: 'w',
      startedAt: '2026-01-01T02:30:00.000Z',
      verdict: 'passed',
      codeVersion: { packageVersion: '0.1.0', gitCommit: 'a'.repeat(40), dirty: false },
      ui: { url: 'http://localhost:8233', namespace: 'default' },
      members,
      comparisons: [],
      baseline: null,
      configChanges: [],
      codeDiff: '',
      trend: [],
      warnings: [],
    });
    expect(html).toContain('<table id="claim-check">');
    expect(html).toMatch(/densecl<\/td><td>synthetic-small<\/td><td>semseg\.mIoU &gt; mocov2/);
  });
});
