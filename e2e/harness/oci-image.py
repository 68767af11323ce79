#!/usr/bin/env python3
"""Writes a single-layer OCI image archive (oci-layout, index.json, blobs) from local files,
so images reach containerd with `ctr images import` and no registry.

usage: oci-image.py OUT.tar NAME:TAG ENTRYPOINT SRC[:DEST] ...
A SRC without DEST lands at /basename(SRC). A directory SRC is packed with everything under
it (symbolic links stay links), so a staged root file system can be passed as `ROOT:/`.
The archive is reproducible (fixed mtimes, root ownership, sorted entries), so an unchanged
input gives the same image digest.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def walk(src: str, dest: str):
    """(path on disk, name in the layer) of SRC and, for a directory, of all under it,
    parents before children, in a fixed order."""
    if dest:
        yield src, dest
    if os.path.isdir(src) and not os.path.islink(src):
        for root, dirs, names in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            base = dest if rel == "." else os.path.join(dest, rel)
            for name in sorted(dirs + names):
                yield os.path.join(root, name), os.path.join(base, name)


def add_entry(layer_tar: tarfile.TarFile, path: str, name: str) -> None:
    info = layer_tar.gettarinfo(path, arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if info.isfile():
        with open(path, "rb") as fh:
            layer_tar.addfile(info, fh)
    else:
        layer_tar.addfile(info)


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    out, ref, entrypoint, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as layer_tar:
        for spec in files:
            src, _, dest = spec.partition(":")
            dest = (dest or "/" + os.path.basename(src)).strip("/")
            for path, name in walk(src, dest):
                add_entry(layer_tar, path, name)
    layer_raw = raw.getvalue()
    # Level 1: the debug binaries make a layer of a few hundred MB, and the best ratio
    # would cost a minute of CPU on every run for a file that never leaves the machine.
    layer = gzip.compress(layer_raw, compresslevel=1, mtime=0)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [entrypoint], "Env": ["PATH=/bin:/"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(layer_raw)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(layer), "size": len(layer)}],
    }).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref,
                            "io.containerd.image.name": ref},
        }],
    }).encode()
    with tarfile.open(out, "w") as archive:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for data in (layer, config, manifest):
            add("blobs/sha256/" + digest(data).split(":")[1], data)


if __name__ == "__main__":
    main()
