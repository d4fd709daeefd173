/**
 * What the registry says about each method, in words: the rows of `densepipe methods`, of the docs index
 * (docs/methods/README.md, written by scripts/methods-index.ts and checked by test/methods/registry.test.ts)
 * and of the zoo benchmark's tables. Everything comes from the modules; nothing here names a method.
 */
import type { z } from 'zod';
import type { MethodModule } from './contract.js';
import { METHOD_NAMES, METHODS } from '../index.js';

export interface ArgumentRow {
  name: string;
  /** The default as JSON, or `backbone width` style prose for optional ones. */
  default: string;
  description: string;
}

/** One argument's default and description, through zod's default/optional/prefault wrappers. */
function describeArgument(name: string, schema: z.ZodType): ArgumentRow {
  let node = schema as unknown as { description?: string; def: { type: string; defaultValue?: unknown; innerType?: unknown } };
  let description = node.description ?? '';
  let defaultValue: unknown;
  let optional = false;
  while (node.def.type === 'default' || node.def.type === 'optional' || node.def.type === 'prefault') {
    if (node.def.type === 'optional') optional = true;
    else defaultValue = node.def.defaultValue;
    node = node.def.innerType as typeof node;
    description ||= node.description ?? '';
  }
  return { name, default: defaultValue !== undefined ? JSON.stringify(defaultValue) : optional ? '-' : '(required)', description };
}

export function argumentRows(module: MethodModule): ArgumentRow[] {
  return Object.entries(module.args.shape).map(([name, schema]) => describeArgument(name, schema as z.ZodType));
}

/** What a method reads per step, in a few words: "2 views (64 px), crop geometry, proposal boxes". */
export function consumesSummary(module: MethodModule, imageSize = 64): string {
  const views = module.consumes.views(imageSize, module.args.parse({}));
  const sizes = [...new Set(views.map((v) => v.size))].join('/');
  const parts = [`${views.length} views (${sizes} px at imageSize ${imageSize})`];
  if (module.consumes.sharedFlip) parts.push('one shared flip');
  if (module.consumes.geometry) parts.push('crop geometry');
  if (module.consumes.proposals) parts.push(module.consumes.proposals.kind === 'regions' ? 'region masks' : 'proposal boxes');
  if (module.consumes.labels) parts.push('labels');
  return parts.join(', ');
}

export function optimizerSummary(module: MethodModule): string {
  const o = module.optimizer;
  return `${o.kind.toUpperCase()} lr ${o.baseLr} @256, ${o.kind === 'adamw' ? 'β1' : 'momentum'} ${o.momentum}${o.beta2 !== undefined ? `, β2 ${o.beta2}` : ''}, wd ${o.weightDecay}${o.warmupFraction ? `, warm-up ${+(o.warmupFraction * 100).toFixed(1)} %` : ''}, ${o.schedule ?? 'cosine'}`;
}

const cell = (s: string) => s.replace(/\|/g, '\\|');

/** docs/methods/README.md, generated from the registry. */
export function methodsIndexMarkdown(): string {
  const lines = [
    '# Methods',
    '',
    '<!-- Generated from the method registry (stages/methods/index.ts) by `npx tsx scripts/methods-index.ts`; test/methods/registry.test.ts fails when it is stale. -->',
    '',
    'Every method is one module in `stages/methods/`, one line in the registry, a card here, a config in',
    '`configs/methods/` and a parity fixture in `test/fixtures/methods/`. `densepipe methods NAME` prints the same.',
    '',
    '| method | what it is | paper | official code | reads per step | optimizer defaults |',
    '|---|---|---|---|---|---|',
  ];
  for (const name of METHOD_NAMES) {
    const m = METHODS[name] as MethodModule;
    lines.push(`| [${name}](${name}.md) | ${cell(m.title)} | [${cell(m.paper.citation)}](${m.paper.url}) | \`${m.code.repo}@${m.code.commit}\` | ${consumesSummary(m)} | ${optimizerSummary(m)} |`);
  }
  for (const name of METHOD_NAMES) {
    const m = METHODS[name] as MethodModule;
    lines.push('', `## ${name}: \`pretrain.args\``, '', '| argument | default | meaning |', '|---|---|---|');
    for (const row of argumentRows(m)) lines.push(`| \`${row.name}\` | \`${row.default}\` | ${cell(row.description)} |`);
  }
  return `${lines.join('\n')}\n`;
}
