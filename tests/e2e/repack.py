"""A higher version of the package under test, for the upgrade test: the
same .deb repacked with `dpkg-deb` under another version.

Two things change, and only those: the control file's `Version:` and
`taskmasterd.__version__` in the shipped module (what the daemon's `Version`
property reports), with its line in DEBIAN/md5sums. Everything else --
maintainer scripts, units, every other module -- is the package under test,
so an upgrade to it runs exactly the scripts and code being tested, and the
new `Version` can only come from a daemon that imported the new files. A
second `make deb` from a copy of the tree with a bumped changelog would test
the same thing, slower.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE = "usr/lib/python3/dist-packages/taskmasterd/__init__.py"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)


def _run(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {proc.returncode}: {proc.stderr}")
    return proc.stdout


@dataclass(frozen=True)
class Repacked:
    deb: Path
    version: str  # the package's Version
    module_version: str  # its taskmasterd.__version__
    from_version: str  # those of the package it was made from
    from_module_version: str


def repack(deb: Path, workdir: Path, suffix: str) -> Repacked:
    """`deb` as version <upstream><suffix>-<revision> in `workdir`."""
    tree = workdir / "tree"
    _run("dpkg-deb", "-R", deb, tree)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    old = re.search(r"^Version: (\S+)$", text, re.M)
    if old is None:
        raise RuntimeError(f"{deb}: no Version in its control file")
    upstream, _, revision = old[1].rpartition("-")
    package_version = f"{upstream}{suffix}-{revision}" if upstream else f"{old[1]}{suffix}"
    control.write_text(text.replace(old[0], f"Version: {package_version}"))

    module = tree / MODULE
    source = module.read_text()
    found = VERSION_LINE.search(source)
    if found is None:
        raise RuntimeError(f"{deb}: no __version__ line in {MODULE}")
    module_version = f"{found[1]}{suffix}"
    module.write_text(source.replace(found[0], f'__version__ = "{module_version}"'))
    sums = tree / "DEBIAN" / "md5sums"
    digest = hashlib.md5(module.read_bytes()).hexdigest()
    lines = [f"{digest}  {MODULE}" if line.endswith(f"  {MODULE}") else line
             for line in sums.read_text().splitlines()]
    sums.write_text("\n".join(lines) + "\n")

    out = workdir / f"taskmasterd_{package_version}_all.deb"
    _run("dpkg-deb", "-Zgzip", "--build", tree, out)
    return Repacked(out, package_version, module_version, old[1], found[1])
