/**
 * The claim check: does each paper's headline claim over MoCo v2 (a method module's `claims`) hold in
 * direction on our data? Seeds pair the two sides (same init, data order, augmentations, evaluation seed),
 * so the per-seed difference removes the noise they share. Used by the suite report and the zoo benchmark.
 */
import type { Claim } from '../methods/shared/contract.js';
import { isMethodName, methodModule } from '../methods/index.js';
import { meanStd } from './comparison.js';
import type { MemberOutcome } from './types.js';

export interface Paired {
  diffs: number[];
  mean: number;
  std: number;
  /** mean / (std / √n); ±Infinity when every difference is equal and non-zero. */
  t: number;
  /** Seeds where the first side is ahead. */
  positive: number;
}

export function paired(a: number[], b: number[]): Paired {
  const diffs = a.map((x, i) => x - b[i]!);
  const s = meanStd(diffs);
  const t = s.n < 2 ? Number.NaN : s.std > 0 ? s.mean / (s.std / Math.sqrt(s.n)) : s.mean === 0 ? Number.NaN : Math.sign(s.mean) * Infinity;
  return { diffs, mean: s.mean, std: s.std, t, positive: diffs.filter((d) => d > 0).length };
}

/** One-sided 5 % critical values of Student's t, by degrees of freedom (seeds − 1). */
const T_CRIT: Record<number, number> = { 1: 6.314, 2: 2.92, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.86, 9: 1.833 };

export type ClaimVerdict = 'holds' | 'direction holds, not resolved' | 'direction reversed, not resolved' | 'reversed' | 'too few seeds';

/** "holds": ahead in every seed and a paired t past the one-sided 5 % value; "reversed" the mirror image. */
export function claimVerdict(p: Paired): ClaimVerdict {
  const n = p.diffs.length;
  if (n < 2) return 'too few seeds';
  const crit = T_CRIT[n - 1] ?? 1.8;
  if (p.mean > 0) return p.positive === n && p.t >= crit ? 'holds' : 'direction holds, not resolved';
  return p.positive === 0 && p.t <= -crit ? 'reversed' : 'direction reversed, not resolved';
}

export interface ClaimRow extends Claim {
  method: string;
  dataset: string;
  seeds: number[];
  paired: Paired;
  verdict: ClaimVerdict;
}

/** Every claim of a suite's methods whose baseline method is in the suite too, per dataset, over the seeds both finished. */
export function claimCheck(members: MemberOutcome[]): ClaimRow[] {
  const done = members.filter((m) => m.status === 'completed' && m.metrics);
  const rows: ClaimRow[] = [];
  const methods = [...new Set(done.map((m) => m.method))].filter(isMethodName);
  for (const method of methods) {
    for (const claim of methodModule(method).claims ?? []) {
      for (const dataset of [...new Set(done.map((m) => m.dataset))]) {
        const side = (name: string) => new Map(done.filter((m) => m.method === name && m.dataset === dataset).map((m) => [m.seed, m.metrics![claim.metric]]));
        const [ours, theirs] = [side(method), side(claim.over)];
        const seeds = [...ours.keys()].filter((s) => Number.isFinite(ours.get(s)) && Number.isFinite(theirs.get(s))).sort((a, b) => a - b);
        if (seeds.length === 0) continue;
        const p = paired(seeds.map((s) => ours.get(s)!), seeds.map((s) => theirs.get(s)!));
        rows.push({ ...claim, method, dataset, seeds, paired: p, verdict: claimVerdict(p) });
      }
    }
  }
  return rows;
}
