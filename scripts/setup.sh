#!/usr/bin/env bash
# densepipe set-up: everything the demo and the tests need, installed idempotently from package
# registries only (npm, PyPI, the Go module proxy). Safe to run again: each step checks first.
#
#   1. npm dependencies (npm install from the lock file, only when package-lock.json changed)
#   2. libtensorflow 2.21.0 (C API .so files + headers) from the PyPI tensorflow-cpu wheel, cached
#   3. the @tensorflow/tfjs-node N-API binding, built from source against it
#   4. the Temporal CLI dev server and the versitygw S3 server, built with `go install`, cached
#   5. the TypeScript build (dist/) and the prebuilt Temporal workflow bundle
#   6. with --test-tools (what `npm test` passes): the deployment linters of scripts/lint-infra.sh
#   7. with --test-tools: Debian's chromium, for the headless check of the regression report
#   with --gpu (after step 3): the GPU build of libtensorflow 2.21.0 and its CUDA 12 runtime from the
#      PyPI tensorflow + nvidia-*-cu12 wheels (docker/gpu-wheels.txt), and the @tensorflow/tfjs-node-gpu
#      binding built from source against it into .gpu/ (the CPU binding is left as it is); select it
#      with DENSEPIPE_TFJS_NODE (docs/NATIVE-BACKEND.md, "GPU"). Needs ~9 GB free once, ~5.3 GB after.
set -euo pipefail

TEST_TOOLS=0
GPU=0
for arg in "$@"; do
  case "$arg" in
    --test-tools) TEST_TOOLS=1 ;;
    --gpu) GPU=1 ;;
    *) echo "setup: unknown option $arg (known: --test-tools, --gpu)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DENSEPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/densepipe}
BIN=$CACHE/bin
TEMPORAL_CLI_VERSION=v1.5.1   # newest temporalio/cli tag whose go.mod has no replace directive
VERSITYGW_VERSION=v1.8.0
TF_VERSION=2.21.0
# The wheel is pinned by hash; its .so files do not depend on the Python version it was built for.
TF_WHEEL=tensorflow_cpu-${TF_VERSION}-cp311-cp311-manylinux_2_27_x86_64.whl
TF_WHEEL_SHA256=2b847d217b02ee7731ed91431daf3250daa0196c3c94614d23be27232e6e5b6c
LIBTF=$CACHE/libtensorflow-$TF_VERSION
# --gpu: the wheels are pinned by version and sha256 in docker/gpu-wheels.txt (shared with the GPU image);
# the tfjs-node-gpu tarball by the registry's sha512 (same as docker/gpu-worker.Dockerfile's ARGs).
GPU_WHEELS=docker/gpu-wheels.txt
LIBTF_GPU=$CACHE/libtensorflow-gpu-$TF_VERSION
TFJS_NODE_GPU_VERSION=4.22.0
TFJS_NODE_GPU_INTEGRITY=sha512-p//NN6DGiN4hInUmIkRffaFVMcdTREUMjPyjW04J7OXvB2zBlQimj61eFKSgRrH3f5TnOfKzb0n56he/B6a4bw==
GPU_PKG=.gpu/node_modules/@tensorflow/tfjs-node-gpu

say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

cd "$ROOT"
mkdir -p "$BIN"

# --- 0. toolchains --------------------------------------------------------------------------
command -v node >/dev/null || die "Node.js 20+ is required (not found on PATH)"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=3)?0:1)' \
  || die "Node.js >= 20.3 is required (found $(node --version))"
command -v npm >/dev/null || die "npm is required (not found on PATH)"

# --- 1. npm dependencies ---------------------------------------------------------------------
lock_hash=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f node_modules/.densepipe-lock ] || [ "$(cat node_modules/.densepipe-lock)" != "$lock_hash" ]; then
  say "installing npm dependencies"
  # tfjs-node's own install script would download libtensorflow from the internet; package.json's
  # allowScripts keeps npm from running it, and step 3 builds the binding instead.
  # `npm install` (honouring package-lock.json), not `npm ci`: the registry mirror these machines
  # reach serves only this platform's optional packages (@swc/core-darwin-* etc. answer 404), so
  # the lock file cannot list them and `npm ci` would refuse it as out of sync. npm install then
  # writes the platform's optional packages into the lock; the tracked lock is put back afterwards,
  # so set-up leaves a fresh clone clean (`.ci/run` checks that).
  cp package-lock.json "$CACHE/package-lock.tracked.json"
  npm install --no-audit --no-fund
  cp "$CACHE/package-lock.tracked.json" package-lock.json
  echo "$lock_hash" > node_modules/.densepipe-lock
fi

# --- 2. libtensorflow from the tensorflow-cpu wheel -------------------------------------------
if [ ! -f "$LIBTF/.complete" ]; then
  command -v python3 >/dev/null || die "python3 with pip is needed once, to fetch libtensorflow from PyPI (tensorflow-cpu==$TF_VERSION)"
  say "fetching libtensorflow $TF_VERSION from PyPI (tensorflow-cpu wheel, ~270 MB, once)"
  tmp=$(mktemp -d "$CACHE/wheel.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_27_x86_64 "tensorflow-cpu==$TF_VERSION" -d "$tmp" \
    || die "pip could not download tensorflow-cpu==$TF_VERSION (is PyPI reachable?)"
  echo "$TF_WHEEL_SHA256  $tmp/$TF_WHEEL" | sha256sum -c --quiet - || die "tensorflow-cpu wheel hash mismatch"
  rm -rf "$LIBTF" && mkdir -p "$LIBTF/lib"
  python3 - "$tmp/$TF_WHEEL" "$LIBTF" <<'PY'
import sys, zipfile, os, shutil
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name in ('tensorflow/libtensorflow_cc.so.2', 'tensorflow/libtensorflow_framework.so.2'):
            with z.open(name) as src, open(os.path.join(out, 'lib', os.path.basename(name)), 'wb') as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        elif name.startswith('tensorflow/include/') and not name.endswith('/'):
            rel = name[len('tensorflow/include/'):]
            # Only the C API headers and what they include; the C++ and Eigen trees are not needed.
            if rel.startswith(('tensorflow/c/', 'tensorflow/core/platform/', 'tsl/platform/', 'xla/tsl/c/', 'tsl/c/')):
                dest = os.path.join(out, 'include', rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with z.open(name) as src, open(dest, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
PY
  # tfjs-node links -ltensorflow -ltensorflow_framework; its install script treats an existing
  # libtensorflow.so.2.9.1 as "already downloaded". The wheel's libtensorflow_cc.so.2 exports the C API.
  ln -sf libtensorflow_cc.so.2 "$LIBTF/lib/libtensorflow.so"
  ln -sf libtensorflow_framework.so.2 "$LIBTF/lib/libtensorflow_framework.so"
  ln -sf libtensorflow_cc.so.2 "$LIBTF/lib/libtensorflow.so.2.9.1"
  touch "$LIBTF/.complete"
  rm -rf "$tmp"; trap - EXIT
fi

# --- 3. the tfjs-node binding -------------------------------------------------------------------
TFJS=node_modules/@tensorflow/tfjs-node
if ! node -e "require('./$TFJS/lib/napi-v8/tfjs_binding.node')" 2>/dev/null; then
  say "building the @tensorflow/tfjs-node binding against libtensorflow $TF_VERSION"
  rm -rf "$TFJS/deps" && mkdir -p "$TFJS/deps"
  ln -s "$LIBTF/lib" "$TFJS/deps/lib"
  ln -s "$LIBTF/include" "$TFJS/deps/include"
  nodedir=$(node -p "require('path').resolve(process.execPath, '../..')")
  [ -f "$nodedir/include/node/node_api.h" ] || die "Node headers not found under $nodedir/include/node (install the nodejs headers package)"
  ( cd "$TFJS" && PATH="$ROOT/node_modules/.bin:$PATH" npm_config_nodedir="$nodedir" npm_config_build_from_source=true \
      node scripts/install.js ) >"$CACHE/tfjs-node-build.log" 2>&1 \
    || die "tfjs-node binding build failed; see $CACHE/tfjs-node-build.log"
  node -e "require('./$TFJS/lib/napi-v8/tfjs_binding.node')" || die "tfjs-node binding built but does not load"
fi

# --- 3b. with --gpu: the GPU libtensorflow and the tfjs-node-gpu binding ------------------------------
if [ "$GPU" = 1 ]; then
  # Restaged when the pins or the staging script change.
  wheels_hash=$(cat "$GPU_WHEELS" docker/stage-libtensorflow-gpu.py | sha256sum | cut -c1-16)
  if [ "$(cat "$LIBTF_GPU/.complete" 2>/dev/null)" != "$wheels_hash" ]; then
    command -v python3 >/dev/null || die "python3 with pip is needed to fetch the GPU libtensorflow from PyPI"
    free_kb=$(df -Pk "$CACHE" | awk 'NR==2 {print $4}')
    [ "$free_kb" -ge $((9 * 1024 * 1024)) ] \
      || die "--gpu needs ~9 GB free in $CACHE (3.3 GB of wheels while 5.3 GB are unpacked); $((free_kb / 1024 / 1024)) GB are"
    say "fetching the GPU build of libtensorflow $TF_VERSION and its CUDA 12 runtime from PyPI ($GPU_WHEELS: 13 wheels, ~3.3 GB, once)"
    tmp=$(mktemp -d "$CACHE/gpu-wheels.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    # The .so files do not depend on the Python version; the tags cover the wheels' manylinux levels.
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes --python-version 3.11 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_25_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 \
      -r "$GPU_WHEELS" -d "$tmp" || die "pip could not download the wheels of $GPU_WHEELS (is PyPI reachable? hash mismatch?)"
    python3 docker/stage-libtensorflow-gpu.py stage "$tmp" "$GPU_WHEELS" "$LIBTF_GPU" || die "staging the GPU libtensorflow failed"
    rm -rf "$tmp"; trap - EXIT
    python3 docker/stage-libtensorflow-gpu.py check "$LIBTF_GPU" || die "the CUDA runtime in $LIBTF_GPU is incomplete"
    echo "$wheels_hash" > "$LIBTF_GPU/.complete"
  fi
  gpu_stamp="$TFJS_NODE_GPU_VERSION $wheels_hash $LIBTF_GPU"
  if [ "$(cat .gpu/.complete 2>/dev/null)" != "$gpu_stamp" ] || ! node -e "require('./$GPU_PKG/lib/napi-v8/tfjs_binding.node')" 2>/dev/null; then
    say "building the @tensorflow/tfjs-node-gpu $TFJS_NODE_GPU_VERSION binding against the GPU libtensorflow $TF_VERSION (into .gpu/)"
    rm -rf .gpu && mkdir -p "$(dirname "$GPU_PKG")"
    tgz=$(npm pack --silent --pack-destination .gpu "@tensorflow/tfjs-node-gpu@$TFJS_NODE_GPU_VERSION") \
      || die "npm pack @tensorflow/tfjs-node-gpu@$TFJS_NODE_GPU_VERSION failed (is the npm registry reachable?)"
    node -e "const [f, want] = process.argv.slice(1); const got = 'sha512-' + require('crypto').createHash('sha512').update(require('fs').readFileSync(f)).digest('base64'); if (got !== want) { console.error(f + ': ' + got + ' is not the pinned ' + want); process.exit(1); }" \
      ".gpu/$tgz" "$TFJS_NODE_GPU_INTEGRITY" || die "tfjs-node-gpu tarball integrity mismatch"
    mkdir "$GPU_PKG" && tar -xzf ".gpu/$tgz" --strip-components=1 -C "$GPU_PKG" && rm ".gpu/$tgz"
    # deps/ as ONE link to the staged tree: libtensorflow's RUNPATH $ORIGIN/../nvidia/* must land in it.
    # The package's requires (@tensorflow/tfjs, node-pre-gyp, ...) resolve to ./node_modules, the same
    # tfjs instance as the app's; tfjs-node-gpu 4.22.0 declares the same dependencies as tfjs-node.
    ln -s "$LIBTF_GPU" "$GPU_PKG/deps"
    nodedir=$(node -p "require('path').resolve(process.execPath, '../..')")
    [ -f "$nodedir/include/node/node_api.h" ] || die "Node headers not found under $nodedir/include/node (install the nodejs headers package)"
    ( cd "$GPU_PKG" && PATH="$ROOT/node_modules/.bin:$PATH" npm_config_nodedir="$nodedir" npm_config_build_from_source=true \
        node scripts/install.js gpu ) >"$CACHE/tfjs-node-gpu-build.log" 2>&1 \
      || die "tfjs-node-gpu binding build failed; see $CACHE/tfjs-node-gpu-build.log"
    node -e "require('./$GPU_PKG/lib/napi-v8/tfjs_binding.node')" || die "tfjs-node-gpu binding built but does not load"
    echo "$gpu_stamp" > .gpu/.complete
  fi
  say "GPU binding ready: DENSEPIPE_TFJS_NODE=$ROOT/$GPU_PKG selects it; \`npm run bench -- gpu-build\` checks it"
fi

# --- 4. Temporal CLI and versitygw ------------------------------------------------------------
go_install() { # name module version
  local name=$1 module=$2 version=$3
  if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/.$name.version" 2>/dev/null)" = "$version" ]; then return; fi
  command -v go >/dev/null || die "Go is required to build $name ($module@$version); install Go >= 1.25 and re-run"
  say "building $name $version with go install (a few minutes, once)"
  GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "$module@$version" || die "go install $module@$version failed"
  echo "$version" > "$BIN/.$name.version"
}
go_install temporal github.com/temporalio/cli/cmd/temporal "$TEMPORAL_CLI_VERSION"
go_install versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"

# --- 5. build ---------------------------------------------------------------------------------
say "compiling TypeScript"
npx tsc -p tsconfig.json
node scripts/bundle-workflows.mjs

# --- 6. test-only tools -------------------------------------------------------------------------
if [ "$TEST_TOOLS" = 1 ] && ! bash scripts/lint-infra.sh --installed >/dev/null 2>&1; then
  say "installing the deployment linters (hadolint, shellcheck, kubeconform, kustomize; once)"
  bash scripts/lint-infra.sh --install
fi
# --- 7. Chromium for the regression report's headless-browser check ------------------------------
# test/regression drives Debian's chromium through playwright-core; without it that one check is
# skipped (and says so). Installed only when missing and apt-get can run; never fatal.
if [ "$TEST_TOOLS" = 1 ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=; [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null && SUDO=sudo; }
  if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
    say "installing chromium from Debian (headless check of the regression report; once)"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
      || say "warning: apt-get could not install chromium; the regression report's browser check will be skipped"
  else
    say "note: chromium is missing and apt-get needs root; the regression report's browser check will be skipped"
  fi
fi
say "ready (tools in $BIN)"
