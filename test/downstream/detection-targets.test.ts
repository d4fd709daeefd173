import { describe, expect, it } from 'vitest';
import { centerness, decodeLtrb, encodeLtrb, type Xyxy } from '../../stages/downstream/detection/boxes.js';
import { locationGrid, pyramidLevels } from '../../stages/downstream/detection/points.js';
import { assignTargets } from '../../stages/downstream/detection/targets.js';
import { Rng } from '../../core/rng.js';

// A 16 px input with a stride-4 (4x4) and a stride-8 (2x2) level. Level 0 locations sit at
// x, y in {2, 6, 10, 14}; level 1 at {4, 12}. Default ranges: level 0 (0, 32], level 1 (32, inf).
const grid = locationGrid(pyramidLevels(16, [[4, 4], [2, 2]]));
const A: Xyxy = [0, 0, 8, 8]; // area 64, class 1
const B: Xyxy = [4, 4, 16, 16]; // area 144, class 0
const gt = { boxes: Float32Array.from([...A, ...B]), labels: Int32Array.from([1, 0]) };
const at = (x: number, y: number, level = 0) => {
  const k = [...grid.x.keys()].find((i) => grid.x[i] === x && grid.y[i] === y && grid.level[i] === level);
  if (k === undefined) throw new Error(`no location (${x}, ${y}) on level ${level}`);
  return k;
};

describe('pyramid locations', () => {
  it('puts locations at cell centres, level by level, row-major, with FCOS size ranges', () => {
    expect(grid.count).toBe(20);
    expect(grid.levels.map((l) => [l.stride, l.lower, l.upper])).toEqual([[4, 0, 32], [8, 32, Infinity]]);
    expect([...grid.x.subarray(0, 5)]).toEqual([2, 6, 10, 14, 2]);
    expect([...grid.y.subarray(0, 5)]).toEqual([2, 2, 2, 2, 6]);
    expect([...grid.x.subarray(16)]).toEqual([4, 12, 4, 12]);
    expect([...grid.y.subarray(16)]).toEqual([4, 4, 12, 12]);
  });

  it('refuses feature maps that do not divide the input', () => {
    expect(() => pyramidLevels(30, [[4, 4]])).toThrow(/imageSize/);
  });
});

describe('assignTargets', () => {
  it('without center sampling: every location strictly inside a box, the smaller box winning overlaps', () => {
    const t = assignTargets(grid, gt, { centerSampleRadius: 0 });
    // A owns its 4 interior locations (including (6,6), also inside B: A is smaller); B owns the other 8 inside it.
    expect(t.numPositive).toBe(12);
    for (const [x, y] of [[2, 2], [6, 2], [2, 6], [6, 6]]) expect(t.labels[at(x!, y!)], `(${x},${y})`).toBe(1);
    for (const [x, y] of [[10, 6], [6, 10], [10, 10], [14, 6], [6, 14], [14, 10], [10, 14], [14, 14]]) expect(t.assigned[at(x!, y!)], `(${x},${y})`).toBe(1);
    for (const [x, y] of [[10, 2], [14, 2], [2, 10], [2, 14]]) expect(t.labels[at(x!, y!)], `(${x},${y})`).toBe(-1);
    // Level 1 gets nothing: no box reaches beyond 32 px.
    for (const [x, y] of [[4, 4], [12, 4], [4, 12], [12, 12]]) expect(t.labels[at(x!, y!, 1)]).toBe(-1);
    // (6,6) in A: ltrb (6,6,2,2) px = (1.5,1.5,0.5,0.5) strides, centerness sqrt(2/6 * 2/6) = 1/3.
    const k = at(6, 6);
    expect([...t.ltrb.subarray(k * 4, k * 4 + 4)]).toEqual([1.5, 1.5, 0.5, 0.5]);
    expect(t.centerness[k]).toBeCloseTo(1 / 3, 6);
    // (10,10) is B's centre: ltrb 6 px each side, centerness 1. (14,6): ltrb (10,2,2,10) px, centerness 0.2.
    expect([...t.ltrb.subarray(at(10, 10) * 4, at(10, 10) * 4 + 4)]).toEqual([1.5, 1.5, 1.5, 1.5]);
    expect(t.centerness[at(10, 10)]).toBe(1);
    expect(t.centerness[at(14, 6)]).toBeCloseTo(0.2, 6);
    expect(t.ltrb.subarray(at(10, 2) * 4, at(10, 2) * 4 + 4).every((v) => v === 0)).toBe(true);
  });

  it('center sampling keeps only locations within radius x stride of the centre (clipped to the box)', () => {
    // Radius 1 x stride 4: A's region [0,8]^2 is its whole box (4 locations); B's is (6,14)^2, holding only (10,10).
    const t = assignTargets(grid, gt, { centerSampleRadius: 1 });
    expect(t.numPositive).toBe(5);
    expect(t.labels[at(10, 10)]).toBe(0);
    expect(t.labels[at(14, 14)]).toBe(-1);
    expect(t.labels[at(6, 10)]).toBe(-1);
  });

  it('crowd boxes are not targets', () => {
    const t = assignTargets(grid, { ...gt, iscrowd: [false, true] }, { centerSampleRadius: 0 });
    expect(t.numPositive).toBe(4);
    expect([...t.labels].filter((l) => l === 0)).toHaveLength(0);
  });

  it('size ranges send a large box to the coarser level', () => {
    // rangeStrides 2: level 0 (0, 8], level 1 (8, inf). The 16 px box reaches >= 10 px from every level-0 location.
    const g2 = locationGrid(pyramidLevels(16, [[4, 4], [2, 2]], 2));
    const t = assignTargets(g2, { boxes: Float32Array.from([0, 0, 16, 16]), labels: Int32Array.from([2]) }, { centerSampleRadius: 0 });
    expect(t.numPositive).toBe(4);
    expect([...t.labels.subarray(0, 16)].every((l) => l === -1)).toBe(true);
    expect([...t.labels.subarray(16)]).toEqual([2, 2, 2, 2]);
    // (4,4) on stride 8: ltrb (4,4,12,12) px = (0.5,0.5,1.5,1.5), centerness 1/3.
    expect([...t.ltrb.subarray(64, 68)]).toEqual([0.5, 0.5, 1.5, 1.5]);
    expect(t.centerness[16]).toBeCloseTo(1 / 3, 6);
  });

  it('rejects mismatched boxes and labels', () => {
    expect(() => assignTargets(grid, { boxes: new Float32Array(4), labels: new Int32Array(2) }, { centerSampleRadius: 0 })).toThrow(/1 boxes for 2 labels/);
  });
});

describe('ltrb box coding', () => {
  it('decode(encode(box)) is the box for points inside it, on any stride', () => {
    const rng = Rng.fromSeed('ltrb-round-trip');
    for (let i = 0; i < 200; i++) {
      const x0 = rng.uniform(0, 50);
      const y0 = rng.uniform(0, 50);
      const box: Xyxy = [x0, y0, x0 + rng.uniform(1, 60), y0 + rng.uniform(1, 60)];
      const x = rng.uniform(box[0], box[2]);
      const y = rng.uniform(box[1], box[3]);
      const stride = [2, 4, 8, 16][i % 4]!;
      const back = decodeLtrb(x, y, encodeLtrb(x, y, box, stride), stride);
      for (let c = 0; c < 4; c++) expect(back[c]).toBeCloseTo(box[c]!, 9);
    }
  });

  it('centerness is 1 at the centre and sqrt of the side ratios elsewhere', () => {
    expect(centerness([3, 5, 3, 5])).toBe(1);
    expect(centerness([1, 2, 3, 6])).toBeCloseTo(Math.sqrt((1 / 3) * (2 / 6)), 12);
  });
});
