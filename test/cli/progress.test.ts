import { describe, expect, it } from 'vitest';
import { stepFractions } from '../../cli/progress.js';
import type { PendingActivityView, RunStatus } from '../../cli/runs.js';
import type { StageProgress } from '../../workflows/types.js';

const stage = (step: string, status: StageProgress['status'], parts = 1, partsDone = 0): StageProgress => ({ step, status, parts, partsDone, cachedParts: 0, computeSeconds: 0 });
const evaluating = (role: string | undefined, fraction: number, message: string): PendingActivityView => ({
  activityType: 'evaluate',
  attempt: 1,
  state: 'STARTED',
  ...(role ? { heartbeat: { stage: 'evaluate', role, fraction, message } } : {}),
});

describe('live progress view', () => {
  it("draws each evaluation's heartbeat on its own step's bar (one activity type serves three steps)", () => {
    const status: RunStatus = {
      workflowId: 'w',
      runId: 'r',
      status: 'RUNNING',
      pending: [
        evaluating('evaluate-baseline', 0.5, 'semseg epoch 3/6'),
        evaluating('evaluate-supervised', 0.25, 'knn'),
        { activityType: 'pretrainSupervised', attempt: 2, state: 'STARTED', heartbeat: { stage: 'pretrain-supervised', role: 'pretrain-supervised', fraction: 0.75, message: 'step 75/100' } },
      ],
      progress: {
        stages: [stage('pretrain', 'done', 1, 1), stage('pretrain-supervised', 'running'), stage('evaluate', 'running'), stage('evaluate-baseline', 'running'), stage('evaluate-supervised', 'running')],
      },
    };
    const bars = stepFractions(status);
    expect(bars.get('evaluate-baseline')).toEqual({ fraction: 0.5, label: 'semseg epoch 3/6' });
    expect(bars.get('evaluate-supervised')).toEqual({ fraction: 0.25, label: 'knn' });
    // The method's own evaluation has no pending heartbeat: it shows none of the others'.
    expect(bars.get('evaluate')).toEqual({ fraction: 0, label: 'running' });
    expect(bars.get('pretrain-supervised')).toEqual({ fraction: 0.75, label: 'step 75/100 · attempt 2' });
    expect(bars.get('pretrain')).toEqual({ fraction: 1, label: 'done' });
  });

  it('an evaluation that has not heartbeated yet is drawn on no bar', () => {
    const status: RunStatus = { workflowId: 'w', runId: 'r', status: 'RUNNING', pending: [evaluating(undefined, 0, '')], progress: { stages: [stage('evaluate', 'running'), stage('evaluate-baseline', 'running')] } };
    const bars = stepFractions(status);
    expect(bars.get('evaluate')!.label).toBe('running');
    expect(bars.get('evaluate-baseline')!.label).toBe('running');
  });
});
