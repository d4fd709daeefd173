import * as tf from '@tensorflow/tfjs';

export type BackendChoice = 'tensorflow' | 'cpu' | 'wasm' | 'auto';
export const BACKEND_CHOICES: BackendChoice[] = ['tensorflow', 'cpu', 'wasm', 'auto'];

export interface BackendInfo {
  backend: string;
  /** TensorFlow C library version behind the native backend, e.g. "2.21.0". */
  tensorflowVersion?: string;
  /** Set when `auto` could not get the native backend. */
  fallbackWarning?: string;
}

let active: BackendInfo | null = null;

/**
 * Measured on a 2-core machine (docs/ENGINE.md, ../shared reference): one training step of a
 * 1.2 M-parameter ResNet at batch 32, 64x64 takes ~0.1-0.3 s native, ~7 s on wasm (with extra
 * gradient kernels) and ~2,100 s on the pure-JS cpu backend.
 */
const FALLBACK_COST = 'the pure-JS cpu backend trains about 6,000x slower than the native one (minutes per step instead of a fraction of a second)';

async function loadNative(): Promise<string> {
  // Importing tfjs-node registers the 'tensorflow' backend on the shared tfjs engine.
  await import('@tensorflow/tfjs-node');
  const ok = await tf.setBackend('tensorflow');
  if (!ok) throw new Error("tf.setBackend('tensorflow') returned false");
  const binding = (tf.backend() as unknown as { binding?: { TF_Version?: string } }).binding;
  return binding?.TF_Version ?? 'unknown';
}

/**
 * Pick the tensor backend once per process. `auto` takes the native TensorFlow backend and,
 * only if it cannot load, falls back to cpu with a loud warning on stderr.
 */
export async function initBackend(choice: BackendChoice = 'auto'): Promise<BackendInfo> {
  if (active && (choice === 'auto' || active.backend === choice)) return active;
  if (choice === 'tensorflow' || choice === 'auto') {
    try {
      const version = await loadNative();
      active = { backend: 'tensorflow', tensorflowVersion: version };
      return active;
    } catch (err) {
      if (choice === 'tensorflow') {
        throw new Error(
          `the native TensorFlow backend did not load: ${(err as Error).message}. ` +
            `Run 'npm run setup' (it builds @tensorflow/tfjs-node against libtensorflow from the tensorflow-cpu wheel).`,
        );
      }
      const warning = `WARNING: native TensorFlow backend unavailable (${(err as Error).message.split('\n')[0]}); falling back to 'cpu': ${FALLBACK_COST}. Run 'npm run setup' to build it.`;
      process.stderr.write(`${warning}\n`);
      await tf.setBackend('cpu');
      active = { backend: 'cpu', fallbackWarning: warning };
      return active;
    }
  }
  if (choice === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
    await tf.setBackend('wasm');
    process.stderr.write('WARNING: the wasm backend is single-threaded in Node and has no Conv2DBackpropFilter kernel; it can run inference, not training.\n');
    active = { backend: 'wasm' };
    return active;
  }
  await tf.setBackend('cpu');
  process.stderr.write(`WARNING: using the pure-JS cpu backend: ${FALLBACK_COST}.\n`);
  active = { backend: 'cpu' };
  return active;
}

export function backendInfo(): BackendInfo | null {
  return active;
}

export { tf };
