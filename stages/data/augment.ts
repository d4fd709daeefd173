import { Rng } from '../../core/rng.js';
import type { ViewGeometry } from './geometry.js';
import type { RgbF32, RgbImage } from './image.js';
import { resampleRegion, type Interpolation } from './resample.js';

/**
 * Augmentations on decoded RGB, HWC, in plain loops (this is the data-loading hot path).
 * Crops work from Uint8 or Float32 sources and produce Float32 in [0, 1]; every later op works
 * in place on that Float32 view. Randomness comes from a seedable Rng, so a view is a pure
 * function of (image, rng state).
 */

export interface CropParams {
  /** torchvision's (i, j, h, w): top row, left column, height, width, in original pixels. */
  i: number;
  j: number;
  h: number;
  w: number;
}

/**
 * torchvision RandomResizedCrop.get_params: up to 10 tries of (area fraction ~ U(scale),
 * log aspect ~ U(log ratio)), else the largest centred crop within the ratio bounds.
 */
export function sampleResizedCrop(rng: Rng, width: number, height: number, scale: readonly [number, number], ratio: readonly [number, number]): CropParams {
  // The whole image, when that is what the spec asks for (R2O's k-means view): torchvision's tries can only
  // fail there, and its fallback would centre-crop to the ratio bounds.
  if (scale[0] >= 1 && ratio[0] <= width / height && width / height <= ratio[1]) return { i: 0, j: 0, h: height, w: width };
  const area = width * height;
  const logLo = Math.log(ratio[0]), logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = Math.round(Math.sqrt(targetArea * aspect));
    const h = Math.round(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      return { i: rng.int(0, height - h + 1), j: rng.int(0, width - w + 1), h, w };
    }
  }
  const inRatio = width / height;
  let w = width, h = height;
  if (inRatio < ratio[0]) h = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(h * ratio[1]);
  return { i: Math.floor((height - h) / 2), j: Math.floor((width - w) / 2), h, w };
}

export function cropGeometry(src: { width: number; height: number }, crop: CropParams, outWidth: number, outHeight: number, flipped: boolean): ViewGeometry {
  return { imageWidth: src.width, imageHeight: src.height, crop: [crop.j, crop.i, crop.j + crop.w, crop.i + crop.h], width: outWidth, height: outHeight, flipped };
}

/** Crop, resize and (optionally) mirror in one go, returning the view and its geometry. */
export function resizedCrop(src: RgbImage, crop: CropParams, outWidth: number, outHeight: number, interpolation: Interpolation, flipped: boolean): { image: RgbF32; geometry: ViewGeometry } {
  const image = resampleRegion(src, [crop.j, crop.i, crop.j + crop.w, crop.i + crop.h], outWidth, outHeight, interpolation);
  if (flipped) hflipInPlace(image);
  return { image, geometry: cropGeometry(src, crop, outWidth, outHeight, flipped) };
}

export function hflipInPlace(img: RgbF32): void {
  const { width, height, data } = img;
  for (let y = 0; y < height; y++) {
    let l = y * width * 3, r = l + (width - 1) * 3;
    while (l < r) {
      for (let c = 0; c < 3; c++) {
        const t = data[l + c]!;
        data[l + c] = data[r + c]!;
        data[r + c] = t;
      }
      l += 3;
      r -= 3;
    }
  }
}

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);
/** ITU-R 601 luma, torchvision's rgb_to_grayscale weights. */
const luma = (r: number, g: number, b: number) => 0.2989 * r + 0.587 * g + 0.114 * b;

export function adjustBrightness(img: RgbF32, factor: number): void {
  const d = img.data;
  for (let i = 0; i < d.length; i++) d[i] = clamp01(d[i]! * factor);
}

/** Blend with the mean grey level of the whole image (torchvision adjust_contrast). */
export function adjustContrast(img: RgbF32, factor: number): void {
  const d = img.data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 3) sum += luma(d[i]!, d[i + 1]!, d[i + 2]!);
  const mean = sum / (d.length / 3);
  const offset = (1 - factor) * mean;
  for (let i = 0; i < d.length; i++) d[i] = clamp01(d[i]! * factor + offset);
}

/** Blend each pixel with its own grey value. */
export function adjustSaturation(img: RgbF32, factor: number): void {
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    const g = (1 - factor) * luma(d[i]!, d[i + 1]!, d[i + 2]!);
    d[i] = clamp01(d[i]! * factor + g);
    d[i + 1] = clamp01(d[i + 1]! * factor + g);
    d[i + 2] = clamp01(d[i + 2]! * factor + g);
  }
}

/** Rotate hue by `shift` turns (in [-0.5, 0.5]) through HSV, as torchvision adjust_hue. */
export function adjustHue(img: RgbF32, shift: number): void {
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    const r = d[i]!, g = d[i + 1]!, b = d[i + 2]!;
    const max = Math.max(r, g, b), min = Math.min(r, g, b);
    const delta = max - min;
    if (delta === 0) continue; // grey: hue is undefined and rotating it changes nothing
    let h: number;
    if (max === r) h = ((g - b) / delta) % 6;
    else if (max === g) h = (b - r) / delta + 2;
    else h = (r - g) / delta + 4;
    h = (h / 6 + shift) % 1;
    if (h < 0) h += 1;
    const s = delta / max;
    const v = max;
    const h6 = h * 6;
    const sector = Math.floor(h6) % 6;
    const f = h6 - Math.floor(h6);
    const p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    // A switch, not a lookup table of arrays: this loop runs per pixel and must not allocate.
    switch (sector) {
      case 0: d[i] = v; d[i + 1] = t; d[i + 2] = p; break;
      case 1: d[i] = q; d[i + 1] = v; d[i + 2] = p; break;
      case 2: d[i] = p; d[i + 1] = v; d[i + 2] = t; break;
      case 3: d[i] = p; d[i + 1] = q; d[i + 2] = v; break;
      case 4: d[i] = t; d[i + 1] = p; d[i + 2] = v; break;
      default: d[i] = v; d[i + 1] = p; d[i + 2] = q;
    }
  }
}

export function grayscaleInPlace(img: RgbF32): void {
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    const g = luma(d[i]!, d[i + 1]!, d[i + 2]!);
    d[i] = d[i + 1] = d[i + 2] = g;
  }
}

/** PIL ImageOps.solarize: values at or above the threshold (128/255 by default) are inverted. */
export function solarizeInPlace(img: RgbF32, threshold = 128 / 255): void {
  const d = img.data;
  for (let i = 0; i < d.length; i++) if (d[i]! >= threshold) d[i] = 1 - d[i]!;
}

/**
 * Separable Gaussian blur with radius ceil(3 sigma) and reflected borders. sigma is in view
 * pixels: recipes written for 224-pixel views (sigma ~ U[0.1, 2]) should scale it with the view size.
 */
export function gaussianBlurInPlace(img: RgbF32, sigma: number): void {
  const radius = Math.max(1, Math.ceil(3 * sigma));
  const kernel = new Float32Array(2 * radius + 1);
  let sum = 0;
  for (let k = -radius; k <= radius; k++) sum += kernel[k + radius] = Math.exp((-k * k) / (2 * sigma * sigma));
  for (let k = 0; k < kernel.length; k++) kernel[k]! /= sum;
  const { width, height, data } = img;
  // Source index for every padded position, computed once: the inner loops then do no branching.
  const reflected = (n: number) => {
    const idx = new Int32Array(n + 2 * radius);
    for (let k = 0; k < idx.length; k++) {
      // Reflect without repeating the edge (torchvision's 'reflect' padding); loop for kernels wider than the image.
      let i = k - radius;
      while (n > 1 && (i < 0 || i >= n)) i = i < 0 ? -i : 2 * n - 2 - i;
      idx[k] = n > 1 ? i : 0;
    }
    return idx;
  };
  const xs = reflected(width);
  const ys = reflected(height);
  const taps = kernel.length;
  const stride = width * 3;
  const tmp = new Float32Array(data.length);
  // Horizontal pass over one reflect-padded copy of each row, so every tap is a contiguous sweep.
  const padded = new Float32Array(xs.length * 3);
  for (let y = 0; y < height; y++) {
    const row = y * stride;
    for (let k = 0; k < xs.length; k++) {
      const p = row + xs[k]! * 3;
      padded[k * 3] = data[p]!;
      padded[k * 3 + 1] = data[p + 1]!;
      padded[k * 3 + 2] = data[p + 2]!;
    }
    // The kernel is symmetric: pair tap k with tap taps-1-k and multiply once.
    const centre = kernel[radius]!;
    for (let x = 0; x < stride; x++) tmp[row + x] = padded[radius * 3 + x]! * centre;
    for (let k = 0; k < radius; k++) {
      const w = kernel[k]!;
      const lo = k * 3, hi = (taps - 1 - k) * 3;
      for (let x = 0; x < stride; x++) tmp[row + x]! += (padded[lo + x]! + padded[hi + x]!) * w;
    }
  }
  for (let y = 0; y < height; y++) {
    const dst = y * stride;
    const mid = ys[y + radius]! * stride;
    const centre = kernel[radius]!;
    for (let x = 0; x < stride; x++) data[dst + x] = tmp[mid + x]! * centre;
    for (let k = 0; k < radius; k++) {
      const lo = ys[y + k]! * stride, hi = ys[y + taps - 1 - k]! * stride;
      const w = kernel[k]!;
      for (let x = 0; x < stride; x++) data[dst + x]! += (tmp[lo + x]! + tmp[hi + x]!) * w;
    }
  }
}

/** One view's recipe. Probabilities are per view; ranges follow torchvision's conventions. */
export interface ViewSpec {
  /** Output size (square when height is omitted). */
  size: number;
  height?: number;
  scale: [number, number];
  ratio?: [number, number];
  interpolation?: Interpolation;
  flipP?: number;
  /**
   * Draw the flip first and the crop in the flipped image's frame (SiameseIM's `DataAugmentationForSIM`: `random_flip`,
   * then `SingleRandomResizedCrop` of the flipped image). The view and its geometry (original-frame crop, `flipped`) are
   * the same kind as otherwise; only the order of the draws and the centred fallback crop's rounding differ. Default:
   * crop, then flip (MoCo v2 / BYOL).
   */
  flipBeforeCrop?: boolean;
  /** ColorJitter(brightness, contrast, saturation, hue) applied with probability p. */
  colorJitter?: { brightness: number; contrast: number; saturation: number; hue: number; p: number };
  grayscaleP?: number;
  blur?: { p: number; sigma: [number, number] };
  /**
   * SCRL's `ResizeBlur` (kakaobrain/scrl augment/transforms.py): with probability p, shrink by a factor drawn
   * uniformly from `factors` to (⌊H/f⌋, ⌊W/f⌋) and enlarge back, both bicubic (antialiased when shrinking,
   * 8-bit in between, as PIL). Applied where `blur` would be.
   */
  resizeBlur?: { p: number; factors: number[] };
  solarizeP?: number;
}

/** What was drawn for a view, so tests and logs can see exactly what happened. */
export interface AppliedOps {
  /** As drawn: in the flipped image's frame for a `flipBeforeCrop` view that was flipped (`geometry.crop` is always the original's). */
  crop: CropParams;
  flipped: boolean;
  jitter?: { order: string[]; brightness: number; contrast: number; saturation: number; hue: number };
  grayscale: boolean;
  blurSigma?: number;
  resizeBlurFactor?: number;
  solarized: boolean;
}

export interface AugmentedView {
  image: RgbF32;
  geometry: ViewGeometry;
  applied: AppliedOps;
}

function applyColorJitter(rng: Rng, img: RgbF32, cj: NonNullable<ViewSpec['colorJitter']>): AppliedOps['jitter'] {
  const b = rng.uniform(Math.max(0, 1 - cj.brightness), 1 + cj.brightness);
  const c = rng.uniform(Math.max(0, 1 - cj.contrast), 1 + cj.contrast);
  const s = rng.uniform(Math.max(0, 1 - cj.saturation), 1 + cj.saturation);
  const h = rng.uniform(-cj.hue, cj.hue);
  // torchvision applies the four adjustments in a random order each time.
  const order = rng.shuffle(['brightness', 'contrast', 'saturation', 'hue']);
  for (const op of order) {
    if (op === 'brightness' && cj.brightness > 0) adjustBrightness(img, b);
    else if (op === 'contrast' && cj.contrast > 0) adjustContrast(img, c);
    else if (op === 'saturation' && cj.saturation > 0) adjustSaturation(img, s);
    else if (op === 'hue' && cj.hue > 0) adjustHue(img, h);
  }
  return { order, brightness: b, contrast: c, saturation: s, hue: h };
}

/**
 * Make one view: RandomResizedCrop -> flip -> colour jitter -> grayscale -> blur -> solarize
 * (the MoCo v2 / BYOL order). `forceFlip` lets a caller share one flip decision between views
 * (ReSim flips both views together).
 */
/** Draws a view's crop; the default is one `sampleResizedCrop` (a method may redraw against its proposals). */
export type CropDraw = (rng: Rng, width: number, height: number, scale: readonly [number, number], ratio: readonly [number, number]) => CropParams;

export function augmentView(rng: Rng, src: RgbImage, spec: ViewSpec, forceFlip?: boolean, drawCrop: CropDraw = sampleResizedCrop): AugmentedView {
  const outW = spec.size, outH = spec.height ?? spec.size;
  // The flip is drawn even when forced, so a shared flip leaves the random stream as it was.
  const drawFlip = () => {
    const draw = rng.next() < (spec.flipP ?? 0.5);
    return forceFlip ?? draw;
  };
  const early = spec.flipBeforeCrop ? drawFlip() : undefined;
  const crop = drawCrop(rng, src.width, src.height, spec.scale, spec.ratio ?? [3 / 4, 4 / 3]);
  const flipped = early ?? drawFlip();
  // A crop drawn in the flipped image's frame is, in the original's, mirrored: columns [W − j − w, W − j).
  const original = spec.flipBeforeCrop && flipped ? { ...crop, j: src.width - crop.j - crop.w } : crop;
  const { image, geometry } = resizedCrop(src, original, outW, outH, spec.interpolation ?? 'bilinear', flipped);
  const applied: AppliedOps = { crop, flipped, grayscale: false, solarized: false };
  if (spec.colorJitter && rng.next() < spec.colorJitter.p) applied.jitter = applyColorJitter(rng, image, spec.colorJitter);
  if (spec.grayscaleP && rng.next() < spec.grayscaleP) {
    grayscaleInPlace(image);
    applied.grayscale = true;
  }
  if (spec.blur && rng.next() < spec.blur.p) {
    applied.blurSigma = rng.uniform(spec.blur.sigma[0], spec.blur.sigma[1]);
    gaussianBlurInPlace(image, applied.blurSigma);
  }
  if (spec.resizeBlur && rng.next() < spec.resizeBlur.p) {
    applied.resizeBlurFactor = spec.resizeBlur.factors[rng.int(0, spec.resizeBlur.factors.length)]!;
    resizeBlurInPlace(image, applied.resizeBlurFactor);
  }
  if (spec.solarizeP && rng.next() < spec.solarizeP) {
    solarizeInPlace(image);
    applied.solarized = true;
  }
  return { image, geometry, applied };
}

/** Down by `factor` and back up, bicubic, through 8-bit pixels (PIL's resize on an 8-bit image). */
export function resizeBlurInPlace(img: RgbF32, factor: number): void {
  const { width, height } = img;
  const toU8 = (f: RgbF32) => ({ width: f.width, height: f.height, data: Uint8Array.from(f.data, (v) => Math.min(255, Math.max(0, Math.round(v * 255)))) });
  const small = resampleRegion(toU8(img), [0, 0, width, height], Math.max(1, Math.floor(width / factor)), Math.max(1, Math.floor(height / factor)), 'bicubic');
  const back = resampleRegion(toU8(small), [0, 0, small.width, small.height], width, height, 'bicubic');
  for (let i = 0; i < back.data.length; i++) img.data[i] = Math.round(Math.min(1, Math.max(0, back.data[i]!)) * 255) / 255;
}

/** Several views of one image (two global views, multi-crop, ...), optionally with one shared flip. */
export function augmentViews(rng: Rng, src: RgbImage, specs: readonly ViewSpec[], options: { sharedFlip?: boolean; drawCrop?: CropDraw } = {}): AugmentedView[] {
  const shared = options.sharedFlip ? rng.next() < (specs[0]?.flipP ?? 0.5) : undefined;
  return specs.map((spec) => augmentView(rng, src, spec, shared, options.drawCrop));
}

/** Blur sigma scaled from the papers' 224-pixel views to `size`-pixel views. */
const sigmaFor = (size: number): [number, number] => [0.1 * (size / 224), 2.0 * (size / 224)];

/**
 * The recipes of the reference methods (see /work/shared/reference/methods.md), for views of
 * `size` pixels. Blur sigmas are scaled from 224-pixel views to `size`.
 */
export const VIEW_PRESETS = {
  /** MoCo v2 / DenseCL / ReSim / RegionCL: both views alike. */
  mocoV2: (size: number): ViewSpec[] => {
    const v: ViewSpec = {
      size,
      scale: [0.2, 1],
      colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 },
      grayscaleP: 0.2,
      blur: { p: 0.5, sigma: sigmaFor(size) },
      flipP: 0.5,
    };
    return [v, { ...v }];
  },
  /** BYOL colour recipe with PixPro's crop scale (0.08, 1): view 0 always blurred, view 1 rarely blurred and sometimes solarized. */
  pixpro: (size: number): ViewSpec[] => byolPair(size, [0.08, 1], 'bilinear'),
  /** SCRL: BYOL recipe, crop scale (0.2, 1), bicubic, its ResizeBlur (f ∈ {1.1, 1.2, 1.5}; p 1.0 / 0.1) instead of a Gaussian. */
  scrl: (size: number): ViewSpec[] =>
    byolPair(size, [0.2, 1], 'bicubic').map(({ blur, ...v }) => ({ ...v, resizeBlur: { p: blur!.p, factors: [1.1, 1.2, 1.5] } })),
  /** SwAV-style multi-crop: 2 global views plus `locals` small views. */
  multiCrop: (size: number, localSize: number, locals: number): ViewSpec[] => {
    const cj = { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2, p: 0.8 };
    const global: ViewSpec = { size, scale: [0.14, 1], colorJitter: cj, grayscaleP: 0.2, blur: { p: 0.5, sigma: sigmaFor(size) } };
    const local: ViewSpec = { size: localSize, scale: [0.05, 0.14], colorJitter: cj, grayscaleP: 0.2, blur: { p: 0.5, sigma: sigmaFor(localSize) } };
    return [global, { ...global }, ...Array.from({ length: locals }, () => ({ ...local }))];
  },
  /**
   * DINO's multi-crop (`DataAugmentationDINO`, also skyoux/scfs augmentations/dino_augmentation.py): 2 global views of
   * `size` and `locals` views of `localSize`, all bicubic, flip 0.5, CJ(0.4, 0.4, 0.2, 0.1) p 0.8, gray 0.2; global
   * view 0 always blurred, global view 1 blurred with p 0.1 and solarized with p 0.2, local views blurred with p 0.5.
   */
  dinoMultiCrop: (size: number, localSize: number, locals: number, globalScale: [number, number], localScale: [number, number]): ViewSpec[] => {
    const local: ViewSpec = { ...byolPair(localSize, localScale, 'bicubic')[0]!, blur: { p: 0.5, sigma: sigmaFor(localSize) } };
    return [...byolPair(size, globalScale, 'bicubic'), ...Array.from({ length: locals }, () => ({ ...local }))];
  },
  /**
   * SiameseIM (OpenGVLab/Siamese-Image-Modeling main_pretrain.py `DataAugmentationForSIM`): per view the flip FIRST,
   * then a bicubic RandomResizedCrop of scale (`cropMin`, 1) in the flipped frame; colour as BYOL: CJ(0.4, 0.4, 0.2, 0.1)
   * p 0.8, gray 0.2, view 0 always blurred, view 1 blurred with p 0.1 and solarized with p 0.2.
   */
  siameseim: (size: number, cropMin: number): ViewSpec[] => byolPair(size, [cropMin, 1], 'bicubic').map((v) => ({ ...v, flipBeforeCrop: true })),
} as const;

function byolPair(size: number, scale: [number, number], interpolation: Interpolation): ViewSpec[] {
  const base: ViewSpec = { size, scale, interpolation, flipP: 0.5, colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, p: 0.8 }, grayscaleP: 0.2 };
  return [
    { ...base, blur: { p: 1, sigma: sigmaFor(size) }, solarizeP: 0 },
    { ...base, blur: { p: 0.1, sigma: sigmaFor(size) }, solarizeP: 0.2 },
  ];
}

/** Per-sample augmentation randomness that does not depend on loading order (exact resumes). */
export function sampleRng(seed: number, epoch: number, key: string): Rng {
  return Rng.fromSeed('augment', seed, epoch, key);
}
