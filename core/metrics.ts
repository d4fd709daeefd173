/**
 * Evaluation stages return one flat metric map. Reports and the CLI lead with what measures the
 * representation (top-1, mIoU, AP...) and keep throughput, losses and bookkeeping apart, so a
 * faster machine never reads as a better method.
 */
export function isDiagnosticMetric(name: string): boolean {
  return /(PerSecond|secondsPer\w*|Seconds|finalLoss|Samples|labelFraction)$/.test(name) || name.startsWith('eval.');
}

export function splitMetrics(metrics: Record<string, number>): { quality: string[]; diagnostic: string[] } {
  const names = Object.keys(metrics).sort();
  return { quality: names.filter((n) => !isDiagnosticMetric(n)), diagnostic: names.filter(isDiagnosticMetric) };
}
