#!/usr/bin/env python3
"""Turn the Kubernetes JSON schemas shipped in the PyPI kubernetes-validate wheel into a directory
kubeconform can read offline with -schema-location.

The wheel (kubernetes_validate/kubernetes-json-schema/v<version>-local-strict/<kind>-<group>-<version>.json)
already uses kubeconform's file naming, but its schemas point into a shared definitions file with
"$ref": "/api/_definitions.json#/$defs/..." and carry "$id": "https://kubernetes.io/api/...", so a
validator would try to fetch https://kubernetes.io/api/_definitions.json. This rewrites every such
reference to the absolute file:// URL of the local _definitions.json and drops the "$id"s, so all
references resolve on disk.

  k8s-schemas.py WHEEL SHA256 OUT_DIR KUBERNETES_VERSION...

writes OUT_DIR/v<version>-local-strict/*.json for each version (e.g. 1.30.0); kubeconform then takes
-schema-location 'OUT_DIR/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json'
"""
import hashlib
import json
import os
import shutil
import sys
import zipfile

SCHEMA_ROOT = 'kubernetes_validate/kubernetes-json-schema/'
SHARED_DEFINITIONS = '/api/_definitions.json#'


def fail(message):
    sys.stderr.write(f'k8s-schemas: error: {message}\n')
    sys.exit(1)


def localize(node, definitions_url):
    """Rewrite shared-definition $refs to definitions_url and drop $id, in place."""
    if isinstance(node, dict):
        node.pop('$id', None)
        ref = node.get('$ref')
        if isinstance(ref, str) and ref.startswith(SHARED_DEFINITIONS):
            node['$ref'] = definitions_url + ref[len(SHARED_DEFINITIONS):]
        for value in node.values():
            localize(value, definitions_url)
    elif isinstance(node, list):
        for value in node:
            localize(value, definitions_url)


def main(argv):
    if len(argv) < 5:
        fail('usage: k8s-schemas.py WHEEL SHA256 OUT_DIR KUBERNETES_VERSION...')
    wheel, expected_sha256, out_dir, versions = argv[1], argv[2], os.path.abspath(argv[3]), argv[4:]
    with open(wheel, 'rb') as handle:
        actual = hashlib.sha256(handle.read()).hexdigest()
    if actual != expected_sha256:
        fail(f'{wheel}: sha256 {actual} does not match the pinned {expected_sha256}')
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for version in versions:
            directory = f'v{version}-local-strict'
            prefix = f'{SCHEMA_ROOT}{directory}/'
            members = [name for name in names if name.startswith(prefix) and name.endswith('.json')]
            if not members:
                available = sorted({name[len(SCHEMA_ROOT):].split('/')[0] for name in names
                                    if name.startswith(SCHEMA_ROOT) and name.endswith('-local-strict/_definitions.json')})
                fail(f'{wheel} has no schemas for Kubernetes {version}; it has {", ".join(available)}')
            target = os.path.join(out_dir, directory)
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            definitions_url = 'file://' + os.path.join(target, '_definitions.json') + '#'
            for name in members:
                schema = json.loads(archive.read(name))
                localize(schema, definitions_url)
                with open(os.path.join(target, os.path.basename(name)), 'w') as handle:
                    json.dump(schema, handle)
            print(f'{target}: {len(members)} schemas')


if __name__ == '__main__':
    main(sys.argv)
