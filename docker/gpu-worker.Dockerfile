# syntax=docker/dockerfile:1
#
# densepipe GPU worker: `densepipe worker --queue gpu` (pretraining) on the @tensorflow/tfjs-node-gpu 4.22.0
# binding, built from its sources against libtensorflow 2.21.0 taken from the PyPI `tensorflow` wheel (a CUDA
# 12.5 build with cuDNN 9, GPU code for sm_60/70/80/89 and compute_90 PTX, so Hopper H100/H200 runs it), with
# its CUDA 12 runtime from the nvidia-*-cu12 wheels: the same route as the CPU image and `scripts/setup.sh --gpu`.
#
#   docker build -f docker/gpu-worker.Dockerfile -t densepipe-gpu-worker:dev .
#   docker build -f docker/gpu-worker.Dockerfile --build-arg GPU_BASE_IMAGE=ubuntu:24.04 -t densepipe-gpu-worker:dev .
#
# The build needs only the npm registry, PyPI and the base images' apt archives; every wheel is pinned by sha256
# (docker/gpu-wheels.txt) and the tfjs-node-gpu tarball by the registry's sha512. No CUDA toolkit image is
# needed: the host contributes only the NVIDIA driver (libcuda.so.1, mounted by the NVIDIA Container Toolkit).
# Running it needs a driver for CUDA 12.5 or newer (R555+; on Hopper every kernel is JIT-compiled from the
# compute_90 PTX, which an older driver cannot do) and the NVIDIA Container Toolkit on the host.
# The image is large: ~5.3 GB of libraries (TensorFlow 1.3 GB, cuDNN 1.2 GB, cuBLAS 0.9 GB, ...).
#
# Behind a TLS-intercepting proxy, give the build the proxy's CA as the secret `build-ca`
# (`--secret id=build-ca,src=FILE`); it is mounted for the download steps only, never into a layer.
#
# Stages: `app` compiles dist/; `libtf` downloads the wheels and lays out libtensorflow + the CUDA runtime
# (docker/stage-libtensorflow-gpu.py); `deps` installs the production node_modules with tfjs-node-gpu in place
# of tfjs-node and builds its binding against `libtf`; `runtime` is GPU_BASE_IMAGE with Node and both copied in.

ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG NODE_BUILD_IMAGE=node:20.20.2-bookworm
# Base of the shipped image, and of `deps`, so that the binding is compiled against the libstdc++ it runs with.
# Any x86_64 glibc >= 2.28 distribution with apt-get does (Debian 12, Ubuntu 22.04/24.04, nvidia/cuda:12.*-base):
# CUDA comes from the wheels, not from the base image.
ARG GPU_BASE_IMAGE=node:20.20.2-bookworm-slim

# ---------------------------------------------------------------------------------------------
# dist/ is plain JavaScript, so it is built on the Node image, the same way as in the CPU image.
FROM ${NODE_IMAGE} AS app
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=build-ca,required=false \
    if [ -f /run/secrets/build-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/build-ca; fi \
 && npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npx tsc -p tsconfig.json \
 && node scripts/bundle-workflows.mjs \
 && rm -rf node_modules

# ---------------------------------------------------------------------------------------------
# libtensorflow_cc.so.2 + libtensorflow_framework.so.2 (and the C headers) from the tensorflow wheel, the CUDA
# runtime libraries from the nvidia-*-cu12 wheels, as siblings lib/ and nvidia/ (the libraries' RUNPATH is
# $ORIGIN/../nvidia/*/lib). 3.3 GB of wheels, deleted in the same step. The .so files do not depend on the
# Python version the wheels were built for, so the tags are fixed; nothing is installed into a Python.
FROM ${NODE_BUILD_IMAGE} AS libtf
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
COPY docker/gpu-wheels.txt docker/stage-libtensorflow.py docker/stage-libtensorflow-gpu.py /opt/stage/
RUN --mount=type=secret,id=build-ca,required=false \
    if [ -f /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi \
 && python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes --python-version 3.11 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_25_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 \
      -r /opt/stage/gpu-wheels.txt -d /tmp/wheels \
 && python3 /opt/stage/stage-libtensorflow-gpu.py stage /tmp/wheels /opt/stage/gpu-wheels.txt /opt/libtensorflow-gpu \
 && rm -rf /tmp/wheels /root/.cache/pip \
 && python3 /opt/stage/stage-libtensorflow-gpu.py check /opt/libtensorflow-gpu

# ---------------------------------------------------------------------------------------------
FROM ${GPU_BASE_IMAGE} AS deps

# Keep in step with @tensorflow/tfjs-node in package.json and TFJS_NODE_GPU_* in scripts/setup.sh
# (test/infra/invariants.test.ts checks both).
ARG TFJS_NODE_GPU_VERSION=4.22.0
ARG TFJS_NODE_GPU_INTEGRITY=sha512-p//NN6DGiN4hInUmIkRffaFVMcdTREUMjPyjW04J7OXvB2zBlQimj61eFKSgRrH3f5TnOfKzb0n56he/B6a4bw==
# The TensorFlow the binding must report: the tensorflow pin of docker/gpu-wheels.txt.
ARG TF_VERSION=2.21.0

COPY --from=app /usr/local/bin/node /usr/local/bin/node
COPY --from=app /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
COPY --from=app /usr/local/include/node /usr/local/include/node
# python3, g++ and make are node-gyp's; ca-certificates for npm on bases that lack them.
RUN ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no install script runs (tfjs-node's would download libtensorflow 2.9.1 from outside the
# registries). core/tf.ts imports '@tensorflow/tfjs-node': unpacking tfjs-node-gpu into that directory gives the
# GPU build to the same import, with no code path that differs between the two images; both packages declare the
# same dependencies at 4.22.0, which npm ci has installed. The tarball is checked against the pinned sha512.
RUN --mount=type=secret,id=build-ca,required=false \
    if [ -f /run/secrets/build-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/build-ca; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm pack --silent --pack-destination /tmp "@tensorflow/tfjs-node-gpu@${TFJS_NODE_GPU_VERSION}" \
 && tgz="/tmp/tensorflow-tfjs-node-gpu-${TFJS_NODE_GPU_VERSION}.tgz" \
 && node -e "const [f, want] = process.argv.slice(1); const got = 'sha512-' + require('crypto').createHash('sha512').update(require('fs').readFileSync(f)).digest('base64'); if (got !== want) { console.error(f + ': ' + got + ' is not the pinned ' + want); process.exit(1); }" "$tgz" "${TFJS_NODE_GPU_INTEGRITY}" \
 && rm -rf node_modules/@tensorflow/tfjs-node \
 && mkdir node_modules/@tensorflow/tfjs-node \
 && tar -xzf "$tgz" --strip-components=1 -C node_modules/@tensorflow/tfjs-node \
 && rm "$tgz"

# Real files, not a link into another stage: the runtime stage copies node_modules as it is.
COPY --from=libtf /opt/libtensorflow-gpu /app/node_modules/@tensorflow/tfjs-node/deps
COPY docker/stage-libtensorflow.py docker/stage-libtensorflow-gpu.py /opt/stage/

# Build the N-API binding from source (node-gyp, offline: deps/lib/libtensorflow.so.2.9.1 exists, so the
# install script downloads nothing), check that it loads (a CUDA build loads without a GPU: cuInit fails and
# TensorFlow stays on the CPU), then drop the headers, the linker names and node-gyp's objects.
WORKDIR /app/node_modules/@tensorflow/tfjs-node
RUN npm_config_build_from_source=true npm_config_nodedir=/usr/local \
      PATH="/app/node_modules/.bin:${PATH}" node scripts/install.js gpu \
 && node -e "const v = require('./lib/napi-v8/tfjs_binding.node').TF_Version; if (v !== process.argv[1]) { console.error('the tfjs-node-gpu binding loads libtensorflow ' + v + ', not the pinned ' + process.argv[1]); process.exit(1); } console.log('tfjs_binding (CUDA build) loads TensorFlow ' + v);" "${TF_VERSION}" \
 && python3 /opt/stage/stage-libtensorflow-gpu.py prune deps \
 && rm -rf build build-tmp-napi-v8

# ---------------------------------------------------------------------------------------------
FROM ${GPU_BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="densepipe-gpu-worker" \
      org.opencontainers.image.description="densepipe Temporal worker for the gpu task queue (TensorFlow 2.21.0, CUDA 12, cuDNN 9, from PyPI wheels)" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=app /usr/local/bin/node /usr/local/bin/node

RUN groupadd --system --gid 10001 densepipe \
 && useradd --system --uid 10001 --gid densepipe --home-dir /home/densepipe --create-home \
      --shell /usr/sbin/nologin densepipe

# NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA Container Toolkit reads to mount the
# driver (nvidia/cuda images set the same two; this base is not one).
# TF_FORCE_GPU_ALLOW_GROWTH: take GPU memory as needed instead of all of it at start.
# CUDA_CACHE_MAXSIZE: the wheel has machine code up to sm_89 and only PTX for compute_90, so Hopper (and newer)
# GPUs JIT-compile TensorFlow's kernels on first use; the default 256 MiB cache is too small to keep them.
# (CUDA_CACHE_PATH is set by compose/k8s to a writable volume.)
ENV NODE_ENV=production \
    DENSEPIPE_BACKEND=tensorflow \
    TEMPORAL_NAMESPACE=default \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    CUDA_CACHE_MAXSIZE=4294967296

WORKDIR /app
# Owned by root, read-only for the worker user.
COPY --from=app /app /app
COPY --from=deps /app/node_modules /app/node_modules

USER 10001:10001

# At start the worker prints `tensorflow devices: ...` and, when it sees no GPU, a loud warning saying why.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "docker/healthcheck.mjs"]

ENTRYPOINT ["node", "bin/densepipe.js"]
CMD ["worker", "--queue", "gpu"]
