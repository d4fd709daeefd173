import { describe, expect, it } from 'vitest';
import { describeDevices, initBackend, noGpuReason, tensorflowDevices, type TensorflowDevices } from '../../core/tf.js';

// What the workers print at start-up about TensorFlow's devices (cli/worker.ts), and why a gpu-queue worker sees no
// GPU. The GPU build itself (tfjs-node-gpu on the PyPI tensorflow wheel) is checked by `npm run bench -- gpu-build`,
// outside this suite: its libraries are 5.3 GB, which `npm test`'s set-up does not fetch.

const cpuOnly: TensorflowDevices = { gpu: false, library: '/x/libtensorflow-2.21.0/lib/libtensorflow_framework.so.2', cudaBuild: false, driver: null };

describe('TensorFlow devices', () => {
  it("reads the CPU binding's devices on this GPU-less machine: CPU only, a CPU-only libtensorflow", async () => {
    const info = await initBackend('tensorflow');
    expect(info.binding).toBe('@tensorflow/tfjs-node');
    const devices = tensorflowDevices();
    expect(devices.gpu).toBe(false);
    // The library actually mapped into this process, read from /proc/self/maps.
    expect(devices.library).toMatch(/\/libtensorflow_framework\.so\.2$/);
    expect(devices.cudaBuild).toBe(false);
    expect(describeDevices(devices)).toMatch(/^CPU only; CPU-only build of libtensorflow; /);
  });

  it('describes a GPU worker that found its GPU, and one that did not', () => {
    const h200 = { version: '580.159.03', gpus: ['NVIDIA H200'] };
    expect(describeDevices({ gpu: true, library: '/l', cudaBuild: true, driver: h200 })).toBe(
      'CPU + GPU (ops run on the GPU); CUDA build of libtensorflow; NVIDIA driver 580.159.03: NVIDIA H200',
    );
    expect(describeDevices({ gpu: false, library: '/l', cudaBuild: true, driver: null })).toBe('CPU only; CUDA build of libtensorflow; no NVIDIA driver visible');
    expect(describeDevices({ gpu: false, library: null, cudaBuild: null, driver: { version: '550.1', gpus: [] } })).toBe(
      'CPU only; libtensorflow build unknown; NVIDIA driver 550.1: no GPU listed',
    );
  });

  it('says why a gpu-queue worker sees no GPU, most basic cause first', () => {
    expect(noGpuReason({ backend: 'cpu' }, undefined)).toMatch(/backend is 'cpu', not the native TensorFlow one/);
    expect(noGpuReason({ backend: 'tensorflow' }, cpuOnly)).toMatch(/CPU-only build: use the GPU image .*scripts\/setup\.sh --gpu.* DENSEPIPE_TFJS_NODE$/);
    expect(noGpuReason({ backend: 'tensorflow' }, { ...cpuOnly, cudaBuild: true })).toMatch(/no NVIDIA driver is visible/);
    expect(noGpuReason({ backend: 'tensorflow' }, { ...cpuOnly, cudaBuild: true, driver: { version: '535.1', gpus: ['NVIDIA H100 80GB HBM3'] } })).toMatch(
      /driver 535\.1 lists NVIDIA H100 80GB HBM3 but TensorFlow did not take one/,
    );
  });
});
