import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { BadInputError } from '../../../core/errors.js';
import type { SampleObject } from '../sample.js';
import { checkBox } from './coco.js';
import type { SourceFs } from './fs.js';
import { sampleKeyFromPath, type DatasetSource, type SourceItem } from './types.js';

interface VocObject {
  name: string;
  /** xyxy pixel edges (VOC's 1-based inclusive corners converted). */
  bbox: [number, number, number, number];
  difficult: boolean;
}

interface VocAnnotation {
  file: string;
  filename: string;
  width: number;
  height: number;
  objects: VocObject[];
}

const parser = new XMLParser({ ignoreAttributes: true, parseTagValue: false, isArray: (name) => name === 'object' });

function num(value: unknown, where: string): number {
  const n = typeof value === 'string' ? Number(value.trim()) : NaN;
  if (!Number.isFinite(n)) throw new BadInputError(`expected a number, got ${JSON.stringify(value)}`, where);
  return n;
}

function positiveInt(value: unknown, where: string): number {
  const n = num(value, where);
  if (!Number.isInteger(n) || n <= 0) throw new BadInputError(`expected a positive whole number of pixels, got ${JSON.stringify(value)}`, where);
  return n;
}

/**
 * Parse one VOC annotation XML, naming the file and element on any problem. A DOCTYPE is refused
 * outright: VOC files have none, and entity declarations are how XML bombs and external-entity
 * reads are written.
 */
export function parseVocXml(xml: string, file: string): VocAnnotation {
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new BadInputError('a DOCTYPE or ENTITY declaration is not allowed in a VOC annotation (entities can expand without bound or read other files)', file);
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new BadInputError(`malformed XML at line ${valid.err.line}: ${valid.err.msg}`, file);
  let doc: { annotation?: unknown };
  try {
    doc = parser.parse(xml) as { annotation?: unknown };
  } catch (err) {
    throw new BadInputError(`cannot parse XML (${(err as Error).message})`, file);
  }
  const ann = doc.annotation as Record<string, unknown> | undefined;
  if (!ann || typeof ann !== 'object') throw new BadInputError('no <annotation> root element', file);
  if (typeof ann.filename !== 'string' || !ann.filename.trim()) throw new BadInputError(`<filename> is missing, empty or repeated`, `${file}: <filename>`);
  const size = ann.size as Record<string, unknown> | undefined;
  if (!size || typeof size !== 'object') throw new BadInputError('<size> is missing', `${file}: <size>`);
  const width = positiveInt(size.width, `${file}: <size><width>`);
  const height = positiveInt(size.height, `${file}: <size><height>`);
  const objects = ((ann.object as Record<string, unknown>[] | undefined) ?? []).map((o, i) => {
    const where = `${file}: <object>[${i}]`;
    if (!o || typeof o !== 'object' || typeof o.name !== 'string' || !o.name.trim()) throw new BadInputError('<name> is missing', where);
    const b = o.bndbox as Record<string, unknown> | undefined;
    if (!b) throw new BadInputError('<bndbox> is missing', where);
    // VOC corners are 1-based and inclusive: pixel columns xmin..xmax are covered.
    const raw: [number, number, number, number] = [
      num(b.xmin, `${where} <xmin>`) - 1,
      num(b.ymin, `${where} <ymin>`) - 1,
      num(b.xmax, `${where} <xmax>`),
      num(b.ymax, `${where} <ymax>`),
    ];
    return { name: o.name.trim(), bbox: checkBox(raw, width, height, `${where} <bndbox>`), difficult: String(o.difficult ?? '0').trim() === '1' };
  });
  return { file, filename: ann.filename.trim(), width, height, objects };
}

/** Splits from ImageSets/Main/{train,val,test}.txt when present; otherwise every annotation is 'train'. */
async function vocSplits(fs: SourceFs, root: string, allIds: string[]): Promise<Record<string, string[]>> {
  const dir = fs.join(root, 'ImageSets', 'Main');
  const lists = (await fs.kind(dir)) === 'dir' ? (await fs.children(dir)).filter((f) => /^(train|val|test)\.txt$/.test(f)) : [];
  if (lists.length === 0) return { train: allIds };
  const out: Record<string, string[]> = {};
  for (const f of lists) {
    const text = Buffer.from(await fs.read(fs.join(dir, f), 'split list', root)).toString('utf8');
    out[f.replace(/\.txt$/, '')] = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  }
  return out;
}

/** Pascal VOC layout: Annotations/*.xml, JPEGImages/<filename>, optional ImageSets/Main split lists. */
export async function vocSource(fs: SourceFs, root: string, skipBad: boolean): Promise<DatasetSource> {
  const annotationsDir = fs.join(root, 'Annotations');
  if ((await fs.kind(annotationsDir)) !== 'dir') throw new BadInputError(`directory ${JSON.stringify(fs.label(annotationsDir))} does not exist`, 'source.root (Annotations/)');
  const xmlFiles = (await fs.children(annotationsDir)).filter((f) => f.endsWith('.xml'));
  const problems: DatasetSource['listingProblems'] = [];
  const parsed = new Map<string, VocAnnotation>();
  for (const f of xmlFiles) {
    const path = fs.join(annotationsDir, f);
    const file = fs.label(path);
    try {
      parsed.set(f.replace(/\.xml$/, ''), parseVocXml(Buffer.from(await fs.read(path, 'annotation', root)).toString('utf8'), file));
    } catch (err) {
      if (!(err instanceof BadInputError) || !skipBad) throw err;
      problems.push({ split: '*', origin: file, reason: err.message });
    }
  }
  const classes = [...new Set([...parsed.values()].flatMap((a) => a.objects.map((o) => o.name)))].sort();
  const labelOf = new Map(classes.map((c, i) => [c, i]));
  const splits: Record<string, SourceItem[]> = {};
  for (const [split, ids] of Object.entries(await vocSplits(fs, root, [...parsed.keys()]))) {
    const listFile = fs.label(fs.join(root, 'ImageSets', 'Main', `${split}.txt`));
    const items: SourceItem[] = [];
    const seen = new Set<string>();
    for (const id of ids) {
      const ann = parsed.get(id);
      if (!ann) {
        const reason = `listed in ImageSets/Main/${split}.txt but Annotations/${id}.xml is missing or bad`;
        if (!skipBad) throw new BadInputError(reason, listFile);
        problems.push({ split, origin: id, reason });
        continue;
      }
      let key: string;
      let imagePath: string;
      try {
        imagePath = fs.member(fs.join(root, 'JPEGImages'), ann.filename, `${ann.file}: <filename>`);
        key = sampleKeyFromPath(id, `${ann.file} (sample id ${id})`);
      } catch (err) {
        if (!(err instanceof BadInputError) || !skipBad) throw err;
        problems.push({ split, origin: ann.file, reason: err.message });
        continue;
      }
      if (seen.has(key)) {
        if (!skipBad) throw new BadInputError(`duplicate id ${id}`, listFile);
        problems.push({ split, origin: id, reason: `duplicate id ${id}` });
        continue;
      }
      seen.add(key);
      items.push({
        key,
        origin: fs.label(imagePath),
        async load() {
          const objects: SampleObject[] = ann.objects.map((o) => ({
            label: labelOf.get(o.name)!,
            bbox: o.bbox,
            area: (o.bbox[2] - o.bbox[0]) * (o.bbox[3] - o.bbox[1]),
            ...(o.difficult ? { difficult: true } : {}),
          }));
          return { encoded: await fs.read(imagePath, 'image', root), declaredSize: [ann.width, ann.height], declaredBy: `${ann.file}: <size>`, objects };
        },
      });
    }
    splits[split] = items;
  }
  return { description: `Pascal VOC ${fs.label(root)}`, classes, splits, listingProblems: problems };
}
