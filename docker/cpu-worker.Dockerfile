# syntax=docker/dockerfile:1
#
# densepipe CPU worker: `densepipe worker --queue cpu` (sharding, proposals, evaluation, report, and
# the workflows) with the native TensorFlow backend built against libtensorflow 2.21.0 taken from the
# PyPI tensorflow-cpu wheel, as scripts/setup.sh does on a developer machine.
#
#   docker build -f docker/cpu-worker.Dockerfile -t densepipe-cpu-worker:dev .
#
# The build needs only the npm registry and PyPI.
#
# Stages: `app` compiles dist/ with the dev dependencies; `deps` installs the production
# node_modules and builds the tfjs-node binding; `runtime` is node:*-slim with both copied in.

ARG NODE_BUILD_IMAGE=node:20.20.2-bookworm
ARG NODE_RUNTIME_IMAGE=node:20.20.2-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_RUNTIME_IMAGE} AS app
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: nothing compiled here needs an install script (see the deps stage).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
# dist/ plus the prebuilt workflow bundle the cpu worker loads; node_modules comes from `deps`.
RUN npx tsc -p tsconfig.json \
 && node scripts/bundle-workflows.mjs \
 && rm -rf node_modules

# ---------------------------------------------------------------------------------------------
FROM ${NODE_BUILD_IMAGE} AS deps

# Keep these two in step with TF_VERSION / TF_WHEEL_SHA256 in scripts/setup.sh
# (test/infra/invariants.test.ts fails when they drift apart).
ARG TF_VERSION=2.21.0
ARG TF_WHEEL_SHA256=2b847d217b02ee7731ed91431daf3250daa0196c3c94614d23be27232e6e5b6c

# pip fetches the wheel; python3, g++ and make are node-gyp's (the full node image usually has the
# compilers already, listing them keeps the build independent of that).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip g++ make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: tfjs-node's own install script would download libtensorflow 2.9.1 from
# storage.googleapis.com; its binding is built from source below instead. The other packages with
# install scripts in package-lock.json do not need them here (sharp, @swc/core and the Temporal core
# bridge ship prebuilt binaries as regular or optional dependencies).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# libtensorflow from the tensorflow-cpu wheel (~270 MB download, ~850 MB of .so files). The .so
# files do not depend on the Python version the wheel was built for, so the wheel tags are fixed.
COPY docker/stage-libtensorflow.py /usr/local/bin/stage-libtensorflow.py
RUN python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_27_x86_64 \
      --dest /tmp/wheel "tensorflow-cpu==${TF_VERSION}" \
 && python3 /usr/local/bin/stage-libtensorflow.py stage \
      "/tmp/wheel/tensorflow_cpu-${TF_VERSION}-cp311-cp311-manylinux_2_27_x86_64.whl" \
      "${TF_WHEEL_SHA256}" node_modules/@tensorflow/tfjs-node \
 && rm -rf /tmp/wheel /root/.cache/pip

# Build the N-API binding from source against the staged library (node-gyp from the npm that ships
# in the image; the Node headers are under /usr/local/include/node), check that it loads, then keep
# only the two shared libraries it loads at run time, as regular files.
WORKDIR /app/node_modules/@tensorflow/tfjs-node
RUN npm_config_build_from_source=true npm_config_nodedir=/usr/local \
      PATH="/app/node_modules/.bin:${PATH}" node scripts/install.js \
 && python3 /usr/local/bin/stage-libtensorflow.py prune . \
 && node -e "require('./lib/napi-v8/tfjs_binding.node'); console.log('tfjs_binding loads')"

# ---------------------------------------------------------------------------------------------
FROM ${NODE_RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="densepipe-cpu-worker" \
      org.opencontainers.image.description="densepipe Temporal worker for the cpu task queue (TensorFlow 2.21.0 native backend)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV NODE_ENV=production \
    DENSEPIPE_BACKEND=tensorflow \
    TEMPORAL_NAMESPACE=default

WORKDIR /app
# Owned by root, read-only for the worker user: the worker writes only to S3 and its temp dir.
COPY --from=app /app /app
COPY --from=deps /app/node_modules /app/node_modules

# The unprivileged `node` user (uid/gid 1000) of the official Node images, numerically so that
# Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000

# Unhealthy when the worker cannot open a TCP connection to Temporal or to the S3 endpoint (a worker
# without them polls nothing); see docker/healthcheck.mjs for why this is not a liveness check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "docker/healthcheck.mjs"]

ENTRYPOINT ["node", "bin/densepipe.js"]
CMD ["worker", "--queue", "cpu"]
