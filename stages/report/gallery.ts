/**
 * The run report's gallery: a few evaluation images, each shown with its ground truth (boxes and
 * masks), the region proposals of the run's preset, and what every evaluated model predicted on
 * it (semantic segmentation, detections). Everything is inline SVG with PNG data URIs, so the page
 * renders offline from one file.
 *
 * Label maps are drawn as a coloured overlay (background dimmed, each class in its colour) at their
 * own resolution and stretched to the panel with `image-rendering: pixelated`, so a prediction's
 * pixels are shown as they are. Boxes are SVG rectangles with a <title> (class, score).
 */
import sharp from 'sharp';
import type { ArtifactStore } from '../../core/store/index.js';
import { getJson } from '../../core/store/index.js';
import { readShardFromStore } from '../../core/webdataset.js';
import { decodeSample, type DecodedSample } from '../data/sample.js';
import { resolveRecipe, type ProposalConfig } from '../proposals/config.js';
import { resizeImage } from '../proposals/image-io.js';
import { proposeOnPrepared, sampleRng } from '../proposals/propose.js';
import type { Box } from '../proposals/boxes.js';
import { escapeHtml as esc } from './svg.js';

/** One colour per class (index 0 = the first dataset class); background is never coloured. */
export const CLASS_COLOURS = ['#e6194b', '#3cb44b', '#ffe119', '#4363d8', '#f58231', '#911eb4', '#46f0f0', '#f032e6', '#bcf60c', '#fabebe', '#008080', '#e6beff', '#9a6324', '#800000', '#aaffc3', '#808000'];
/** Proposals are white with a dark edge: no class has that colour, and it shows on light and dark images. */
const PROPOSAL_COLOUR = '#ffffff';

export const classColour = (c: number): string => CLASS_COLOURS[((c % CLASS_COLOURS.length) + CLASS_COLOURS.length) % CLASS_COLOURS.length]!;

/** A model whose evaluation is shown: its column label and its evaluation's predictions.json. */
export interface GalleryModel {
  label: string;
  predictionsKey?: string;
}

export interface GalleryInput {
  dataset: { splits: Record<string, { shardKeys: string[]; samples: number }>; classes: string[] };
  evalSplit: string;
  /** The evaluation's square input side: predicted label maps and detection boxes are in its pixels. */
  evalImageSize: number;
  /** The run's proposal config (preset and overrides); null or `enabled: false`: no proposal panel. */
  proposals: (ProposalConfig & { enabled?: boolean }) | null;
  models: GalleryModel[];
  /** Images shown (the first of the evaluation split, in shard order). */
  count?: number;
  /** Panel width in CSS pixels. */
  panelSize?: number;
  /** Detections below this score are not drawn. */
  minScore?: number;
}

export interface GalleryPanel {
  kind: 'truth' | 'masks' | 'proposals' | 'semseg' | 'detections';
  title: string;
  svg: string;
}

export interface GalleryRow {
  key: string;
  width: number;
  height: number;
  panels: GalleryPanel[];
}

export interface Gallery {
  rows: GalleryRow[];
  classes: string[];
  /** What the gallery could not show and why (no proposals, a model without a task). */
  notes: string[];
}

interface SemsegPrediction {
  key: string;
  labels: string;
  size: number;
}
interface DetectionPrediction {
  key: string;
  detections: Array<{ bbox: [number, number, number, number]; category: string; score: number }>;
}
interface Predictions {
  semseg?: SemsegPrediction[];
  detection?: DetectionPrediction[];
}

async function firstSamples(store: ArtifactStore, shardKeys: string[], count: number): Promise<DecodedSample[]> {
  const out: DecodedSample[] = [];
  for (const shardKey of shardKeys) {
    for await (const raw of readShardFromStore(store, shardKey)) {
      out.push(await decodeSample(raw, `${store.url(shardKey)}#${raw.key}`));
      if (out.length >= count) return out;
    }
  }
  return out;
}

async function readPredictions(store: ArtifactStore, key: string | undefined): Promise<Predictions | null> {
  if (!key) return null;
  try {
    return await getJson<Predictions>(store, key);
  } catch {
    return null;
  }
}

async function pngUri(data: Uint8Array, width: number, height: number, channels: 3 | 4): Promise<string> {
  const png = await sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), { raw: { width, height, channels } }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

function hexRgb(hex: string): [number, number, number] {
  const n = Number.parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/**
 * RGBA overlay of a label map (0 = background, c + 1 = class c, 255 = ignore): background a dark
 * veil, classes in their colour, ignored pixels white and translucent.
 */
export function labelOverlay(labels: Uint8Array): Uint8Array {
  const out = new Uint8Array(labels.length * 4);
  for (let p = 0; p < labels.length; p++) {
    const v = labels[p]!;
    if (v === 0) out.set([0, 0, 0, 110], p * 4);
    else if (v === 255) out.set([255, 255, 255, 90], p * 4);
    else out.set([...hexRgb(classColour(v - 1)), 175], p * 4);
  }
  return out;
}

function rect(box: Box, sx: number, sy: number, colour: string, title: string, width = 2, dashed = false): string {
  const [x0, y0, x1, y1] = box;
  const tip = title ? `<title>${esc(title)}</title>` : '';
  return `<rect x="${(x0 * sx).toFixed(1)}" y="${(y0 * sy).toFixed(1)}" width="${Math.max(0, (x1 - x0) * sx).toFixed(1)}" height="${Math.max(0, (y1 - y0) * sy).toFixed(1)}" fill="none" stroke="${colour}" stroke-width="${width}"${dashed ? ' stroke-dasharray="4 2"' : ''}>${tip}</rect>`;
}

function panel(kind: GalleryPanel['kind'], title: string, w: number, h: number, layers: string[]): GalleryPanel {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" class="gallery-panel" data-kind="${kind}" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">${layers.join('')}</svg>`;
  return { kind, title, svg };
}

const imageLayer = (uri: string, w: number, h: number) => `<image href="${uri}" x="0" y="0" width="${w}" height="${h}" preserveAspectRatio="none" style="image-rendering:pixelated"/>`;

export async function buildGallery(store: ArtifactStore, input: GalleryInput): Promise<Gallery> {
  const classes = input.dataset.classes;
  const notes: string[] = [];
  const split = input.dataset.splits[input.evalSplit];
  if (!split) return { rows: [], classes, notes: [`the dataset has no split '${input.evalSplit}'`] };
  const samples = await firstSamples(store, split.shardKeys, input.count ?? 4);
  const size = input.panelSize ?? 140;
  const minScore = input.minScore ?? 0.3;
  const predictions = await Promise.all(input.models.map(async (m) => ({ label: m.label, p: await readPredictions(store, m.predictionsKey) })));
  const byKey = <T extends { key: string }>(list: T[] | undefined) => new Map((list ?? []).map((x) => [x.key, x]));
  const semseg = predictions.map(({ label, p }) => ({ label, map: byKey(p?.semseg) }));
  const detection = predictions.map(({ label, p }) => ({ label, map: byKey(p?.detection) }));
  for (const { label, map } of semseg) if (map.size === 0) notes.push(`${label}: no semantic-segmentation predictions (task not run)`);
  const anyDetection = detection.some((d) => d.map.size > 0);

  const proposalsOn = input.proposals !== null && input.proposals.enabled !== false;
  const recipe = proposalsOn ? resolveRecipe(input.proposals!) : null;
  if (!proposalsOn) notes.push('proposals are disabled in this run');
  else notes.push(`proposals: preset '${input.proposals!.preset}' computed on these evaluation images with the run's recipe and seed (the proposal stage itself runs on the training split)`);

  const rows: GalleryRow[] = [];
  for (const s of samples) {
    const { width, height } = s.image;
    const w = size;
    const h = Math.max(1, Math.round((size * height) / width));
    const sx = w / width;
    const sy = h / height;
    const base = await pngUri(s.image.data, width, height, 3);
    const panels: GalleryPanel[] = [];
    const objects = s.annotation.objects.map((o, i) => ({ label: s.labels[i]!, box: Array.from(s.boxes.subarray(i * 4, i * 4 + 4)) as Box, area: o.area }));
    panels.push(panel('truth', 'image and ground-truth boxes', w, h, [imageLayer(base, w, h), ...objects.map((o) => rect(o.box, sx, sy, classColour(o.label), `${classes[o.label] ?? o.label} (area ${o.area})`))]));
    if (s.semantic) {
      panels.push(panel('masks', 'ground-truth masks', w, h, [imageLayer(base, w, h), imageLayer(await pngUri(labelOverlay(s.semantic), width, height, 4), w, h)]));
    }
    if (recipe) {
      const rgb = { ...s.image, channels: 3 as const };
      const prepared = recipe.resize ? await resizeImage(rgb, recipe.resize.width, recipe.resize.height, recipe.resize.kernel) : rgb;
      const boxes = proposeOnPrepared(prepared, width, height, recipe, sampleRng(input.proposals!.seed ?? 0, s.key)).boxes;
      const shown = boxes.slice(0, 30);
      panels.push(
        panel('proposals', `proposals (${input.proposals!.preset}): ${shown.length}${boxes.length > shown.length ? ` of ${boxes.length}` : ''}`, w, h, [
          imageLayer(base, w, h),
          ...shown.map((b) => rect(b, sx, sy, '#000000', '', 2.6)),
          ...shown.map((b, i) => rect(b, sx, sy, PROPOSAL_COLOUR, `proposal ${i + 1}: [${b.map((v) => v.toFixed(1)).join(', ')}]`, 1.2)),
        ]),
      );
    }
    for (const { label, map } of semseg) {
      const pred = map.get(s.key);
      if (!pred) continue;
      const labels = new Uint8Array(Buffer.from(pred.labels, 'base64'));
      if (labels.length !== pred.size * pred.size) continue;
      const layers = [imageLayer(base, w, h), imageLayer(await pngUri(labelOverlay(labels), pred.size, pred.size, 4), w, h)];
      const dets = detection.find((d) => d.label === label)?.map.get(s.key);
      if (dets) layers.push(...detectionRects(dets, classes, input.evalImageSize, w, h, minScore));
      panels.push(panel('semseg', `${label}: segmentation${dets ? ' and detections' : ''}`, w, h, layers));
    }
    if (anyDetection) {
      for (const { label, map } of detection) {
        const dets = map.get(s.key);
        if (!dets || semseg.find((x) => x.label === label)?.map.has(s.key)) continue;
        panels.push(panel('detections', `${label}: detections`, w, h, [imageLayer(base, w, h), ...detectionRects(dets, classes, input.evalImageSize, w, h, minScore)]));
      }
    }
    rows.push({ key: s.key, width, height, panels });
  }
  return { rows, classes, notes };
}

/** Detection boxes (xywh in the evaluation's `evalSize` square) scaled to the panel. */
function detectionRects(dets: DetectionPrediction, classes: string[], evalSize: number, w: number, h: number, minScore: number): string[] {
  return dets.detections
    .filter((d) => d.score >= minScore)
    .slice(0, 10)
    .map((d) => {
      const c = classes.indexOf(d.category);
      const [x, y, bw, bh] = d.bbox;
      return rect([x, y, x + bw, y + bh], w / evalSize, h / evalSize, classColour(c), `${d.category} ${d.score.toFixed(2)}`, 2, true);
    });
}

/** The gallery section: one row per image, a class legend, and what was left out. */
export function galleryHtml(g: Gallery): string {
  if (g.rows.length === 0) return `<p>No gallery: ${esc(g.notes.join('; ') || 'no evaluation images')}.</p>`;
  const legend = g.classes
    .map((c, i) => `<span class="swatch"><i style="background:${classColour(i)}"></i>${esc(c)}</span>`)
    .join(' ');
  const rows = g.rows
    .map(
      (r) =>
        `<div class="gallery-row" data-key="${esc(r.key)}"><div class="gallery-key">${esc(r.key)} (${r.width}×${r.height})</div>${r.panels
          .map((p) => `<figure>${p.svg}<figcaption>${esc(p.title)}</figcaption></figure>`)
          .join('')}</div>`,
    )
    .join('\n');
  return `<div id="gallery">
<p class="legend">${legend} <span class="swatch"><i style="background:${PROPOSAL_COLOUR};border-color:#000"></i>proposal</span> <span class="swatch"><i style="background:#000;opacity:.45"></i>background</span>. Solid boxes: ground truth; dashed: detections.</p>
${rows}
${g.notes.length ? `<p class="note">${g.notes.map(esc).join('<br>')}</p>` : ''}
</div>`;
}

export const GALLERY_CSS = `#gallery .gallery-row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start;margin:0 0 12px}
#gallery .gallery-key{flex-basis:100%;font-size:12px;color:#555}
#gallery figure{margin:0;width:min-content}#gallery figcaption{font-size:11px;color:#444;max-width:140px}
#gallery svg{display:block;background:#eee}
.swatch{white-space:nowrap;margin-right:8px}.swatch i{display:inline-block;width:11px;height:11px;margin-right:3px;vertical-align:-1px;border:1px solid #0003}
.note{font-size:12px;color:#666}`;
