# syntax=docker/dockerfile:1
#
# densepipe GPU worker: `densepipe worker --queue gpu` (pretraining) on @tensorflow/tfjs-node-gpu
# 4.22.0, whose libtensorflow 2.9.1 GPU build needs CUDA 11.2 and cuDNN 8.1 (the versions the
# tfjs-node README lists for tfjs-node-gpu 4.x), hence the nvidia/cuda 11.2.2 cuDNN 8 base image.
#
#   docker build -f docker/gpu-worker.Dockerfile -t densepipe-gpu-worker:dev .
#
# IMPORTANT: unlike the CPU image, this build downloads from outside the package registries:
# tfjs-node-gpu's install script fetches libtensorflow-gpu-linux-x86_64-2.9.1.tar.gz and the
# prebuilt N-API addon from storage.googleapis.com. Build it on a machine with internet access.
# Running it needs an NVIDIA driver >= 450 and the NVIDIA Container Toolkit on the host.
#
# Stages: `app` compiles dist/; `deps` installs the production node_modules with tfjs-node-gpu in
# place of tfjs-node; `runtime` is the CUDA runtime image with Node and both copied in.

ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04

# ---------------------------------------------------------------------------------------------
# dist/ is plain JavaScript, so it is built on the Node image, the same way as in the CPU image.
FROM ${NODE_IMAGE} AS app
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npx tsc -p tsconfig.json \
 && node scripts/bundle-workflows.mjs \
 && rm -rf node_modules

# ---------------------------------------------------------------------------------------------
# deps is built on the CUDA image (Ubuntu 20.04), not on Debian, so that a source build of the addon
# (node-pre-gyp's fallback) links against the same libstdc++ the runtime has. The official Node 20
# binary needs glibc >= 2.28; Ubuntu 20.04 has 2.31.
FROM ${CUDA_RUNTIME_IMAGE} AS deps

# Keep in step with @tensorflow/tfjs-node in package.json (test/infra/invariants.test.ts checks).
ARG TFJS_NODE_GPU_VERSION=4.22.0
ARG TFJS_NODE_GPU_INTEGRITY=sha512-p//NN6DGiN4hInUmIkRffaFVMcdTREUMjPyjW04J7OXvB2zBlQimj61eFKSgRrH3f5TnOfKzb0n56he/B6a4bw==

COPY --from=app /usr/local/bin/node /usr/local/bin/node
COPY --from=app /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
COPY --from=app /usr/local/include/node /usr/local/include/node
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm

# ca-certificates for the downloads; python3, g++ and make only for node-pre-gyp's source fallback.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# core/tf.ts imports '@tensorflow/tfjs-node'. Unpacking tfjs-node-gpu into that directory gives the
# GPU build to the same import, with no code path that differs between the two images; both packages
# declare the same dependencies at 4.22.0, which npm ci has installed already. The tarball is
# checked against the registry's sha512 before use.
RUN npm pack --silent --pack-destination /tmp "@tensorflow/tfjs-node-gpu@${TFJS_NODE_GPU_VERSION}" \
 && tgz="/tmp/tensorflow-tfjs-node-gpu-${TFJS_NODE_GPU_VERSION}.tgz" \
 && node -e "const [f, want] = process.argv.slice(1); const got = 'sha512-' + require('crypto').createHash('sha512').update(require('fs').readFileSync(f)).digest('base64'); if (got !== want) { console.error(f + ': ' + got + ' is not the pinned ' + want); process.exit(1); }" "$tgz" "${TFJS_NODE_GPU_INTEGRITY}" \
 && rm -rf node_modules/@tensorflow/tfjs-node \
 && mkdir node_modules/@tensorflow/tfjs-node \
 && tar -xzf "$tgz" --strip-components=1 -C node_modules/@tensorflow/tfjs-node \
 && rm "$tgz"

# tfjs-node-gpu's own install step (package.json "install": "node scripts/install.js gpu download"):
# downloads libtensorflow GPU 2.9.1 into deps/ and the prebuilt addon into lib/napi-v8/.
WORKDIR /app/node_modules/@tensorflow/tfjs-node
RUN PATH="/app/node_modules/.bin:${PATH}" node scripts/install.js gpu download \
 && test -e deps/lib/libtensorflow.so.2 \
 && test -f lib/napi-v8/tfjs_binding.node \
 && rm -rf build

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="densepipe-gpu-worker" \
      org.opencontainers.image.description="densepipe Temporal worker for the gpu task queue (tfjs-node-gpu 4.22.0, CUDA 11.2, cuDNN 8)" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=app /usr/local/bin/node /usr/local/bin/node

RUN groupadd --system --gid 10001 densepipe \
 && useradd --system --uid 10001 --gid densepipe --home-dir /home/densepipe --create-home \
      --shell /usr/sbin/nologin densepipe

# TF_FORCE_GPU_ALLOW_GROWTH: take GPU memory as needed instead of all of it at start.
# CUDA_CACHE_MAXSIZE: libtensorflow 2.9.1 carries machine code for GPUs up to compute capability 8.0;
# newer GPUs (H100 is 9.0) JIT-compile its PTX on first use, and the default 256 MiB cache is too
# small to keep all of TensorFlow's kernels. (CUDA_CACHE_PATH is set by compose/k8s to a writable
# volume.) The CUDA base image already sets NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES.
ENV NODE_ENV=production \
    DENSEPIPE_BACKEND=tensorflow \
    TEMPORAL_NAMESPACE=default \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    CUDA_CACHE_MAXSIZE=2147483648

WORKDIR /app
# Owned by root, read-only for the worker user.
COPY --from=app /app /app
COPY --from=deps /app/node_modules /app/node_modules

USER 10001:10001

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "docker/healthcheck.mjs"]

ENTRYPOINT ["node", "bin/densepipe.js"]
CMD ["worker", "--queue", "gpu"]
