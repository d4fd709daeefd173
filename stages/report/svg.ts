/** Minimal dependency-free SVG line plots for reports (the page must render offline). */
export interface Series {
  label: string;
  points: Array<[number, number]>;
  color?: string;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count)));
  const err = ((hi - lo) / count) / step;
  const mult = err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
  const s = step * mult;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / s) * s; t <= hi + 1e-12; t += s) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

export function linePlot(series: Series[], options: { title: string; xLabel: string; yLabel: string; width?: number; height?: number }): string {
  const width = options.width ?? 560;
  const height = options.height ?? 280;
  const m = { left: 56, right: 16, top: 28, bottom: 40 };
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (all.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="40"><text x="8" y="24">${esc(options.title)}: no data</text></svg>`;
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const sy = (y: number) => height - m.bottom - ((y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(options.title)}">`);
  parts.push(`<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="600">${esc(options.title)}</text>`);
  for (const t of niceTicks(y0, y1)) {
    parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.left - 6}" y="${sy(t) + 4}" text-anchor="end" font-size="10">${t}</text>`);
  }
  for (const t of niceTicks(x0, x1)) parts.push(`<text x="${sx(t)}" y="${height - m.bottom + 14}" text-anchor="middle" font-size="10">${t}</text>`);
  parts.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${height - m.bottom}" stroke="#333"/>`);
  parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${height - m.bottom}" y2="${height - m.bottom}" stroke="#333"/>`);
  parts.push(`<text x="${width / 2}" y="${height - 6}" text-anchor="middle" font-size="11">${esc(options.xLabel)}</text>`);
  parts.push(`<text x="12" y="${height / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 12 ${height / 2})">${esc(options.yLabel)}</text>`);
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    const d = pts.map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    parts.push(`<path class="series" d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
    parts.push(`<text x="${width - m.right - 4}" y="${m.top + 12 + i * 14}" text-anchor="end" font-size="11" fill="${color}">${esc(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

export { esc as escapeHtml };

export interface StripRow {
  label: string;
  /** One value per seed. */
  values: number[];
  color?: string;
}

/**
 * Per-seed values of one metric, one row per model: a dot per seed, a tick at the mean, and a
 * shaded band of mean ± `k` sample standard deviations (the noise band the report judges by).
 */
export function stripPlot(rows: StripRow[], options: { title: string; xLabel: string; k?: number; width?: number }): string {
  const k = options.k ?? 2;
  const width = options.width ?? 560;
  const m = { left: 120, right: 16, top: 28, bottom: 36 };
  const rowH = 26;
  const height = m.top + m.bottom + rowH * rows.length;
  const stats = rows.map((r) => {
    const v = r.values.filter(Number.isFinite);
    const mean = v.reduce((a, b) => a + b, 0) / Math.max(v.length, 1);
    const std = v.length < 2 ? 0 : Math.sqrt(v.reduce((a, x) => a + (x - mean) ** 2, 0) / (v.length - 1));
    return { v, mean, std };
  });
  const all = stats.flatMap((s) => [...s.v, s.mean - k * s.std, s.mean + k * s.std]).filter(Number.isFinite);
  if (all.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="40"><text x="8" y="24">${esc(options.title)}: no data</text></svg>`;
  let [x0, x1] = [Math.min(...all), Math.max(...all)];
  const pad = (x1 - x0) * 0.08 || 0.01;
  [x0, x1] = [x0 - pad, x1 + pad];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" class="plot strip" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(options.title)}">`);
  parts.push(`<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="600">${esc(options.title)}</text>`);
  for (const t of niceTicks(x0, x1)) {
    parts.push(`<line x1="${sx(t)}" x2="${sx(t)}" y1="${m.top}" y2="${height - m.bottom}" stroke="#eee"/>`);
    parts.push(`<text x="${sx(t)}" y="${height - m.bottom + 14}" text-anchor="middle" font-size="10">${t}</text>`);
  }
  parts.push(`<text x="${(m.left + width - m.right) / 2}" y="${height - 6}" text-anchor="middle" font-size="11">${esc(options.xLabel)}</text>`);
  rows.forEach((r, i) => {
    const color = r.color ?? PALETTE[i % PALETTE.length]!;
    const y = m.top + rowH * i + rowH / 2;
    const s = stats[i]!;
    parts.push(`<text x="${m.left - 8}" y="${y + 4}" text-anchor="end" font-size="11">${esc(r.label)}</text>`);
    if (s.v.length === 0) return;
    const lo = sx(s.mean - k * s.std);
    const hi = sx(s.mean + k * s.std);
    parts.push(`<rect class="band" x="${lo.toFixed(1)}" y="${y - 8}" width="${Math.max(hi - lo, 1).toFixed(1)}" height="16" fill="${color}" fill-opacity="0.18"><title>${esc(`${r.label}: mean ${s.mean.toFixed(4)} ± ${k}×${s.std.toFixed(4)}`)}</title></rect>`);
    parts.push(`<line class="mean" x1="${sx(s.mean).toFixed(1)}" x2="${sx(s.mean).toFixed(1)}" y1="${y - 10}" y2="${y + 10}" stroke="${color}" stroke-width="2"/>`);
    for (const v of s.v) parts.push(`<circle class="seed" cx="${sx(v).toFixed(1)}" cy="${y}" r="3.5" fill="${color}"><title>${esc(`${r.label}: ${v.toFixed(4)}`)}</title></circle>`);
  });
  parts.push('</svg>');
  return parts.join('');
}
