import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';

export type BackendChoice = 'tensorflow' | 'cpu' | 'wasm' | 'auto';
export const BACKEND_CHOICES: BackendChoice[] = ['tensorflow', 'cpu', 'wasm', 'auto'];

export interface BackendInfo {
  backend: string;
  /** TensorFlow C library version behind the native backend, e.g. "2.21.0". */
  tensorflowVersion?: string;
  /** Set when `auto` could not get the native backend. */
  fallbackWarning?: string;
  /** Native backend only: the package the binding came from ('@tensorflow/tfjs-node' or DENSEPIPE_TFJS_NODE). */
  binding?: string;
}

/** What the native backend runs on, for the workers' start-up line (cli/worker.ts). */
export interface TensorflowDevices {
  /** TensorFlow's eager context lists a GPU and the binding places ops on it (tfjs-node takes the last GPU listed). */
  gpu: boolean;
  /** The libtensorflow_framework.so.2 mapped into this process, when it can be read from /proc/self/maps. */
  library: string | null;
  /** That library is a CUDA build (it references libcuda.so.1, which a CPU-only build never does); null when unknown. */
  cudaBuild: boolean | null;
  /** The NVIDIA kernel driver visible to this process (/proc/driver/nvidia): its version and its GPUs' models. */
  driver: { version: string; gpus: string[] } | null;
}

/**
 * DENSEPIPE_TFJS_NODE: directory of a tfjs-node build to load instead of node_modules/@tensorflow/tfjs-node,
 * e.g. the @tensorflow/tfjs-node-gpu binding that `scripts/setup.sh --gpu` builds into .gpu/ (docs/NATIVE-BACKEND.md).
 * It must resolve @tensorflow/tfjs to this project's copy (it does from anywhere inside the project).
 */
export const TFJS_NODE_ENV = 'DENSEPIPE_TFJS_NODE';

/** The NVIDIA driver this process can see, read from procfs (null where there is none, or off Linux). */
function nvidiaDriver(): TensorflowDevices['driver'] {
  try {
    const version = /Kernel Module\s+(\S+)/.exec(readFileSync('/proc/driver/nvidia/version', 'utf8'))?.[1] ?? 'unknown';
    const dir = '/proc/driver/nvidia/gpus';
    const gpus = existsSync(dir)
      ? readdirSync(dir).map((bus) => /^Model:\s*(.+)$/m.exec(readFileSync(`${dir}/${bus}/information`, 'utf8'))?.[1]?.trim() ?? bus)
      : [];
    return { version, gpus };
  } catch {
    return null;
  }
}

/** Whether a file contains `needle`, read in 8 MiB blocks (a libtensorflow_framework.so.2 is 65-160 MB). */
function fileContains(path: string, needle: string): boolean {
  const pattern = Buffer.from(needle);
  const block = Buffer.alloc(8 << 20);
  const fd = openSync(path, 'r');
  try {
    let carry = Buffer.alloc(0);
    for (let read; (read = readSync(fd, block, 0, block.length, null)) > 0; ) {
      const chunk = Buffer.concat([carry, block.subarray(0, read)]);
      if (chunk.includes(pattern)) return true;
      carry = chunk.subarray(Math.max(0, chunk.length - pattern.length + 1));
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * The devices the native backend sees; call after initBackend gave 'tensorflow'. Not part of initBackend: reading
 * the library to tell a CUDA build takes ~0.25 s, which only a worker's start-up line needs to pay.
 */
export function tensorflowDevices(): TensorflowDevices {
  const backend = tf.backend() as unknown as { isUsingGpuDevice?: boolean };
  let library: string | null = null;
  try {
    library = readFileSync('/proc/self/maps', 'utf8').match(/\S*\/libtensorflow_framework\.so\.2$/m)?.[0] ?? null;
  } catch {
    /* not Linux */
  }
  let cudaBuild: boolean | null = null;
  try {
    if (library) cudaBuild = fileContains(library, 'libcuda.so.1');
  } catch {
    /* unreadable: unknown */
  }
  return { gpu: backend.isUsingGpuDevice === true, library, cudaBuild, driver: nvidiaDriver() };
}

/**
 * One line for a log, e.g. 'CPU + GPU (ops run on the GPU); CUDA build of libtensorflow; NVIDIA driver 580.159.03: NVIDIA H200'
 * or 'CPU only; CUDA build of libtensorflow; no NVIDIA driver visible'.
 */
export function describeDevices(d: TensorflowDevices): string {
  const driver = d.driver ? `NVIDIA driver ${d.driver.version}: ${d.driver.gpus.length ? d.driver.gpus.join(', ') : 'no GPU listed'}` : 'no NVIDIA driver visible';
  const build = d.cudaBuild === null ? 'libtensorflow build unknown' : d.cudaBuild ? 'CUDA build of libtensorflow' : 'CPU-only build of libtensorflow';
  return `${d.gpu ? 'CPU + GPU (ops run on the GPU)' : 'CPU only'}; ${build}; ${driver}`;
}

/** Why TensorFlow sees no GPU, as far as this process can tell (for the gpu worker's warning). */
export function noGpuReason(info: BackendInfo, d: TensorflowDevices | undefined): string {
  if (info.backend !== 'tensorflow' || !d) return `the tensor backend is '${info.backend}', not the native TensorFlow one`;
  if (d.cudaBuild === false)
    return `the libtensorflow loaded (${d.library}) is a CPU-only build: use the GPU image (docker/gpu-worker.Dockerfile) or \`scripts/setup.sh --gpu\` and ${TFJS_NODE_ENV}`;
  if (!d.driver) return 'no NVIDIA driver is visible to this process (/proc/driver/nvidia is absent): give the container a GPU (NVIDIA Container Toolkit, --gpus / a nvidia.com/gpu resource)';
  return `the NVIDIA driver ${d.driver.version} lists ${d.driver.gpus.join(', ') || 'no GPU'} but TensorFlow did not take one: see TensorFlow's own lines above (cuInit, cuDNN; CUDA 12 needs driver R525+, and R555+ where its PTX is JIT-compiled, as on Hopper)`;
}

let active: BackendInfo | null = null;

/**
 * Measured on a 2-core machine (docs/ENGINE.md, ../shared reference): one training step of a
 * 1.2 M-parameter ResNet at batch 32, 64x64 takes ~0.1-0.3 s native, ~7 s on wasm (with extra
 * gradient kernels) and ~2,100 s on the pure-JS cpu backend.
 */
const FALLBACK_COST = 'the pure-JS cpu backend trains about 6,000x slower than the native one (minutes per step instead of a fraction of a second)';

/**
 * TensorFlow's oneDNN (MKL) CPU kernels. The PyPI wheel turns them on only for CPUs with AVX-512 VNNI/BF16 or AMX,
 * so an AVX2-only CPU (AMD EPYC Zen 2/3, older Xeons) got Eigen's kernels: measured on a 2-vCPU AMD EPYC, one MoCo v2
 * step at 64 px (ResNet-18, batch 32) takes 0.95 s with Eigen and 0.65 s with oneDNN (docs/PERFORMANCE.md). Set here
 * before libtensorflow loads; TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps Eigen.
 */
export const ONEDNN_ENV = 'TF_ENABLE_ONEDNN_OPTS';

async function loadNative(): Promise<string> {
  process.env[ONEDNN_ENV] ??= '1';
  // Importing tfjs-node registers the 'tensorflow' backend on the shared tfjs engine.
  const override = process.env[TFJS_NODE_ENV];
  if (override) createRequire(import.meta.url)(resolve(override));
  else await import('@tensorflow/tfjs-node');
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
      const binding = process.env[TFJS_NODE_ENV] ? resolve(process.env[TFJS_NODE_ENV]!) : '@tensorflow/tfjs-node';
      active = { backend: 'tensorflow', tensorflowVersion: version, binding };
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
