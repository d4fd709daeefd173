import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { BadInputError } from '../../../core/errors.js';
import type { SampleObject } from '../sample.js';
import { checkBox } from './coco.js';
import type { SourceFs } from './fs.js';
import { keyFromPath, type DatasetSource, type SourceItem } from './types.js';

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

/** Parse one VOC annotation XML, naming the file and element on any problem. */
export function parseVocXml(xml: string, file: string): VocAnnotation {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new BadInputError(`malformed XML at line ${valid.err.line}: ${valid.err.msg}`, file);
  const doc = parser.parse(xml) as { annotation?: Record<string, unknown> };
  const ann = doc.annotation;
  if (!ann) throw new BadInputError('no <annotation> root element', file);
  if (typeof ann.filename !== 'string' || !ann.filename.trim()) throw new BadInputError(`<filename> is missing or empty`, file);
  const size = ann.size as Record<string, unknown> | undefined;
  if (!size) throw new BadInputError('<size> is missing', file);
  const width = num(size.width, `${file}: <size><width>`);
  const height = num(size.height, `${file}: <size><height>`);
  const objects = ((ann.object as Record<string, unknown>[] | undefined) ?? []).map((o, i) => {
    const where = `${file}: <object>[${i}]`;
    if (typeof o.name !== 'string' || !o.name.trim()) throw new BadInputError('<name> is missing', where);
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
    const text = Buffer.from(await fs.read(fs.join(dir, f), 'split list')).toString('utf8');
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
      parsed.set(f.replace(/\.xml$/, ''), parseVocXml(Buffer.from(await fs.read(path, 'annotation')).toString('utf8'), file));
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
      const key = keyFromPath(id);
      if (seen.has(key)) {
        if (!skipBad) throw new BadInputError(`duplicate id ${id}`, listFile);
        problems.push({ split, origin: id, reason: `duplicate id ${id}` });
        continue;
      }
      seen.add(key);
      const imagePath = fs.join(root, 'JPEGImages', ann.filename);
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
          return { encoded: await fs.read(imagePath, 'image'), declaredSize: [ann.width, ann.height], objects };
        },
      });
    }
    splits[split] = items;
  }
  return { description: `Pascal VOC ${fs.label(root)}`, classes, splits, listingProblems: problems };
}
