import cliProgress from 'cli-progress';
import type { Client } from '@temporalio/client';
import { describeRun, type RunStatus } from './runs.js';

/** The step of an activity type that serves one step only; `evaluate` serves three, told apart by its heartbeat's `role`. */
const ACTIVITY_STEP: Record<string, string> = {
  shardDataset: 'shard',
  proposeRegions: 'proposals',
  pretrain: 'pretrain',
  pretrainSupervised: 'pretrain-supervised',
  writeReport: 'report',
};

const CLOSED = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TERMINATED', 'TIMED_OUT', 'CONTINUED_AS_NEW']);

/** Fraction done per pipeline step: finished parts plus the live heartbeat of running ones. */
export function stepFractions(status: RunStatus): Map<string, { fraction: number; label: string }> {
  const out = new Map<string, { fraction: number; label: string }>();
  for (const s of status.progress?.stages ?? []) {
    let live = 0;
    let label: string = s.status;
    for (const a of status.pending) {
      const step = a.heartbeat?.role ?? ACTIVITY_STEP[a.activityType];
      if (step !== s.step) continue;
      live += Math.min(1, Math.max(0, a.heartbeat?.fraction ?? 0));
      const m = a.heartbeat?.metrics;
      const metric = m ? Object.entries(m).slice(0, 3).map(([k, v]) => `${k}=${Number(v).toPrecision(4)}`).join(' ') : '';
      label = [a.heartbeat?.message, metric, a.attempt > 1 ? `attempt ${a.attempt}` : '', a.lastFailure ? `last error: ${a.lastFailure.slice(0, 60)}` : '']
        .filter(Boolean)
        .join(' · ') || 'running';
    }
    const done = s.status === 'done' || s.status === 'cached' || s.status === 'skipped';
    const fraction = done ? 1 : s.parts > 0 ? Math.min(1, (s.partsDone + (s.status === 'running' ? live : 0)) / s.parts) : 0;
    if (s.status === 'cached') label = 'reused from cache';
    if (s.status === 'failed') label = `failed: ${s.error ?? ''}`;
    out.set(s.step, { fraction, label });
  }
  return out;
}

/**
 * Follow a run until it closes. On a terminal: one bar per stage, fed by activity heartbeats.
 * Elsewhere (CI, pipes): one line whenever a stage's state changes.
 */
export async function followRun(client: Client, workflowId: string, options: { intervalMs?: number; signal?: AbortSignal } = {}): Promise<RunStatus> {
  const tty = Boolean(process.stderr.isTTY);
  const bars = tty
    ? new cliProgress.MultiBar(
        { format: ' {step} |{bar}| {percentage}% {label}', barsize: 28, hideCursor: true, clearOnComplete: false, stream: process.stderr, forceRedraw: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  const handles = new Map<string, cliProgress.SingleBar>();
  const lastLines = new Map<string, string>();
  try {
    for (;;) {
      const status = await describeRun(client, workflowId);
      for (const [step, { fraction, label }] of stepFractions(status)) {
        const pct = Math.round(fraction * 100);
        if (bars) {
          let bar = handles.get(step);
          if (!bar) {
            bar = bars.create(100, 0, { step: step.padEnd(17), label });
            handles.set(step, bar);
          }
          bar.update(pct, { step: step.padEnd(17), label: label.slice(0, 70) });
        } else {
          const line = `${step}: ${pct}% ${label}`;
          if (lastLines.get(step) !== line) {
            process.stderr.write(`  ${line}\n`);
            lastLines.set(step, line);
          }
        }
      }
      if (CLOSED.has(status.status)) return status;
      if (options.signal?.aborted) return status;
      await new Promise((r) => setTimeout(r, options.intervalMs ?? 1000));
    }
  } finally {
    bars?.stop();
  }
}
