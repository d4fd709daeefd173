/**
 * The registry is the one place a method is named, and each registered method comes with everything the
 * guide asks of it: a parity fixture and its test, a card, a config that runs end to end, arguments that
 * parse to the paper's defaults. Adding a method without one of these fails here.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../../cli/env.js';
import { loadRunConfig } from '../../core/config.js';
import { methodsIndexMarkdown } from '../../stages/methods/shared/describe.js';
import { BadInputError } from '../../core/errors.js';
import { METHOD_NAMES, METHODS, methodModule, type MethodName } from '../../stages/methods/index.js';
import type { MethodModule } from '../../stages/methods/shared/contract.js';
import { SUITE_METHODS } from '../../stages/regression/suite-config.js';

const root = projectRoot();
const read = (...p: string[]) => readFileSync(join(root, ...p), 'utf8');

describe.each(METHOD_NAMES)('registered method %s', (name) => {
  const module = METHODS[name] as MethodModule;

  it('has a parity fixture with its generator, and a parity test that reads it', () => {
    const fixture = JSON.parse(read('test', 'fixtures', 'methods', name, 'parity.json')) as { generator?: string };
    expect(fixture.generator, 'the fixture names the script that made it').toBeTruthy();
    expect(existsSync(join(root, fixture.generator!)), fixture.generator).toBe(true);
    const test = read('test', 'methods', `${name}.parity.test.ts`);
    expect(test).toContain(`loadFixture('${name}')`);
  });

  it("checks each claim against a registered method of its own backbone family", () => {
    const family = (m: MethodModule) => m.architecture ?? 'resnet';
    for (const claim of module.claims ?? []) {
      expect(METHOD_NAMES as readonly string[], `${name} claims over '${claim.over}'`).toContain(claim.over);
      expect(family(METHODS[claim.over as MethodName] as MethodModule), `${name} claims over '${claim.over}'`).toBe(family(module));
    }
  });

  it('has a card that cites the paper and the official commit', () => {
    const card = read('docs', 'methods', `${name}.md`);
    expect(card).toContain(module.code.commit);
    expect(card).toContain(module.paper.url);
    for (const heading of [/faithful/i, /scaled down/i, /paper/i]) expect(card).toMatch(heading);
  });

  it('has a config that validates, and its module file cites the official code at the top', async () => {
    const { config } = await loadRunConfig(join(root, 'configs', 'methods', `${name}.yaml`));
    expect(config.pretrain.method).toBe(name);
    const source = read('stages', 'methods', `${name}.ts`);
    expect(source.slice(0, 1500)).toContain(module.code.commit);
  });

  it('documents every argument and parses its defaults', () => {
    const defaults = module.args.parse({});
    expect(typeof defaults).toBe('object');
    for (const [arg, schema] of Object.entries(module.args.shape)) expect((schema as { description?: string }).description, `${name}.args.${arg}`).toBeTruthy();
    expect(module.consumes.views(64, defaults).length).toBeGreaterThan(0);
  });

  it('imports no other method', () => {
    const source = read('stages', 'methods', `${name}.ts`);
    for (const other of METHOD_NAMES.filter((m) => m !== name)) expect(source).not.toMatch(new RegExp(`from '\\./${other}\\.js'`));
  });
});

describe('the registry', () => {
  it('is where the suites, the CLI and the docs index get their method list', () => {
    expect([...SUITE_METHODS]).toEqual([...METHOD_NAMES]);
    expect(read('docs', 'methods', 'README.md'), 'docs/methods/README.md is stale: npx tsx scripts/methods-index.ts').toBe(methodsIndexMarkdown());
  });

  it('answers a name it does not know (a worker older than the client) with a non-retried error naming the field', () => {
    expect(() => methodModule('next-years-method' as MethodName)).toThrow(BadInputError);
    expect(() => methodModule('next-years-method' as MethodName)).toThrow(/pretrain\.method: this worker does not know the method 'next-years-method'.*restart the workers/);
    expect(() => methodModule('toString' as MethodName)).toThrow(BadInputError); // not an Object.prototype member either
  });
});
