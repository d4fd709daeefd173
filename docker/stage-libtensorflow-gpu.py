#!/usr/bin/env python3
"""Lay out the GPU build of libtensorflow and its CUDA 12 runtime from PyPI wheels, for the
@tensorflow/tfjs-node-gpu binding. Used by `scripts/setup.sh --gpu` and docker/gpu-worker.Dockerfile.

  stage  WHEEL_DIR PINS OUT   check every wheel of PINS (docker/gpu-wheels.txt) in WHEEL_DIR against its
                              sha256, then write OUT/ (the binding's deps/ directory):
                                lib/libtensorflow_cc.so.2, lib/libtensorflow_framework.so.2 (+ the
                                build-time linker names), include/ (C API headers),
                                nvidia/<package>/lib/*.so* (the CUDA runtime), nvidia/cuda_nvcc/{bin/ptxas,nvvm/},
                                MANIFEST.json (wheels, hashes, sizes)
  check  OUT                  load every CUDA runtime library (no GPU or driver needed for that) and
                              check that each directory the TensorFlow libraries search for it exists
  prune  OUT                  after the binding is built: drop the headers and the linker names

Why this layout: the wheel's libtensorflow_framework.so.2 / libtensorflow_cc.so.2 carry a RUNPATH of
`$ORIGIN/../nvidia/<package>/lib` entries (site-packages/tensorflow/ next to site-packages/nvidia/), and
TensorFlow dlopen()s libcudart, libcublas, libcudnn, ... through it. Keeping lib/ and nvidia/ as siblings
reproduces that without LD_LIBRARY_PATH. The directory must be reached as one unit (link `deps` itself, not
deps/lib): $ORIGIN is the path the library was opened by.
"""
import ast
import ctypes
import importlib.util
import json
import mmap
import os
import re
import shutil
import stat
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no docker/__pycache__ from importing the CPU script below
_spec = importlib.util.spec_from_file_location('stage_libtensorflow', os.path.join(HERE, 'stage-libtensorflow.py'))
cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu)  # RUNTIME_LIBRARIES, BUILD_TIME_LINKS, HEADER_PREFIXES, WHEEL_INCLUDE, sha256_of

# From the nvidia-* wheels: the shared libraries, and nvcc's ptxas + libdevice (what TensorFlow's XLA
# path looks for under nvidia/cuda_nvcc). Headers, static archives and Python files are left out.
NVIDIA_KEEP = re.compile(r'^nvidia/[a-z_]+/(lib/[^/]+\.so(\.[0-9.]+)?|bin/ptxas|nvvm/.+)$')
# RUNPATH entries of the TensorFlow libraries that no `and-cuda` wheel provides (TensorRT, NVSHMEM):
# TensorFlow treats both as optional.
OPTIONAL_RUNPATH = {'tensorrt', 'nvidia/nvshmem/lib'}


# The wheel's record of how it was built: CUDA and cuDNN versions, the GPU architectures compiled for.
BUILD_INFO = 'tensorflow/python/platform/build_info.py'


def build_info(source):
    """The `build_info = collections.OrderedDict([...])` literal of BUILD_INFO, as a dict."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'build_info':
            value = node.value
            if isinstance(value, ast.Call):  # collections.OrderedDict([(key, value), ...])
                return dict(ast.literal_eval(value.args[0]))
            return ast.literal_eval(value)
    fail(f'{BUILD_INFO} has no build_info literal')


def fail(message):
    sys.stderr.write(f'stage-libtensorflow-gpu: error: {message}\n')
    sys.exit(1)


def read_pins(path):
    """{normalised project name: (version, sha256)} from a `name==version --hash=sha256:HEX` file."""
    pins = {}
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            match = re.fullmatch(r'([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})', line)
            if not match:
                fail(f'{path}:{number}: expected `name==version --hash=sha256:HEX`, got {line!r}')
            name, version, digest = match.groups()
            pins[re.sub(r'[-_.]+', '-', name).lower()] = (version, digest)
    if 'tensorflow' not in pins:
        fail(f'{path} pins no tensorflow wheel')
    return pins


def wheel_project(filename):
    name, version = filename.split('-')[:2]
    return re.sub(r'[-_.]+', '-', name).lower(), version


def extract(archive, member, dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with archive.open(member) as src, open(dest, 'wb') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    mode = (member.external_attr >> 16) & 0o777
    os.chmod(dest, 0o755 if mode & stat.S_IXUSR else 0o644)


def stage(wheel_dir, pins_path, out):
    pins = read_pins(pins_path)
    wheels = {}
    for filename in sorted(os.listdir(wheel_dir)):
        if filename.endswith('.whl'):
            project, version = wheel_project(filename)
            if project not in pins:
                fail(f'{wheel_dir}/{filename} is not pinned in {pins_path}')
            if version != pins[project][0]:
                fail(f'{filename}: version {version}, {pins_path} pins {pins[project][0]}')
            wheels[project] = filename
    missing = sorted(set(pins) - set(wheels))
    if missing:
        fail(f'{wheel_dir} lacks the pinned wheels {", ".join(missing)}')

    shutil.rmtree(out, ignore_errors=True)
    lib_dir = os.path.join(out, 'lib')
    os.makedirs(lib_dir)
    manifest = {'tensorflowVersion': pins['tensorflow'][0], 'wheels': [], 'files': 0, 'bytes': 0}
    for project, filename in sorted(wheels.items()):
        path = os.path.join(wheel_dir, filename)
        digest = cpu.sha256_of(path)
        if digest != pins[project][1]:
            fail(f'{path}: sha256 {digest} does not match the pinned {pins[project][1]}')
        manifest['wheels'].append({'file': filename, 'sha256': digest, 'bytes': os.path.getsize(path)})
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                name = member.filename
                if name.endswith('/'):
                    continue
                dest = None
                if project == 'tensorflow' and name == BUILD_INFO:
                    manifest['build'] = build_info(archive.read(name).decode())
                if project == 'tensorflow':
                    base = os.path.basename(name)
                    if name == f'tensorflow/{base}' and base in cpu.RUNTIME_LIBRARIES:
                        dest = os.path.join(lib_dir, base)
                    elif name.startswith(cpu.WHEEL_INCLUDE) and name[len(cpu.WHEEL_INCLUDE):].startswith(cpu.HEADER_PREFIXES):
                        dest = os.path.join(out, 'include', name[len(cpu.WHEEL_INCLUDE):])
                elif NVIDIA_KEEP.match(name):
                    dest = os.path.join(out, name)
                if dest:
                    extract(archive, member, dest)
                    manifest['files'] += 1
                    manifest['bytes'] += member.file_size
    for library in cpu.RUNTIME_LIBRARIES:
        if not os.path.isfile(os.path.join(lib_dir, library)):
            fail(f'{wheels["tensorflow"]} has no tensorflow/{library}')
    if not manifest.get('build', {}).get('is_cuda_build'):
        fail(f'{wheels["tensorflow"]}: {BUILD_INFO} does not say is_cuda_build (a CPU-only wheel?)')
    if not os.path.isfile(os.path.join(out, 'include', 'tensorflow', 'c', 'c_api.h')):
        fail(f'{wheels["tensorflow"]} has no {cpu.WHEEL_INCLUDE}tensorflow/c/c_api.h')
    for link, target in cpu.BUILD_TIME_LINKS.items():
        os.symlink(target, os.path.join(lib_dir, link))
    with open(os.path.join(out, 'MANIFEST.json'), 'w') as handle:
        json.dump(manifest, handle, indent=2)
    build = manifest['build']
    print(f'TensorFlow {manifest["tensorflowVersion"]}: CUDA {build.get("cuda_version")}, cuDNN {build.get("cudnn_version")}, '
          f'GPU code for {", ".join(build.get("cuda_compute_capabilities", []))}')
    print(f'staged {manifest["files"]} files ({manifest["bytes"] / 2**30:.2f} GiB) from {len(wheels)} wheels into {out}')


def runpath_dirs(library):
    """The `$ORIGIN/../X` directories in a library's RUNPATH (read from its dynamic string table)."""
    with open(library, 'rb') as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        found = set(m.group(1).decode() for m in re.finditer(rb'\$ORIGIN/\.\./((?:nvidia/[a-z_]+/lib)|tensorrt)(?=[:\x00])', data))
    return sorted(found)


def check(out):
    lib_dir = os.path.join(out, 'lib')
    wanted = set()
    for library in cpu.RUNTIME_LIBRARIES:
        wanted.update(runpath_dirs(os.path.join(lib_dir, library)))
    if not wanted:
        fail(f'{lib_dir}: the TensorFlow libraries search no nvidia/*/lib directory: not a CUDA build')
    absent = sorted(d for d in wanted if not os.path.isdir(os.path.join(out, d)) and d not in OPTIONAL_RUNPATH)
    if absent:
        fail(f'{out} lacks {", ".join(absent)}, which the TensorFlow libraries search for CUDA libraries')
    loaded, need_driver = 0, []
    for package in sorted(os.listdir(os.path.join(out, 'nvidia'))):
        directory = os.path.join(out, 'nvidia', package, 'lib')
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            # libcupti's profiler helpers and NCCL's device IR are loaded only inside a CUDA context.
            if re.match(r'lib(checkpoint|nvperf_|pcsamplingutil|nccl_device)', name) or '.so' not in name:
                continue
            try:
                ctypes.CDLL(os.path.join(directory, name))
            except OSError as err:
                # A library linked against the driver itself (cuDNN's runtime-compiled engines) loads
                # only where libcuda.so.1 is; anything else missing is an error.
                if str(err).startswith('libcuda.so.1:'):
                    need_driver.append(name)
                    continue
                fail(f'{directory}/{name} does not load: {err}')
            loaded += 1
    present = sorted(d for d in wanted if os.path.isdir(os.path.join(out, d)))
    driver = f'; {len(need_driver)} need the NVIDIA driver (libcuda.so.1), absent here: {", ".join(need_driver)}' if need_driver else ''
    print(f'CUDA runtime: {loaded} libraries load{driver}; TensorFlow searches {", ".join(present)}'
          f'{" (absent, optional: " + ", ".join(sorted(wanted - set(present))) + ")" if wanted - set(present) else ""}')


def prune(out):
    lib_dir = os.path.join(out, 'lib')
    for link in cpu.BUILD_TIME_LINKS:
        path = os.path.join(lib_dir, link)
        if os.path.lexists(path):
            os.remove(path)
    shutil.rmtree(os.path.join(out, 'include'), ignore_errors=True)
    for library in cpu.RUNTIME_LIBRARIES:
        path = os.path.join(lib_dir, library)
        if os.path.islink(path) or not os.path.isfile(path):
            fail(f'{path} must be a regular file (the runtime image copies it as is)')
    print(f'pruned {out} to {", ".join(sorted(os.listdir(out)))}')


def main(argv):
    if len(argv) == 5 and argv[1] == 'stage':
        stage(argv[2], argv[3], argv[4])
    elif len(argv) == 3 and argv[1] == 'check':
        check(argv[2])
    elif len(argv) == 3 and argv[1] == 'prune':
        prune(argv[2])
    else:
        fail('usage: stage-libtensorflow-gpu.py stage WHEEL_DIR PINS OUT | check OUT | prune OUT')


if __name__ == '__main__':
    main(sys.argv)
