import { Rng } from '../../core/rng.js';
import type { RgbU8 } from './image.js';
import { maskBox } from './masks.js';

/**
 * "shapes-clutter": a built-in multi-object benchmark generated from a seed. Every image is a
 * pure function of (seed, split, index), so any single image can be regenerated without the
 * others, and a dataset can be sharded in parallel or resumed mid-way.
 *
 * Why it is hard for a global-only representation: every image holds several objects of
 * different classes at random positions and scales over a background cluttered with fragments
 * that reuse the objects' colours and textures. A single pooled vector can say which classes
 * are present but not where; localization (boxes, masks, semantic map) needs spatial features.
 */

export type SyntheticSize = 'tiny' | 'small' | 'full';
export const SYNTHETIC_SPLITS = ['train', 'val', 'test'] as const;
export type SyntheticSplit = (typeof SYNTHETIC_SPLITS)[number];

export interface SyntheticSpec {
  size: SyntheticSize;
  imageSize: number;
  images: Record<SyntheticSplit, number>;
  minObjects: number;
  maxObjects: number;
  /** Object diameter as a fraction of the image side, sampled log-uniformly. */
  minScale: number;
  maxScale: number;
  /** An object is re-placed when a later one would leave less than this fraction visible. */
  minVisibleFraction: number;
  backgroundFragments: number;
}

export const SYNTHETIC_SPECS: Record<SyntheticSize, SyntheticSpec> = {
  tiny: { size: 'tiny', imageSize: 64, images: { train: 96, val: 16, test: 16 }, minObjects: 2, maxObjects: 5, minScale: 0.2, maxScale: 0.55, minVisibleFraction: 0.4, backgroundFragments: 6 },
  small: { size: 'small', imageSize: 96, images: { train: 4000, val: 500, test: 500 }, minObjects: 2, maxObjects: 6, minScale: 0.15, maxScale: 0.5, minVisibleFraction: 0.4, backgroundFragments: 10 },
  full: { size: 'full', imageSize: 128, images: { train: 40000, val: 5000, test: 5000 }, minObjects: 2, maxObjects: 7, minScale: 0.12, maxScale: 0.5, minVisibleFraction: 0.4, backgroundFragments: 14 },
};

type ShapeFn = (u: number, v: number) => boolean;
type TextureFn = (u: number, v: number) => number; // 0 = primary colour, 1 = secondary

interface ClassDef {
  name: string;
  shape: ShapeFn;
  texture: TextureFn;
  /** Base hue in degrees; instances jitter around it. */
  hue: number;
}

const parity = (n: number) => ((Math.floor(n) % 2) + 2) % 2;

/** Shapes are defined on the object's local square [-1,1]^2 (after rotation and scaling). */
const SHAPES = {
  disc: (u: number, v: number) => u * u + v * v <= 1,
  square: (u: number, v: number) => Math.abs(u) <= 0.8 && Math.abs(v) <= 0.8,
  triangle: (u: number, v: number) => v <= 0.7 && 1.75 * u - v <= 0.95 && -1.75 * u - v <= 0.95,
  ring: (u: number, v: number) => {
    const r2 = u * u + v * v;
    return r2 <= 1 && r2 >= 0.3;
  },
  cross: (u: number, v: number) => (Math.abs(u) <= 0.3 && Math.abs(v) <= 0.95) || (Math.abs(v) <= 0.3 && Math.abs(u) <= 0.95),
  star: (u: number, v: number) => {
    const r = Math.sqrt(u * u + v * v);
    const a = Math.atan2(v, u);
    return r <= 0.42 + 0.58 * Math.pow(Math.abs(Math.cos(2.5 * a)), 3);
  },
  hexagon: (u: number, v: number) => Math.max(Math.abs(v), Math.abs(u) * 0.866 + Math.abs(v) * 0.5) <= 0.9,
  bar: (u: number, v: number) => Math.abs(u) <= 1 && Math.abs(v) <= 0.32,
} satisfies Record<string, ShapeFn>;

const TEXTURES = {
  solid: () => 0,
  stripes: (_u: number, v: number) => parity(v * 3.5),
  checker: (u: number, v: number) => parity(u * 2.5) ^ parity(v * 2.5),
  dots: (u: number, v: number) => {
    const fu = u * 3 - Math.floor(u * 3) - 0.5;
    const fv = v * 3 - Math.floor(v * 3) - 0.5;
    return fu * fu + fv * fv < 0.09 ? 1 : 0;
  },
  diagonal: (u: number, v: number) => parity((u + v) * 2.5),
  concentric: (u: number, v: number) => parity(Math.sqrt(u * u + v * v) * 5),
  grid: (u: number, v: number) => (Math.abs(u * 3 - Math.round(u * 3)) < 0.15 || Math.abs(v * 3 - Math.round(v * 3)) < 0.15 ? 1 : 0),
  waves: (u: number, v: number) => (Math.sin(u * 9 + Math.sin(v * 6) * 1.5) > 0 ? 1 : 0),
} satisfies Record<string, TextureFn>;

/** Eight classes; each differs from the others in shape, texture and base colour. */
export const SYNTHETIC_CLASSES: readonly ClassDef[] = [
  { name: 'disc', shape: SHAPES.disc, texture: TEXTURES.solid, hue: 0 },
  { name: 'square', shape: SHAPES.square, texture: TEXTURES.stripes, hue: 220 },
  { name: 'triangle', shape: SHAPES.triangle, texture: TEXTURES.checker, hue: 120 },
  { name: 'ring', shape: SHAPES.ring, texture: TEXTURES.diagonal, hue: 45 },
  { name: 'cross', shape: SHAPES.cross, texture: TEXTURES.dots, hue: 300 },
  { name: 'star', shape: SHAPES.star, texture: TEXTURES.concentric, hue: 180 },
  { name: 'hexagon', shape: SHAPES.hexagon, texture: TEXTURES.grid, hue: 265 },
  { name: 'bar', shape: SHAPES.bar, texture: TEXTURES.waves, hue: 25 },
];
export const SYNTHETIC_CLASS_NAMES: readonly string[] = SYNTHETIC_CLASSES.map((c) => c.name);

export interface SyntheticObject {
  /** 0-based index into SYNTHETIC_CLASS_NAMES. */
  label: number;
  /** Visible (after occlusion) pixels, row-major height*width. */
  mask: Uint8Array;
  /** Tight box of the visible mask, [x0, y0, x1, y1], pixel edges (x1, y1 exclusive). */
  bbox: [number, number, number, number];
  area: number;
  /** 1 - visible area / unoccluded area. */
  occlusion: number;
}

export interface SyntheticImage {
  key: string;
  image: RgbU8;
  objects: SyntheticObject[];
}

function hsvToRgb(h: number, s: number, v: number): [number, number, number] {
  const hh = (((h % 360) + 360) % 360) / 60;
  const c = v * s;
  const x = c * (1 - Math.abs((hh % 2) - 1));
  const m = v - c;
  const [r, g, b] = hh < 1 ? [c, x, 0] : hh < 2 ? [x, c, 0] : hh < 3 ? [0, c, x] : hh < 4 ? [0, x, c] : hh < 5 ? [x, 0, c] : [c, 0, x];
  return [(r + m) * 255, (g + m) * 255, (b + m) * 255];
}

interface Placement {
  label: number;
  cx: number;
  cy: number;
  radius: number;
  cos: number;
  sin: number;
  /** Aspect stretch along the local u axis (shapes are not all perfectly regular). */
  stretch: number;
  primary: [number, number, number];
  secondary: [number, number, number];
}

function randomColourPair(rng: Rng, hue: number): { primary: [number, number, number]; secondary: [number, number, number] } {
  const h = hue + rng.normal() * 10;
  const s = rng.uniform(0.55, 1);
  const v = rng.uniform(0.6, 1);
  return { primary: hsvToRgb(h, s, v), secondary: hsvToRgb(h + rng.uniform(-25, 25), s * rng.uniform(0.3, 0.7), v * rng.uniform(0.3, 0.6)) };
}

/** Visit the pixels covered by a placement: calls `visit(pixelIndex, u, v)` for inside pixels. */
function rasterise(p: Placement, shape: ShapeFn, size: number, visit: (pixel: number, u: number, v: number) => void): void {
  const reach = p.radius * Math.max(1, p.stretch) * 1.42;
  const x0 = Math.max(0, Math.floor(p.cx - reach));
  const x1 = Math.min(size - 1, Math.ceil(p.cx + reach));
  const y0 = Math.max(0, Math.floor(p.cy - reach));
  const y1 = Math.min(size - 1, Math.ceil(p.cy + reach));
  for (let y = y0; y <= y1; y++) {
    const dy = y + 0.5 - p.cy;
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - p.cx;
      const u = (dx * p.cos + dy * p.sin) / (p.radius * p.stretch);
      const v = (-dx * p.sin + dy * p.cos) / p.radius;
      if (shape(u, v)) visit(y * size + x, u, v);
    }
  }
}

function paintBackground(rng: Rng, spec: SyntheticSpec, rgb: Float32Array): void {
  const n = spec.imageSize;
  // Low-frequency two-colour field: a random smooth gradient and a faint oriented texture.
  const a = hsvToRgb(rng.uniform(0, 360), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8));
  const b = hsvToRgb(rng.uniform(0, 360), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8));
  const fx = rng.uniform(0.5, 2.5) / n, fy = rng.uniform(0.5, 2.5) / n, phase = rng.uniform(0, 6.28);
  const texAngle = rng.uniform(0, Math.PI), texFreq = rng.uniform(4, 12) / n;
  const tc = Math.cos(texAngle), ts = Math.sin(texAngle);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const t = 0.5 + 0.5 * Math.sin(6.283 * (fx * x + fy * y) + phase);
      const stripe = parity((x * tc + y * ts) * texFreq) ? 0.12 : -0.12;
      const w = Math.min(1, Math.max(0, t + stripe));
      const o = (y * n + x) * 3;
      rgb[o] = a[0] * (1 - w) + b[0] * w;
      rgb[o + 1] = a[1] * (1 - w) + b[1] * w;
      rgb[o + 2] = a[2] * (1 - w) + b[2] * w;
    }
  }
  // Clutter: unlabelled fragments in the objects' own colours and textures, so neither colour nor
  // texture alone finds the objects; only their shapes (a spatial property) do.
  const textures = Object.values(TEXTURES);
  for (let f = 0; f < spec.backgroundFragments; f++) {
    const cls = SYNTHETIC_CLASSES[rng.int(0, SYNTHETIC_CLASSES.length)]!;
    const { primary, secondary } = randomColourPair(rng, cls.hue);
    const texture = textures[rng.int(0, textures.length)]!;
    const kind = rng.int(0, 3);
    const angle = rng.uniform(0, Math.PI);
    const p: Placement = {
      label: -1,
      cx: rng.uniform(0, n),
      cy: rng.uniform(0, n),
      radius: n * rng.uniform(0.04, 0.12),
      cos: Math.cos(angle),
      sin: Math.sin(angle),
      stretch: kind === 0 ? rng.uniform(2.5, 5) : 1,
      primary,
      secondary,
    };
    // Thin lines, irregular blobs and partial arcs: none of them is one of the class shapes.
    const phase2 = rng.uniform(0, 6.28), phase3 = rng.uniform(0, 6.28);
    const shape: ShapeFn =
      kind === 0
        ? (u, v) => Math.abs(u) <= 1 && Math.abs(v) <= 0.12 * 2.5
        : kind === 1
          ? (u, v) => {
              const a = Math.atan2(v, u);
              return Math.sqrt(u * u + v * v) <= 0.75 + 0.15 * Math.sin(2 * a + phase2) + 0.1 * Math.sin(3 * a + phase3);
            }
          : (u, v) => {
              const r = Math.sqrt(u * u + v * v);
              return r <= 1 && r >= 0.8 && v > 0;
            };
    rasterise(p, shape, n, (px, u, v) => {
      const c = texture(u, v) ? secondary : primary;
      rgb[px * 3] = c[0];
      rgb[px * 3 + 1] = c[1];
      rgb[px * 3 + 2] = c[2];
    });
  }
}

/** Generate image `index` of `split`: a pure function of (spec, seed, split, index). */
export function generateSyntheticImage(spec: SyntheticSpec, seed: number, split: SyntheticSplit, index: number): SyntheticImage {
  const n = spec.imageSize;
  const rng = Rng.fromSeed('shapes-clutter', seed, split, index);
  const rgb = new Float32Array(n * n * 3);
  paintBackground(rng, spec, rgb);

  const owner = new Int16Array(n * n).fill(-1);
  const fullArea: number[] = [];
  const placements: Placement[] = [];
  const count = rng.int(spec.minObjects, spec.maxObjects + 1);
  for (let k = 0; k < count; k++) {
    const label = rng.int(0, SYNTHETIC_CLASSES.length);
    const cls = SYNTHETIC_CLASSES[label]!;
    // Rejection sampling keeps every earlier object at least minVisibleFraction visible, so
    // occlusion is real but never erases an annotated object.
    for (let attempt = 0; attempt < 20; attempt++) {
      const diameter = n * Math.exp(rng.uniform(Math.log(spec.minScale), Math.log(spec.maxScale)));
      const angle = rng.uniform(0, 2 * Math.PI);
      const p: Placement = {
        label,
        cx: rng.uniform(0.1 * n, 0.9 * n),
        cy: rng.uniform(0.1 * n, 0.9 * n),
        radius: diameter / 2,
        cos: Math.cos(angle),
        sin: Math.sin(angle),
        stretch: rng.uniform(0.85, 1.15),
        ...randomColourPair(rng, cls.hue),
        };
      const trial = owner.slice();
      let area = 0;
      rasterise(p, cls.shape, n, (px) => {
        trial[px] = placements.length;
        area++;
      });
      if (area < 12) continue;
      const visible = new Array<number>(placements.length + 1).fill(0);
      for (let i = 0; i < trial.length; i++) if (trial[i]! >= 0) visible[trial[i]!]!++;
      let ok = true;
      for (let j = 0; j < placements.length; j++) if (visible[j]! < spec.minVisibleFraction * fullArea[j]!) ok = false;
      if (!ok) continue;
      owner.set(trial);
      placements.push(p);
      fullArea.push(area);
      break;
    }
  }

  // Paint objects in z-order; shading gives each object a gentle light gradient.
  placements.forEach((p, index) => {
    const cls = SYNTHETIC_CLASSES[p.label]!;
    rasterise(p, cls.shape, n, (px, u, v) => {
      if (owner[px] !== index) return;
      const c = cls.texture(u, v) ? p.secondary : p.primary;
      const shade = 1 - 0.18 * v;
      rgb[px * 3] = c[0] * shade;
      rgb[px * 3 + 1] = c[1] * shade;
      rgb[px * 3 + 2] = c[2] * shade;
    });
  });

  const data = new Uint8Array(n * n * 3);
  for (let i = 0; i < data.length; i++) {
    const v = rgb[i]! + rng.normal() * 4 + 0.5; // sensor noise: no two flat regions are identical
    data[i] = v <= 0 ? 0 : v >= 255 ? 255 : v;
  }

  const objects: SyntheticObject[] = [];
  placements.forEach((p, idx) => {
    const mask = new Uint8Array(n * n);
    let area = 0;
    for (let i = 0; i < owner.length; i++) {
      if (owner[i] === idx) {
        mask[i] = 1;
        area++;
      }
    }
    const bbox = maskBox(mask, n, n);
    if (!bbox) return;
    objects.push({ label: p.label, mask, bbox, area, occlusion: 1 - area / fullArea[idx]! });
  });
  return { key: `${split}_${String(index).padStart(6, '0')}`, image: { width: n, height: n, data }, objects };
}

/** Paint a semantic map: 0 = background, c + 1 = class c (masks are disjoint after occlusion). */
export function semanticMapOf(width: number, height: number, objects: readonly { label: number; mask: Uint8Array }[]): Uint8Array {
  const map = new Uint8Array(width * height);
  for (const o of objects) {
    for (let i = 0; i < map.length; i++) if (o.mask[i]) map[i] = o.label + 1;
  }
  return map;
}
