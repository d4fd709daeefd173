/**
 * Exact minimum-cost assignment (Hungarian method, shortest augmenting paths with row/column
 * potentials, O(n^2 m)) for an n x m cost matrix. Rows are assigned to distinct columns; when
 * n > m the matrix is transposed so every column gets a row and the surplus rows stay unassigned.
 * Used to match k-means clusters to ground-truth segments (maximise IoU = minimise -IoU).
 */
import { BadInputError } from '../../core/errors.js';

export interface Assignment {
  /** Column of each row, -1 if unassigned. */
  rowToColumn: number[];
  /** Row of each column, -1 if unassigned. */
  columnToRow: number[];
  cost: number;
}

export function hungarian(cost: ReadonlyArray<ArrayLike<number>>): Assignment {
  const n = cost.length;
  const m = n === 0 ? 0 : cost[0]!.length;
  for (let i = 0; i < n; i++) {
    if (cost[i]!.length !== m) throw new BadInputError(`row ${i} has ${cost[i]!.length} entries, row 0 has ${m}`, 'cost');
    for (let j = 0; j < m; j++) if (!Number.isFinite(cost[i]![j]!)) throw new BadInputError(`cost[${i}][${j}] is not finite`, 'cost');
  }
  if (n === 0 || m === 0) return { rowToColumn: new Array(n).fill(-1), columnToRow: new Array(m).fill(-1), cost: 0 };
  if (n > m) {
    const transposed = Array.from({ length: m }, (_, j) => Array.from({ length: n }, (_, i) => cost[i]![j]!));
    const t = hungarian(transposed);
    return { rowToColumn: t.columnToRow, columnToRow: t.rowToColumn, cost: t.cost };
  }
  // 1-based arrays with a virtual column 0 that holds the row being inserted.
  const u = new Float64Array(n + 1);
  const v = new Float64Array(m + 1);
  const rowOfColumn = new Int32Array(m + 1); // 0 = free
  const way = new Int32Array(m + 1);
  for (let i = 1; i <= n; i++) {
    rowOfColumn[0] = i;
    let j0 = 0;
    const minv = new Float64Array(m + 1).fill(Infinity);
    const used = new Uint8Array(m + 1);
    do {
      used[j0] = 1;
      const i0 = rowOfColumn[j0]!;
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const reduced = cost[i0 - 1]![j - 1]! - u[i0]! - v[j]!;
        if (reduced < minv[j]!) {
          minv[j] = reduced;
          way[j] = j0;
        }
        if (minv[j]! < delta) {
          delta = minv[j]!;
          j1 = j;
        }
      }
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[rowOfColumn[j]!]! += delta;
          v[j]! -= delta;
        } else minv[j]! -= delta;
      }
      j0 = j1;
    } while (rowOfColumn[j0] !== 0);
    // Flip the augmenting path back to the virtual column.
    do {
      const j1 = way[j0]!;
      rowOfColumn[j0] = rowOfColumn[j1]!;
      j0 = j1;
    } while (j0 !== 0);
  }
  const rowToColumn = new Array<number>(n).fill(-1);
  const columnToRow = new Array<number>(m).fill(-1);
  let total = 0;
  for (let j = 1; j <= m; j++) {
    const i = rowOfColumn[j]!;
    if (i === 0) continue;
    rowToColumn[i - 1] = j - 1;
    columnToRow[j - 1] = i - 1;
    total += cost[i - 1]![j - 1]!;
  }
  return { rowToColumn, columnToRow, cost: total };
}
