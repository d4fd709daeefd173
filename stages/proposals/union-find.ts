/**
 * Disjoint sets over 0..n-1 where the root of a set is always its smallest member. That is
 * skimage's `join_trees` rule, and it makes "relabel by first occurrence in raster order" a
 * single pass: a pixel starts a new label exactly when it is its own root.
 */
export class UnionFind {
  readonly parent: Int32Array;

  constructor(n: number) {
    this.parent = new Int32Array(n);
    for (let i = 0; i < n; i++) this.parent[i] = i;
  }

  find(i: number): number {
    const parent = this.parent;
    // path halving: every other node on the path points to its grandparent
    while (parent[i] !== i) {
      const grand = parent[parent[i]!]!;
      parent[i] = grand;
      i = grand;
    }
    return i;
  }

  /** Join two roots; returns the surviving root (the smaller index). */
  unionRoots(a: number, b: number): number {
    if (a < b) {
      this.parent[b] = a;
      return a;
    }
    this.parent[a] = b;
    return b;
  }

  /** Labels 0..K-1 in order of each set's first pixel in raster order. */
  labels(): { labels: Int32Array; count: number } {
    const n = this.parent.length;
    const labels = new Int32Array(n);
    let count = 0;
    for (let i = 0; i < n; i++) {
      const root = this.find(i);
      // roots are set minima, so the root is visited (and labelled) before any other member
      labels[i] = root === i ? count++ : labels[root]!;
    }
    return { labels, count };
  }
}
