#!/usr/bin/env python3
"""Checks the repository's Dockerfile without a Docker daemon.

The Dockerfile is parsed with the `dockerfile` package (Docker's own Go parser, from PyPI),
then: it has a builder stage and a runtime stage; the runtime stage runs as a numeric
non-root user; the binaries it copies from the builder are exactly the workspace's binary
targets (from `cargo metadata`; the end-to-end harness's own helpers, such as its test
DNS responder, are not shipped), and so are the binaries the builder collects; and every
command the chart and the operator start (`operator`, `device-plugin`, the tiers' binaries)
is among them.

Usage: check_dockerfile.py [repository root] [Dockerfile, default <root>/Dockerfile]
"""

import json
import pathlib
import re
import subprocess
import sys

import dockerfile

# Packages whose binaries only the test harness runs on the host; the image leaves them out.
TEST_HARNESS_PACKAGES = {"shmdb-e2e"}


def fail(message):
    print(f"FAIL Dockerfile: {message}")
    sys.exit(1)


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    path = sys.argv[2] if len(sys.argv) > 2 else str(root / "Dockerfile")
    commands = dockerfile.parse_file(path)

    stages = []  # (name, [commands])
    for command in commands:
        if command.cmd == "FROM":
            value = command.value
            name = value[2] if len(value) >= 3 and value[1].upper() == "AS" else None
            stages.append((name, []))
        elif stages:
            stages[-1][1].append(command)
    if len(stages) < 2:
        fail(f"expected a multi-stage build, found {len(stages)} stage(s)")
    builder_names = {name for name, _ in stages[:-1] if name}
    runtime = stages[-1][1]

    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    if not users:
        fail("the runtime stage sets no USER (it would run as root)")
    uid = users[-1].split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        fail(f"the runtime user {users[-1]!r} is not a numeric non-root uid")

    copied = set()
    for command in runtime:
        if command.cmd != "COPY":
            continue
        sources = [f.split("=", 1)[1] for f in command.flags if f.startswith("--from=")]
        if not sources:
            continue
        if sources[0] not in builder_names:
            fail(f"COPY --from={sources[0]} names no earlier stage")
        for source in command.value[:-1]:
            copied.add(pathlib.PurePosixPath(source).name)

    built = set()
    for _, body in stages[:-1]:
        for command in body:
            if command.cmd == "RUN":
                for match in re.finditer(r"for bin in ([^;]+);", " ".join(command.value)):
                    built.update(match.group(1).split())

    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    workspace_bins = {
        target["name"]
        for package in metadata["packages"]
        if package["name"] not in TEST_HARNESS_PACKAGES
        for target in package["targets"]
        if "bin" in target["kind"]
    }
    if copied != workspace_bins:
        fail(
            f"the image copies {sorted(copied)} but the workspace has binaries "
            f"{sorted(workspace_bins)} (missing {sorted(workspace_bins - copied)}, "
            f"unknown {sorted(copied - workspace_bins)})"
        )
    if built != workspace_bins:
        fail(f"the builder collects {sorted(built)}, the workspace has {sorted(workspace_bins)}")

    started = set()
    for template in (root / "charts/shmdb/templates").glob("*.yaml"):
        started.update(re.findall(r'command: \["([^"]+)"\]', template.read_text()))
    names = (root / "operator/src/resources/names.rs").read_text()
    binary_fn = names[names.index("pub fn binary"):]
    started.update(re.findall(r'=> "([a-z-]+)"', binary_fn[: binary_fn.index("}\n")]))
    if not started:
        fail("found no command in the chart or the operator")
    if started - copied:
        fail(f"commands {sorted(started - copied)} are started but not in the image")
    print(f"ok   Dockerfile: {len(stages)} stages, user {users[-1]}, binaries {sorted(copied)}")
    print(f"ok   chart and operator start only binaries in the image: {sorted(started)}")


if __name__ == "__main__":
    main()
