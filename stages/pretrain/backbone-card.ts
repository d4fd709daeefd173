/**
 * What an exported backbone says about itself: the safetensors `__metadata__` every pretraining and
 * supervised stage writes (architecture, input normalisation, method), and the short Python loader
 * that rebuilds the matching module from torchvision or timm and loads the file with strict=True.
 *
 * Metadata keys (all strings, as safetensors requires):
 *   schema        'densepipe.backbone/v1'
 *   method, arch, steps
 *   architecture  JSON: family, block, depth, layers, widths (planes per stage), outChannels, stem
 *                 {kind, conv, maxpool}, pooling, head, outputStride
 *   input         JSON: channels 'RGB', range [0, 1], mean, std, layout 'NCHW', imageSize (trained at)
 *   torchvision   one-line recipe for people reading the header
 */
import { RESNET_PRESETS, type ResNetConfig, type ResNetPreset } from '../engine/resnet.js';
import { BadInputError } from '../../core/errors.js';
import { VIT_PRESETS, type VitConfig, type VitPreset } from '../engine/vit.js';
import { IMAGENET_MEAN, IMAGENET_STD } from './feeder.js';

export const BACKBONE_CARD_SCHEMA = 'densepipe.backbone/v1';
export const LOADER_FORMATS = ['torchvision', 'timm'] as const;
export type LoaderFormat = (typeof LOADER_FORMATS)[number];

/** A Vision Transformer (timm names: `patch_embed.proj.weight`, `blocks.{i}.attn.qkv.weight`, `norm.weight`). */
export interface VitArchitecture {
  family: 'vit';
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  /** The image size the position embedding was built for (the run's image size). */
  imageSize: number;
  pooling: 'cls';
  head: 'none';
}

export function describeVit(config: VitConfig): VitArchitecture {
  return { family: 'vit', patchSize: config.patchSize, embedDim: config.embedDim, depth: config.depth, numHeads: config.numHeads, mlpRatio: config.mlpRatio, imageSize: config.imageSize, pooling: 'cls', head: 'none' };
}

export interface BackboneArchitecture {
  family: 'resnet';
  block: ResNetConfig['block'];
  /** Weighted layers, as in the model's name (18, 50). */
  depth: number;
  layers: number[];
  /** Planes of each stage (the block's output is planes × 4 for bottleneck blocks). */
  widths: number[];
  outChannels: number;
  stem: { kind: ResNetConfig['stem']; conv: string; maxpool: boolean };
  pooling: 'global-average';
  head: 'none';
  outputStride: number;
}

export interface BackboneInput {
  channels: 'RGB';
  range: [number, number];
  mean: number[];
  std: number[];
  layout: 'NCHW';
  imageSize?: number;
}

export interface BackboneCard {
  schema: typeof BACKBONE_CARD_SCHEMA;
  method: string;
  arch: string;
  steps: number;
  architecture: BackboneArchitecture | VitArchitecture;
  input: BackboneInput;
}

export function describeArchitecture(config: Pick<ResNetConfig, 'block' | 'layers' | 'baseWidth' | 'stem'>): BackboneArchitecture {
  const expansion = config.block === 'bottleneck' ? 4 : 1;
  const widths = config.layers.map((_, s) => config.baseWidth * 2 ** s);
  const imagenet = config.stem === 'imagenet';
  return {
    family: 'resnet',
    block: config.block,
    depth: 2 + config.layers.reduce((a, b) => a + b, 0) * (config.block === 'bottleneck' ? 3 : 2),
    layers: [...config.layers],
    widths,
    outChannels: widths.at(-1)! * expansion,
    stem: imagenet ? { kind: 'imagenet', conv: '7x7 stride 2 padding 3', maxpool: true } : { kind: 'cifar', conv: '3x3 stride 1 padding 1', maxpool: false },
    pooling: 'global-average',
    head: 'none',
    outputStride: (imagenet ? 4 : 1) * 2 ** (config.layers.length - 1),
  };
}

/** The `__metadata__` of a backbone file (besides `format: pt`, which the exporter adds). */
export function backboneMetadata(o: { arch: ResNetPreset | VitPreset; method: string; steps: number; imageSize?: number }): Record<string, string> {
  const input: BackboneInput = { channels: 'RGB', range: [0, 1], mean: [...IMAGENET_MEAN], std: [...IMAGENET_STD], layout: 'NCHW', ...(o.imageSize ? { imageSize: o.imageSize } : {}) };
  if (o.arch in VIT_PRESETS) {
    const vit = describeVit({ ...VIT_PRESETS[o.arch as VitPreset], ...(o.imageSize ? { imageSize: o.imageSize } : {}) });
    return {
      schema: BACKBONE_CARD_SCHEMA,
      method: o.method,
      arch: o.arch,
      steps: String(o.steps),
      architecture: JSON.stringify(vit),
      input: JSON.stringify(input),
      timm: `VisionTransformer(img_size=${vit.imageSize}, patch_size=${vit.patchSize}, embed_dim=${vit.embedDim}, depth=${vit.depth}, num_heads=${vit.numHeads}, mlp_ratio=${vit.mlpRatio}, num_classes=0) with a fixed 2-D sin-cos pos_embed (MAE); timm state_dict names`,
    };
  }
  const architecture = describeArchitecture(RESNET_PRESETS[o.arch as ResNetPreset]);
  const a = architecture;
  const recipe =
    `ResNet(${a.block === 'basic' ? 'BasicBlock' : 'Bottleneck'}, [${a.layers.join(', ')}]) with widths ${a.widths.join('/')}, ` +
    `conv1 ${a.stem.conv}${a.stem.maxpool ? '' : ', maxpool = Identity'}, fc = Identity (global-average-pooled ${a.outChannels}-d features); ` +
    `densepipe export RUN --format torchvision writes the loader`;
  return {
    schema: BACKBONE_CARD_SCHEMA,
    method: o.method,
    arch: o.arch,
    steps: String(o.steps),
    architecture: JSON.stringify(architecture),
    input: JSON.stringify(input),
    torchvision: recipe,
  };
}

/** The card of a file's metadata, or null for a file written before cards existed (or by someone else). */
export function readBackboneCard(metadata: Record<string, string>): BackboneCard | null {
  if (metadata.schema !== BACKBONE_CARD_SCHEMA || !metadata.architecture || !metadata.input) return null;
  return {
    schema: BACKBONE_CARD_SCHEMA,
    method: metadata.method ?? 'unknown',
    arch: metadata.arch ?? 'unknown',
    steps: Number(metadata.steps ?? 0),
    architecture: JSON.parse(metadata.architecture) as BackboneArchitecture | VitArchitecture,
    input: JSON.parse(metadata.input) as BackboneInput,
  };
}

/** True when torchvision's own constructor (resnet18(), resnet50(), ...) already has this shape. */
function torchvisionName(a: BackboneArchitecture): string | null {
  const standard: Record<string, string> = { 'basic:2,2,2,2': 'resnet18', 'basic:3,4,6,3': 'resnet34', 'bottleneck:3,4,6,3': 'resnet50', 'bottleneck:3,4,23,3': 'resnet101', 'bottleneck:3,8,36,3': 'resnet152' };
  const name = standard[`${a.block}:${a.layers.join(',')}`];
  return name && a.widths[0] === 64 && a.stem.kind === 'imagenet' ? name : null;
}

/**
 * The loader of a ViT file: timm's `VisionTransformer` (the class MAE, MoCo v3 and SiameseIM build
 * their encoders on) with the file's configuration, LayerNorm eps 1e-6, qkv bias, no head
 * (num_classes=0: net(x) is the class token after the final norm), loaded with strict=True; the
 * file's pos_embed is the fixed 2-D sin-cos embedding the run trained with, loaded into timm's
 * (learnable) pos_embed as is. torchvision's VisionTransformer names its tensors differently
 * (`encoder.layers.encoder_layer_{i}...`), so a ViT exports for timm only.
 */
function vitLoaderSnippet(card: BackboneCard, a: VitArchitecture, format: LoaderFormat, fileName: string): string {
  if (format !== 'timm') throw new BadInputError(`${card.arch} is a ViT with timm state_dict names: export it with --format timm (torchvision's VisionTransformer names its tensors differently)`, '--format');
  const size = a.imageSize;
  const grid = size / a.patchSize;
  return loaderScript({
    card,
    fileName,
    size,
    outDim: a.embedDim,
    doc: `the ${card.method} backbone of densepipe (preset ${card.arch}, ${card.steps} steps) as a timm VisionTransformer.

Input: ${card.input.channels} in [${card.input.range.join(', ')}], normalised per channel with mean=${tuple(card.input.mean)} std=${tuple(card.input.std)},
${card.input.layout}, ${size}x${size} (the size the position embedding was built for). Output of net(x): the ${a.embedDim}-d class token
after the final norm; net.forward_features(x)[:, 1:] are the ${grid}x${grid} patch tokens (row-major), the dense map.`,
    stdlib: ['from functools import partial'],
    imports: 'from timm.models.vision_transformer import VisionTransformer',
    build: [
      `    # densepipe preset ${card.arch} at ${size} px: patch ${a.patchSize}, width ${a.embedDim}, depth ${a.depth}, ${a.numHeads} heads, MLP ratio ${a.mlpRatio}`,
      `    return VisionTransformer(img_size=${size}, patch_size=${a.patchSize}, embed_dim=${a.embedDim}, depth=${a.depth}, num_heads=${a.numHeads}, mlp_ratio=${a.mlpRatio},`,
      `                             qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0)`,
    ],
  });
}

const tuple = (xs: number[]) => `(${xs.join(', ')}${xs.length === 1 ? ',' : ''})`;

/**
 * A self-contained Python loader for `fileName`: `load_backbone(path)` returns the module in eval mode,
 * weights loaded with strict=True. Reads the file with the `safetensors` package when installed, else
 * with a few lines of plain Python (the format is a JSON header and raw little-endian tensors).
 */
export function loaderSnippet(card: BackboneCard, format: LoaderFormat, fileName: string): string {
  const a = card.architecture;
  if (a.family === 'vit') return vitLoaderSnippet(card, a, format, fileName);
  const block = a.block === 'basic' ? 'BasicBlock' : 'Bottleneck';
  const stages = [0, 1, 2, 3];
  const padded = stages.map((s) => a.layers[s] ?? 1);
  const stem = a.stem.kind === 'imagenet' ? `nn.Conv2d(3, ${a.widths[0]}, kernel_size=7, stride=2, padding=3, bias=False)` : `nn.Conv2d(3, ${a.widths[0]}, kernel_size=3, stride=1, padding=1, bias=False)`;
  const custom = [
    `    # densepipe preset ${card.arch}: widths ${a.widths.join('/')}, conv1 ${a.stem.conv}${a.stem.maxpool ? '' : ', no max-pool'}`,
    `    net.conv1 = ${stem}`,
    `    net.bn1 = nn.BatchNorm2d(${a.widths[0]})`,
    ...(a.stem.maxpool ? [] : ['    net.maxpool = nn.Identity()']),
  ];
  const missing = stages.filter((s) => s >= a.layers.length).map((s) => `    net.layer${s + 1} = nn.Identity()  # the preset has ${a.layers.length} stages`);
  let imports: string;
  let build: string[];
  if (format === 'torchvision') {
    const name = torchvisionName(a);
    imports = `from torchvision.models import resnet\nfrom torchvision.models.resnet import ResNet, ${block}`;
    build = name
      ? [`    net = resnet.${name}()  # torchvision's ${name}, random init`]
      : [
          `    net = ResNet(${block}, [${padded.join(', ')}])  # torchvision's module tree, so every state_dict name matches`,
          ...custom,
          `    net.inplanes = ${a.widths[0]}`,
          ...a.layers.map((n, s) => `    net.layer${s + 1} = net._make_layer(${block}, ${a.widths[s]}, ${n}${s > 0 ? ', stride=2' : ''})`),
          ...missing,
        ];
    build.push('    net.fc = nn.Identity()  # the file holds the backbone only: net(x) is the pooled feature');
  } else {
    const name = torchvisionName(a);
    imports = `import timm\nfrom timm.models.resnet import ResNet, ${block}`;
    const w0 = a.widths[0]!;
    const widths4 = stages.map((s) => w0 * 2 ** s);
    const firstBlock =
      a.block === 'basic'
        ? `BasicBlock(${w0}, ${w0})`
        : `Bottleneck(${w0}, ${w0}, downsample=nn.Sequential(nn.Conv2d(${w0}, ${4 * w0}, 1, bias=False), nn.BatchNorm2d(${4 * w0})))`;
    build = name
      ? [`    net = timm.create_model('${name}', pretrained=False, num_classes=0)  # fc = Identity: net(x) is the pooled feature`]
      : [
          `    net = ResNet(${block}, [${padded.join(', ')}], channels=${tuple(widths4)}, num_classes=0)  # timm's module tree (fc = Identity), state_dict names as torchvision's`,
          ...custom,
          ...(w0 !== 64 ? [`    net.layer1[0] = ${firstBlock}  # timm's stem is 64 wide: the first block again, for a ${w0}-wide stem`] : []),
          ...missing,
          `    net.num_features = ${a.outChannels}`,
        ];
  }
  const size = card.input.imageSize ?? 224;
  return loaderScript({
    card,
    fileName,
    size,
    outDim: a.outChannels,
    doc: `the ${card.method} backbone of densepipe (preset ${card.arch}, ${card.steps} steps) as a ${format} ResNet-${a.depth}.

Input: ${card.input.channels} in [${card.input.range.join(', ')}], normalised per channel with mean=${tuple(card.input.mean)} std=${tuple(card.input.std)},
${card.input.layout}${card.input.imageSize ? `, trained at ${card.input.imageSize}x${card.input.imageSize}` : ''}. Output of net(x): the global-average-pooled ${a.outChannels}-d feature;
the dense C5 map (stride ${a.outputStride}) is nn.Sequential(*list(net.children())[:-2])(x)${format === 'timm' ? ' or net.forward_features(x)' : ''}.`,
    stdlib: [],
    imports,
    build: [...build, '    return net'],
  });
}

/** The loader script of either family: its docstring, imports, the safetensors reader, `build_backbone` (the family's body), `load_backbone` (strict=True) and a smoke test. */
function loaderScript(o: { card: BackboneCard; fileName: string; size: number; outDim: number; doc: string; stdlib: string[]; imports: string; build: string[] }): string {
  return `"""Load ${o.fileName}: ${o.doc}
"""
import json
import os
import struct
${o.stdlib.map((l) => `${l}\n`).join('')}
import torch
from torch import nn
${o.imports}

MEAN = ${tuple(o.card.input.mean)}
STD = ${tuple(o.card.input.std)}


def read_safetensors(path):
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:
        with open(path, 'rb') as f:
            header = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
            data = f.read()
        dtypes = {'F32': torch.float32, 'I64': torch.int64, 'I32': torch.int32}
        return {name: torch.frombuffer(bytearray(data[t['data_offsets'][0]:t['data_offsets'][1]]), dtype=dtypes[t['dtype']]).reshape(t['shape'])
                for name, t in header.items() if name != '__metadata__'}


def build_backbone():
${o.build.join('\n')}


def load_backbone(path=os.path.join(os.path.dirname(os.path.abspath(__file__)), ${JSON.stringify(o.fileName)})):
    net = build_backbone()
    net.load_state_dict(read_safetensors(path), strict=True)
    return net.eval()


if __name__ == '__main__':
    net = load_backbone()
    x = (torch.rand(2, 3, ${o.size}, ${o.size}) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    print(net(x).shape)  # torch.Size([2, ${o.outDim}])
`;
}
