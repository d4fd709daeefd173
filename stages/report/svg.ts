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
