#!/usr/bin/env bash
# The one prepared check of the GPU build ON A GPU (issue 18, section 4): about 5 minutes, 10 at most.
#
#   bash scripts/setup.sh --gpu        # once, on the GPU machine (needs PyPI + npm: ~3.3 GB of wheels)
#   bash bench/gpu-check.sh [OUT_DIR]  # OUT_DIR defaults to bench/results
#
# It records what the machine is (nvidia-smi), then runs `npm run bench -- gpu-build` twice with require-gpu=1,
# so that it fails unless the tfjs-node-gpu binding (libtensorflow 2.21.0 from the PyPI tensorflow wheel, CUDA 12)
# places its ops on a GPU:
#   gpu-check-tiny.json      MoCo v2, resnet-tiny, 32 px, batch 8 (configs/methods/mocov2.yaml), 20 steps
#   gpu-check-resnet18.json  MoCo v2, ResNet-18, 64 px, batch 32 (the train-throughput case), 20 steps
# Each result has the GPU build's seconds per step beside the CPU build's (reference, same machine), the first
# step's time (on Hopper it includes the driver's JIT compile of TensorFlow's compute_90 PTX, with an empty cache
# here), the losses of both builds, the devices and the driver TensorFlow saw, and TensorFlow's own CUDA log lines.
#
# It cannot run on this workplace's lent device machine as it stands: that machine reaches no registry, and the
# ~5.3 GB of libraries (libtensorflow 1.3 GB, cuDNN 1.2 GB, ...) do not fit in the 64 MiB a call carries.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
OUT_DIR=${1:-bench/results}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu-check.log"
: >"$LOG"
say() { printf '%s\n' "$*" | tee -a "$LOG"; }
fail=0

say "== $(date -u +%FT%TZ) $(hostname)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>&1 | tee -a "$LOG"
else
  say "nvidia-smi: not found (no NVIDIA driver here?)"
fi
[ -r /proc/driver/nvidia/version ] && head -1 /proc/driver/nvidia/version | tee -a "$LOG"

BINDING=.gpu/node_modules/@tensorflow/tfjs-node-gpu
if [ ! -f "$BINDING/lib/napi-v8/tfjs_binding.node" ]; then
  say "no GPU binding at $BINDING: run 'bash scripts/setup.sh --gpu' first"
  exit 2
fi

# An empty JIT cache, so that the first step's time shows what a fresh container pays.
CUDA_CACHE_PATH=$(mktemp -d)
export CUDA_CACHE_PATH CUDA_CACHE_MAXSIZE=4294967296 TF_FORCE_GPU_ALLOW_GROWTH=true

run_case() { # name, bench args...
  local name=$1
  shift
  say "== gpu-build $name: $*"
  if timeout 270 node bin/bench.js gpu-build require-gpu=1 "name=$name" "$@" 2>&1 | tee -a "$LOG"; then
    cp "bench/results/$name.json" "$OUT_DIR/" 2>/dev/null || true
  else
    say "!! $name FAILED (exit ${PIPESTATUS[0]})"
    fail=1
  fi
}
run_case gpu-check-tiny steps=20
run_case gpu-check-resnet18 steps=20 arch=resnet18 size=64 batch=32

du -sh "$CUDA_CACHE_PATH" 2>/dev/null | sed 's/^/CUDA JIT cache after both cases: /' | tee -a "$LOG"
rm -rf "$CUDA_CACHE_PATH"
say "== done: $([ "$fail" = 0 ] && echo PASSED || echo FAILED)"
exit "$fail"
