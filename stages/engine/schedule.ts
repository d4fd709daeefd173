/**
 * Learning-rate and momentum schedules as pure functions of the step, so a resumed run gets
 * exactly the value the uninterrupted run would have had.
 */
export interface WarmupCosineOptions {
  baseLr: number;
  totalSteps: number;
  /** Linear warm-up from `warmupStartLr` to `baseLr` over this many steps (0 = none). */
  warmupSteps?: number;
  warmupStartLr?: number;
  /** Floor of the cosine (MAE's min_lr); default 0. */
  minLr?: number;
}

/**
 * MAE/MoCo v3 style: lr = start + (base - start) * step / warmup during warm-up, then
 * minLr + (base - minLr) * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))).
 * `step` may be fractional (epochs-as-float works too). Past `totalSteps` it stays at minLr.
 */
export function warmupCosineLr(step: number, o: WarmupCosineOptions): number {
  const warmup = o.warmupSteps ?? 0;
  const minLr = o.minLr ?? 0;
  if (!(o.totalSteps > 0) || warmup < 0 || warmup > o.totalSteps) {
    throw new Error(`warmupCosineLr: need 0 <= warmupSteps (${warmup}) <= totalSteps (${o.totalSteps}), totalSteps > 0`);
  }
  if (step < warmup) {
    const start = o.warmupStartLr ?? 0;
    return start + (o.baseLr - start) * (step / warmup);
  }
  if (o.totalSteps === warmup) return o.baseLr;
  const progress = Math.min(1, (step - warmup) / (o.totalSteps - warmup));
  return minLr + (o.baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** MoCo v1's step schedule: lr = base * gamma^(number of milestones <= step). */
export function multiStepLr(step: number, baseLr: number, milestones: number[], gamma = 0.1): number {
  return baseLr * gamma ** milestones.filter((m) => step >= m).length;
}

/**
 * BYOL's EMA momentum schedule: 1 - (1 - base) * (cos(pi * step / total) + 1) / 2, rising from
 * `base` to 1. MoCo keeps a constant momentum (0.999) instead.
 */
export function cosineMomentum(step: number, baseMomentum: number, totalSteps: number): number {
  const progress = Math.min(1, Math.max(0, step / totalSteps));
  return 1 - (1 - baseMomentum) * (Math.cos(Math.PI * progress) + 1) / 2;
}
