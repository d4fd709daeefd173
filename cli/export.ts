/**
 * `densepipe export RUN`: a run's backbone as a self-describing safetensors file plus a Python loader
 * that rebuilds the module from torchvision (or timm) and loads it with strict=True. A ViT has timm
 * names and a timm loader (timm's VisionTransformer); a ResNet loads into either library.
 */
import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { BadInputError } from '../core/errors.js';
import { RESNET_PRESETS, type ResNetPreset } from '../stages/engine/resnet.js';
import { VIT_PRESETS, type VitPreset } from '../stages/engine/vit.js';
import { decodeSafetensors, encodeSafetensors } from '../stages/engine/safetensors.js';
import { backboneMetadata, loaderSnippet, readBackboneCard, type BackboneCard, type LoaderFormat } from '../stages/pretrain/backbone-card.js';

export interface ExportedBackbone {
  weights: string;
  loader: string;
  /** The loader's library (the requested one, else the family's: torchvision for a ResNet, timm for a ViT). */
  format: LoaderFormat;
  card: BackboneCard;
  /** True when the file predates backbone cards and its metadata was filled in from the run. */
  cardAdded: boolean;
}

/** The loader's file name next to `weights`: `x.safetensors` -> `x_load.py`. */
export function loaderPathFor(weights: string): string {
  return `${weights.replace(/\.safetensors$/, '')}_load.py`;
}

/**
 * Write `bytes` to `out` and the loader beside it. A file without a card (written before cards
 * existed) gets one from `fallback`: what the run's config says about the backbone.
 */
export function exportBackboneFiles(
  bytes: Uint8Array,
  options: { out: string; format?: LoaderFormat; source: string; fallback: { arch: string; method: string; steps: number; imageSize?: number } },
): ExportedBackbone {
  const decoded = decodeSafetensors(new Uint8Array(bytes), options.source);
  let card = readBackboneCard(decoded.metadata);
  let body = bytes;
  const cardAdded = card === null;
  if (!card) {
    const { arch } = options.fallback;
    if (!Object.hasOwn(RESNET_PRESETS, arch) && !Object.hasOwn(VIT_PRESETS, arch)) {
      throw new BadInputError(`backbone preset '${arch}' is not one of ${[...Object.keys(RESNET_PRESETS), ...Object.keys(VIT_PRESETS)].join(', ')}`, options.source);
    }
    const metadata = { ...decoded.metadata, format: decoded.metadata.format ?? 'pt', ...backboneMetadata({ ...options.fallback, arch: arch as ResNetPreset | VitPreset }) };
    body = encodeSafetensors(decoded.tensors, metadata);
    card = readBackboneCard(metadata)!;
  }
  const format = options.format ?? (card.architecture.family === 'vit' ? 'timm' : 'torchvision');
  const snippet = loaderSnippet(card, format, basename(options.out));
  const loader = loaderPathFor(options.out);
  writeFileSync(options.out, body);
  writeFileSync(loader, snippet);
  return { weights: options.out, loader, format, card, cardAdded };
}
