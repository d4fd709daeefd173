# syntax=docker/dockerfile:1
#
# densepipe CPU worker: `densepipe worker --queue cpu` (sharding, proposals, evaluation, report, and
# the workflows) with the native TensorFlow backend built against libtensorflow 2.21.0 taken from the
# PyPI tensorflow-cpu wheel, as scripts/setup.sh does on a developer machine.
#
#   bash scripts/images.sh                                                  # what runs here (podman)
#   docker build -f docker/cpu-worker.Dockerfile -t densepipe-cpu-worker:0.1.0 .   # anywhere else
#
# The build needs only the package registries: npm, PyPI and (for apt-get) Debian.
#
# Stages: `libtensorflow` holds lib/ and include/ of libtensorflow (from the wheel; scripts/images.sh
# replaces the stage with `--build-context libtensorflow=...`, the copy scripts/setup.sh already
# fetched, so the wheel is not downloaded twice); `app` compiles dist/ with the dev dependencies;
# `deps` installs the production node_modules and builds the tfjs-node binding; `runtime` is the slim
# Node image with both copied in.
#
# Behind a TLS-intercepting proxy, give the build the proxy's CA as the secret `build-ca`
# (`--secret id=build-ca,src=FILE`); it is mounted for the download steps only, never into a layer.

ARG NODE_BUILD_IMAGE=node:20.20.2-bookworm
ARG NODE_RUNTIME_IMAGE=node:20.20.2-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_BUILD_IMAGE} AS libtensorflow

# Keep these two in step with TF_VERSION / TF_WHEEL_SHA256 in scripts/setup.sh
# (test/infra/invariants.test.ts fails when they drift apart).
ARG TF_VERSION=2.21.0
ARG TF_WHEEL_SHA256=2b847d217b02ee7731ed91431daf3250daa0196c3c94614d23be27232e6e5b6c

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
# libtensorflow from the tensorflow-cpu wheel (~270 MB download, ~850 MB of .so files) into
# /libtensorflow/{lib,include}, the layout of scripts/setup.sh's cache. The .so files do not depend
# on the Python version the wheel was built for, so the wheel tags are fixed.
COPY docker/stage-libtensorflow.py /usr/local/bin/stage-libtensorflow.py
RUN --mount=type=secret,id=build-ca,required=false \
    if [ -f /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi \
 && python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_27_x86_64 \
      --dest /tmp/wheel "tensorflow-cpu==${TF_VERSION}" \
 && python3 /usr/local/bin/stage-libtensorflow.py extract \
      "/tmp/wheel/tensorflow_cpu-${TF_VERSION}-cp311-cp311-manylinux_2_27_x86_64.whl" \
      "${TF_WHEEL_SHA256}" /libtensorflow \
 && rm -rf /tmp/wheel /root/.cache/pip

# ---------------------------------------------------------------------------------------------
FROM ${NODE_BUILD_IMAGE} AS app
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: nothing compiled here needs an install script (see the deps stage).
RUN --mount=type=secret,id=build-ca,required=false \
    if [ -f /run/secrets/build-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/build-ca; fi \
 && npm ci --ignore-scripts --no-audit --no-fund
COPY . .
# dist/ plus the prebuilt workflow bundle the cpu worker loads; node_modules comes from `deps`.
RUN npx tsc -p tsconfig.json \
 && node scripts/bundle-workflows.mjs \
 && rm -rf node_modules

# ---------------------------------------------------------------------------------------------
FROM ${NODE_BUILD_IMAGE} AS deps

# The libtensorflow the binding must report (the `libtensorflow` stage's, or the build context's).
ARG TF_VERSION=2.21.0

# python3, g++ and make are node-gyp's (the full node image usually has them already, listing them
# keeps the build independent of that).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 g++ make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: tfjs-node's own install script would download libtensorflow 2.9.1 from
# storage.googleapis.com; its binding is built from source below instead. The other packages with
# install scripts in package-lock.json do not need them here (sharp, @swc/core and the Temporal core
# bridge ship prebuilt binaries as regular or optional dependencies).
RUN --mount=type=secret,id=build-ca,required=false \
    if [ -f /run/secrets/build-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/build-ca; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# The two C-API libraries (regular files), the build-time linker names (relative links) and the
# C headers; tfjs-node's install script sees deps/lib/libtensorflow.so.2.9.1 and downloads nothing.
COPY --from=libtensorflow /libtensorflow/ node_modules/@tensorflow/tfjs-node/deps/
COPY docker/stage-libtensorflow.py /usr/local/bin/stage-libtensorflow.py

# Build the N-API binding from source against the staged library (node-gyp from the npm that ships
# in the image; the Node headers are under /usr/local/include/node), keep only the two shared
# libraries it loads at run time, as regular files, and check that it loads the pinned TensorFlow:
# a libtensorflow of another version fails the build here, naming both versions.
WORKDIR /app/node_modules/@tensorflow/tfjs-node
RUN npm_config_build_from_source=true npm_config_nodedir=/usr/local \
      PATH="/app/node_modules/.bin:${PATH}" node scripts/install.js \
 && python3 /usr/local/bin/stage-libtensorflow.py prune . \
 && node -e "const v = require('./lib/napi-v8/tfjs_binding.node').TF_Version; if (v !== process.argv[1]) { console.error('the tfjs-node binding loads libtensorflow ' + v + ', not the pinned ' + process.argv[1] + ': rebuild the libtensorflow cache (rm -rf ~/.cache/densepipe/libtensorflow-' + process.argv[1] + ' && bash scripts/setup.sh)'); process.exit(1); } console.log('tfjs_binding loads TensorFlow ' + v);" "${TF_VERSION}"

# ---------------------------------------------------------------------------------------------
FROM ${NODE_RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="densepipe-cpu-worker" \
      org.opencontainers.image.description="densepipe Temporal worker for the cpu task queue (TensorFlow 2.21.0 native backend)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV NODE_ENV=production \
    DENSEPIPE_BACKEND=tensorflow \
    TEMPORAL_NAMESPACE=default

WORKDIR /app
# Owned by root, read-only for the worker user: the worker writes only to S3 and its temp dir, so
# the container runs with a read-only root file system and a tmpfs /tmp.
COPY --from=app /app /app
COPY --from=deps /app/node_modules /app/node_modules

# The unprivileged `node` user (uid/gid 1000) of the official Node images and of
# docker/node-base.Dockerfile, numerically so that Kubernetes' runAsNonRoot can verify it without
# reading /etc/passwd.
USER 1000:1000

# Unhealthy when the worker cannot open a TCP connection to Temporal or to the S3 endpoint (a worker
# without them polls nothing); see docker/healthcheck.mjs for why this is not a liveness check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "docker/healthcheck.mjs"]

# SIGTERM (the default stop signal) makes the Temporal worker stop polling and let its running
# activities finish for up to shutdownGraceTime (cli/worker.ts) before it exits; an activity still
# running then is cancelled and Temporal retries it on another worker. Node handles the signal
# itself, so this works with or without an init process as PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/densepipe.js"]
CMD ["worker", "--queue", "cpu"]
