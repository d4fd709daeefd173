/**
 * Per-class tables for the run report: for each evaluation task that scores classes (kNN and linear
 * accuracy, semseg IoU, detection AP), one row per class and one column per evaluated model, read
 * from each evaluation's per-class.json (stages/downstream).
 */
import type { ArtifactStore } from '../../core/store/index.js';
import { getJson } from '../../core/store/index.js';
import { escapeHtml as esc } from './svg.js';

type Values = Array<number | null>;
interface PerClassFile {
  classes?: string[];
  knn?: { accuracy: Values; support: number[] };
  linear?: { accuracy: Values; support: number[] };
  semseg?: { classes: string[]; IoU: Values };
  detection?: { classes: string[]; AP: Values; AP50: Values; support: number[]; maskAP?: Values };
}

export interface PerClassTable {
  id: string;
  title: string;
  classes: string[];
  support?: number[];
  columns: Array<{ label: string; values: Values }>;
}

/** What each task's table shows, read from one per-class file. */
const TASK_TABLES: Array<{ id: string; title: string; pick(f: PerClassFile): { classes: string[]; values: Values; support?: number[] } | null }> = [
  { id: 'semseg', title: 'Semantic segmentation: IoU per class', pick: (f) => (f.semseg ? { classes: f.semseg.classes, values: f.semseg.IoU } : null) },
  { id: 'detection', title: 'Detection: AP per class', pick: (f) => (f.detection ? { classes: f.detection.classes, values: f.detection.AP, support: f.detection.support } : null) },
  { id: 'linear', title: 'Linear probe: accuracy per class', pick: (f) => (f.linear && f.classes ? { classes: f.classes, values: f.linear.accuracy, support: f.linear.support } : null) },
  { id: 'knn', title: 'kNN: accuracy per class', pick: (f) => (f.knn && f.classes ? { classes: f.classes, values: f.knn.accuracy, support: f.knn.support } : null) },
];

async function readPerClass(store: ArtifactStore, key: string | undefined): Promise<PerClassFile | null> {
  if (!key) return null;
  try {
    return await getJson<PerClassFile>(store, key);
  } catch {
    return null;
  }
}

export async function perClassTables(store: ArtifactStore, models: Array<{ label: string; perClassKey?: string }>): Promise<PerClassTable[]> {
  const files = await Promise.all(models.map(async (m) => ({ label: m.label, file: await readPerClass(store, m.perClassKey) })));
  const tables: PerClassTable[] = [];
  for (const task of TASK_TABLES) {
    const picked = files.map(({ label, file }) => ({ label, got: file ? task.pick(file) : null }));
    const first = picked.find((p) => p.got)?.got;
    if (!first) continue;
    tables.push({
      id: task.id,
      title: task.title,
      classes: first.classes,
      support: first.support,
      columns: picked.map((p) => ({ label: p.label, values: p.got?.values ?? first.classes.map(() => null) })),
    });
  }
  return tables;
}

const cell = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(3));

export function perClassHtml(tables: PerClassTable[]): string {
  if (tables.length === 0) return '<p>No per-class scores were written by the evaluations.</p>';
  return tables
    .map((t) => {
      const head = ['class', ...(t.support ? ['support'] : []), ...t.columns.map((c) => c.label)];
      const rows = t.classes.map(
        (name, i) => `<tr><td>${esc(name)}</td>${t.support ? `<td>${t.support[i] ?? '–'}</td>` : ''}${t.columns.map((c) => `<td>${cell(c.values[i])}</td>`).join('')}</tr>`,
      );
      return `<h3>${esc(t.title)}</h3>\n<table class="per-class" id="per-class-${t.id}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>\n${rows.join('\n')}\n</tbody></table>`;
    })
    .join('\n');
}

export function perClassMarkdown(tables: PerClassTable[]): string[] {
  return tables.flatMap((t) => {
    const head = ['class', ...(t.support ? ['support'] : []), ...t.columns.map((c) => c.label)];
    return [
      `### ${t.title}`,
      '',
      `| ${head.join(' | ')} |`,
      `|${head.map(() => '---').join('|')}|`,
      ...t.classes.map((name, i) => `| ${name} | ${t.support ? `${t.support[i] ?? '–'} | ` : ''}${t.columns.map((c) => cell(c.values[i])).join(' | ')} |`),
      '',
    ];
  });
}
