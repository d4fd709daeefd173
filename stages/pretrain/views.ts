/**
 * MoCo v2's view augmentation ("--aug-plus", facebookresearch/moco@f515ef4 main_moco.py), used unchanged by DenseCL:
 *
 *   RandomResizedCrop(size, scale=(0.2, 1.0))          (ratio (3/4, 4/3), bilinear)
 *   RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
 *   RandomGrayscale(p=0.2)
 *   RandomApply([GaussianBlur(sigma ∈ [0.1, 2.0])], p=0.5)
 *   RandomHorizontalFlip()
 *   ToTensor(), Normalize(ImageNet mean/std)
 *
 * Both views of an image are independent draws of this pipeline. Written on plain Float32 HWC arrays so that
 * every random draw comes from core/rng.ts and a view is a pure function of (image, rng state).
 * Porting notes: PIL's bilinear resize and its box-approximated Gaussian blur are replaced by an exact
 * separable Gaussian and half-pixel-centre bilinear sampling; pixel values differ slightly from PIL's.
 */
import type { Rng } from '../../core/rng.js';
import type { RgbU8 } from '../data/image.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

export interface ViewOptions {
  size: number;
  /** RandomResizedCrop area range; MoCo v2: (0.2, 1). */
  scale: [number, number];
}

/** torchvision RandomResizedCrop.get_params: 10 tries at a random area and log-uniform aspect ratio, then a centre crop. */
export function sampleCrop(width: number, height: number, scale: [number, number], rng: Rng): { x: number; y: number; w: number; h: number } {
  const area = width * height;
  const logRatio = [Math.log(3 / 4), Math.log(4 / 3)] as const;
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const ratio = Math.exp(rng.uniform(logRatio[0], logRatio[1]));
    const w = Math.round(Math.sqrt(target * ratio));
    const h = Math.round(Math.sqrt(target / ratio));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      return { x: rng.int(0, width - w + 1), y: rng.int(0, height - h + 1), w, h };
    }
  }
  // Fallback: whole image clamped to the ratio range, centred.
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < 3 / 4) h = Math.round(w / (3 / 4));
  else if (inRatio > 4 / 3) w = Math.round(h * (4 / 3));
  return { x: Math.floor((width - w) / 2), y: Math.floor((height - h) / 2), w, h };
}

/** Bilinear resample of a crop (pixel-edge box) to size×size, half-pixel centres (align_corners=False), values in [0, 1]. */
function cropResize(image: RgbU8, crop: { x: number; y: number; w: number; h: number }, size: number): Float32Array {
  const out = new Float32Array(size * size * 3);
  const { width, height, data } = image;
  const sx = crop.w / size;
  const sy = crop.h / size;
  for (let oy = 0; oy < size; oy++) {
    const fy = Math.min(Math.max(crop.y + (oy + 0.5) * sy - 0.5, 0), height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, height - 1);
    const wy = fy - y0;
    for (let ox = 0; ox < size; ox++) {
      const fx = Math.min(Math.max(crop.x + (ox + 0.5) * sx - 0.5, 0), width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, width - 1);
      const wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const a = data[(y0 * width + x0) * 3 + c]!;
        const b = data[(y0 * width + x1) * 3 + c]!;
        const d = data[(y1 * width + x0) * 3 + c]!;
        const e = data[(y1 * width + x1) * 3 + c]!;
        out[(oy * size + ox) * 3 + c] = ((a * (1 - wx) + b * wx) * (1 - wy) + (d * (1 - wx) + e * wx) * wy) / 255;
      }
    }
  }
  return out;
}

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);
const gray = (r: number, g: number, b: number) => 0.299 * r + 0.587 * g + 0.114 * b;

/** Blend with another image (or a constant) by factor f: out = f·img + (1−f)·other, clamped (torchvision _blend). */
function blendInPlace(px: Float32Array, factor: number, other: (i: number) => number): void {
  for (let i = 0; i < px.length; i++) px[i] = clamp01(factor * px[i]! + (1 - factor) * other(i));
}

function shiftHueInPlace(px: Float32Array, hueShift: number): void {
  for (let i = 0; i < px.length; i += 3) {
    const r = px[i]!;
    const g = px[i + 1]!;
    const b = px[i + 2]!;
    const max = Math.max(r, g, b);
    const min = Math.min(r, g, b);
    const delta = max - min;
    let h = 0;
    if (delta > 0) {
      if (max === r) h = ((g - b) / delta) % 6;
      else if (max === g) h = (b - r) / delta + 2;
      else h = (r - g) / delta + 4;
      h /= 6;
    }
    h = (((h + hueShift) % 1) + 1) % 1;
    const s = max === 0 ? 0 : delta / max;
    const v = max;
    const k = (n: number) => (n + h * 6) % 6;
    const f = (n: number) => v - v * s * Math.max(0, Math.min(k(n), 4 - k(n), 1));
    px[i] = f(5);
    px[i + 1] = f(3);
    px[i + 2] = f(1);
  }
}

/** ColorJitter(brightness, contrast, saturation, hue) with torchvision's random order of the four. */
function colorJitterInPlace(px: Float32Array, strength: { brightness: number; contrast: number; saturation: number; hue: number }, rng: Rng): void {
  const order = rng.shuffle([0, 1, 2, 3]);
  const factors = {
    brightness: rng.uniform(1 - strength.brightness, 1 + strength.brightness),
    contrast: rng.uniform(1 - strength.contrast, 1 + strength.contrast),
    saturation: rng.uniform(1 - strength.saturation, 1 + strength.saturation),
    hue: rng.uniform(-strength.hue, strength.hue),
  };
  for (const op of order) {
    if (op === 0) blendInPlace(px, factors.brightness, () => 0);
    else if (op === 1) {
      let mean = 0;
      for (let i = 0; i < px.length; i += 3) mean += gray(px[i]!, px[i + 1]!, px[i + 2]!);
      mean /= px.length / 3;
      blendInPlace(px, factors.contrast, () => mean);
    } else if (op === 2) {
      const g = new Float32Array(px.length / 3);
      for (let i = 0; i < g.length; i++) g[i] = gray(px[3 * i]!, px[3 * i + 1]!, px[3 * i + 2]!);
      blendInPlace(px, factors.saturation, (i) => g[Math.floor(i / 3)]!);
    } else shiftHueInPlace(px, factors.hue);
  }
}

function grayscaleInPlace(px: Float32Array): void {
  for (let i = 0; i < px.length; i += 3) {
    const l = gray(px[i]!, px[i + 1]!, px[i + 2]!);
    px[i] = px[i + 1] = px[i + 2] = l;
  }
}

/** Separable Gaussian blur (radius ⌈3σ⌉, edge replicate). */
function gaussianBlurInPlace(px: Float32Array, size: number, sigma: number): void {
  const radius = Math.max(1, Math.ceil(3 * sigma));
  if (radius >= size) throw new Error(`blur radius ${radius} does not fit a ${size}-px view`);
  const kernel = new Float32Array(2 * radius + 1);
  let total = 0;
  for (let i = -radius; i <= radius; i++) total += kernel[i + radius] = Math.exp(-(i * i) / (2 * sigma * sigma));
  for (let i = 0; i < kernel.length; i++) kernel[i]! /= total;
  const tmp = new Float32Array(px.length);
  const pass = (src: Float32Array, dst: Float32Array, horizontal: boolean) => {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) {
          let acc = 0;
          for (let k = -radius; k <= radius; k++) {
            const xx = horizontal ? Math.min(Math.max(x + k, 0), size - 1) : x;
            const yy = horizontal ? y : Math.min(Math.max(y + k, 0), size - 1);
            acc += kernel[k + radius]! * src[(yy * size + xx) * 3 + c]!;
          }
          dst[(y * size + x) * 3 + c] = acc;
        }
      }
    }
  };
  pass(px, tmp, true);
  pass(tmp, px, false);
}

function hflipInPlace(px: Float32Array, size: number): void {
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size >> 1; x++) {
      for (let c = 0; c < 3; c++) {
        const a = (y * size + x) * 3 + c;
        const b = (y * size + (size - 1 - x)) * 3 + c;
        const t = px[a]!;
        px[a] = px[b]!;
        px[b] = t;
      }
    }
  }
}

/** One MoCo v2 view: HWC float32, ImageNet-normalised, size×size×3. */
export function mocoV2View(image: RgbU8, options: ViewOptions, rng: Rng): Float32Array {
  const { size } = options;
  const px = cropResize(image, sampleCrop(image.width, image.height, options.scale, rng), size);
  if (rng.next() < 0.8) colorJitterInPlace(px, { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1 }, rng);
  if (rng.next() < 0.2) grayscaleInPlace(px);
  // σ ∈ [0.1, 2] is in pixels of a 224-px view; scaled with the view so a 64-px view is blurred alike.
  if (rng.next() < 0.5) gaussianBlurInPlace(px, size, (rng.uniform(0.1, 2.0) * size) / 224);
  if (rng.next() < 0.5) hflipInPlace(px, size);
  for (let i = 0; i < px.length; i++) px[i] = (px[i]! - IMAGENET_MEAN[i % 3]!) / IMAGENET_STD[i % 3]!;
  return px;
}
