/**
 * The method registry: the one place that spells each method's name. The pretrain config schema
 * (stages/pretrain/config.ts), the CLI's help, the suites' method list, the docs index and the
 * registry-wide tests all derive from this map. Adding a method = its module, one line here, its card
 * (docs/methods/NAME.md), its config (configs/methods/NAME.yaml) and its parity fixture.
 */
import { BadInputError } from '../../core/errors.js';
import type { MethodModule } from './shared/contract.js';
import { ccop } from './ccop.js';
import { densecl } from './densecl.js';
import { densesiam } from './densesiam.js';
import { detco } from './detco.js';
import { detreg } from './detreg.js';
import { lcloss } from './lcloss.js';
import { mocov2 } from './mocov2.js';
import { mocov3 } from './mocov3.js';
import { pixpro } from './pixpro.js';
import { r2o } from './r2o.js';
import { scfs } from './scfs.js';
import { scrl } from './scrl.js';
import { siameseim } from './siameseim.js';
import { swav } from './swav.js';
import { regioncl } from './regioncl.js';
import { resim } from './resim.js';
import { updetr } from './updetr.js';

export const METHODS = {
  mocov2,
  densecl,
  pixpro,
  scrl,
  regioncl,
  resim,
  r2o,
  ccop,
  densesiam,
  detco,
  lcloss,
  swav,
  scfs,
  updetr,
  mocov3,
  detreg,
  siameseim,
} as const satisfies Record<string, MethodModule>;

export type MethodName = keyof typeof METHODS;

export const METHOD_NAMES = Object.keys(METHODS) as [MethodName, ...MethodName[]];

for (const [key, module] of Object.entries(METHODS)) {
  if (module.name !== key) throw new Error(`method registry: key '${key}' holds the module named '${module.name}'`);
}

export function isMethodName(name: unknown): name is MethodName {
  return typeof name === 'string' && Object.hasOwn(METHODS, name);
}

/**
 * The module of a registered method. The config schema checks the name where the config is loaded; a worker built
 * from older code than the client that started the run reaches here with a name it does not know: a clear,
 * non-retried error (upgrade the workers, then `densepipe resume`), not a TypeError retried until the timeout.
 */
export function methodModule(name: MethodName): MethodModule {
  if (!isMethodName(name)) {
    throw new BadInputError(`this worker does not know the method '${String(name)}' (it knows ${METHOD_NAMES.join(', ')}): its code is older than the client's; restart the workers from the current code, then resume the run`, 'pretrain.method');
  }
  return METHODS[name] as MethodModule;
}

export type { MethodModule, MethodInstance, MethodBatch, StepContext, StepResult, NamedGradients, FeatureBackbone, BackboneFactory, Consumes, ProposalNeeds, ViewProposals } from './shared/contract.js';
