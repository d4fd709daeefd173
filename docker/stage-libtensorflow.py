#!/usr/bin/env python3
"""Lay out libtensorflow from the PyPI tensorflow-cpu wheel for the @tensorflow/tfjs-node build.

Used by docker/cpu-worker.Dockerfile (builder stage); it mirrors step 2-3 of scripts/setup.sh but
writes REAL files into node_modules/@tensorflow/tfjs-node/deps, because `COPY --from=builder`
copies symlinks as symlinks and a link into a builder-only cache would dangle in the runtime image.

  stage  WHEEL SHA256 TFJS_NODE_DIR   verify the wheel hash, extract the two C-API shared
                                      libraries and the C headers, add the build-time linker names
  extract WHEEL SHA256 OUT_DIR        the same into OUT_DIR/{lib,include}: the layout of
                                      scripts/setup.sh's cache ($CACHE/libtensorflow-VERSION), which
                                      is what the cpu image's `libtensorflow` stage holds
  prune  TFJS_NODE_DIR                after the addon is built: drop headers, linker-name links and
                                      node-gyp objects, keeping only what the binding loads at run
                                      time (libtensorflow_cc.so.2, libtensorflow_framework.so.2)
"""
import hashlib
import os
import shutil
import sys
import zipfile

# The binding's DT_NEEDED entries are these sonames (readelf -d tfjs_binding.node), so they are the
# only files the runtime needs; both are regular files inside the wheel.
RUNTIME_LIBRARIES = ('libtensorflow_cc.so.2', 'libtensorflow_framework.so.2')

# binding.gyp links -ltensorflow -ltensorflow_framework; tfjs-node's scripts/install.js skips its
# internet download when deps/lib/libtensorflow.so.2.9.1 exists. The wheel's libtensorflow_cc.so.2
# exports the TensorFlow C API, so all three names point at the two real files.
BUILD_TIME_LINKS = {
    'libtensorflow.so': 'libtensorflow_cc.so.2',
    'libtensorflow.so.2.9.1': 'libtensorflow_cc.so.2',
    'libtensorflow_framework.so': 'libtensorflow_framework.so.2',
}

# Only the C API headers and what they include; the wheel's C++/Eigen/absl trees are not needed.
HEADER_PREFIXES = ('tensorflow/c/', 'tensorflow/core/platform/', 'tsl/platform/', 'tsl/c/', 'xla/tsl/c/')
WHEEL_INCLUDE = 'tensorflow/include/'


def fail(message):
    sys.stderr.write(f'stage-libtensorflow: error: {message}\n')
    sys.exit(1)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def stage(wheel, expected_sha256, tfjs_node_dir):
    if not os.path.isfile(os.path.join(tfjs_node_dir, 'binding.gyp')):
        fail(f'{tfjs_node_dir} is not the @tensorflow/tfjs-node package (no binding.gyp)')
    extract(wheel, expected_sha256, os.path.join(tfjs_node_dir, 'deps'))


def extract(wheel, expected_sha256, deps):
    if not os.path.isfile(wheel):
        fail(f'wheel not found: {wheel}')
    actual = sha256_of(wheel)
    if actual != expected_sha256:
        fail(f'{wheel}: sha256 {actual} does not match the pinned {expected_sha256}')

    shutil.rmtree(deps, ignore_errors=True)
    lib_dir = os.path.join(deps, 'lib')
    include_dir = os.path.join(deps, 'include')
    os.makedirs(lib_dir)

    found = set()
    headers = 0
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            base = os.path.basename(name)
            if name == f'tensorflow/{base}' and base in RUNTIME_LIBRARIES:
                with archive.open(name) as src, open(os.path.join(lib_dir, base), 'wb') as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                found.add(base)
            elif name.startswith(WHEEL_INCLUDE) and not name.endswith('/'):
                relative = name[len(WHEEL_INCLUDE):]
                if relative.startswith(HEADER_PREFIXES):
                    dest = os.path.join(include_dir, relative)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with archive.open(name) as src, open(dest, 'wb') as dst:
                        shutil.copyfileobj(src, dst)
                    headers += 1
    missing = [lib for lib in RUNTIME_LIBRARIES if lib not in found]
    if missing:
        fail(f'{wheel} has no tensorflow/{", tensorflow/".join(missing)}')
    if not os.path.isfile(os.path.join(include_dir, 'tensorflow', 'c', 'c_api.h')):
        fail(f'{wheel} has no {WHEEL_INCLUDE}tensorflow/c/c_api.h')
    for link, target in BUILD_TIME_LINKS.items():
        os.symlink(target, os.path.join(lib_dir, link))
    print(f'staged {", ".join(RUNTIME_LIBRARIES)} and {headers} headers into {deps}')


def prune(tfjs_node_dir):
    deps = os.path.join(tfjs_node_dir, 'deps')
    lib_dir = os.path.join(deps, 'lib')
    for library in RUNTIME_LIBRARIES:
        path = os.path.join(lib_dir, library)
        if os.path.islink(path) or not os.path.isfile(path):
            fail(f'{path} must be a regular file (the runtime image copies it as is)')
    for link in BUILD_TIME_LINKS:
        path = os.path.join(lib_dir, link)
        if os.path.lexists(path):
            os.remove(path)
    shutil.rmtree(os.path.join(deps, 'include'), ignore_errors=True)
    # node-gyp's object files and Makefiles; the loadable addon lives in lib/napi-v*/.
    shutil.rmtree(os.path.join(tfjs_node_dir, 'build'), ignore_errors=True)
    print(f'pruned {deps} to {", ".join(sorted(os.listdir(lib_dir)))}')


def main(argv):
    if len(argv) == 5 and argv[1] == 'stage':
        stage(argv[2], argv[3], argv[4])
    elif len(argv) == 5 and argv[1] == 'extract':
        extract(argv[2], argv[3], argv[4])
    elif len(argv) == 3 and argv[1] == 'prune':
        prune(argv[2])
    else:
        fail('usage: stage-libtensorflow.py stage WHEEL SHA256 TFJS_NODE_DIR | extract WHEEL SHA256 OUT_DIR | prune TFJS_NODE_DIR')


if __name__ == '__main__':
    main(sys.argv)
