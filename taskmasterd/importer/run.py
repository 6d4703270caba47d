"""Write the imported files and print the report (exit 0 written, 1 unreadable input, 2 usage)."""

from __future__ import annotations

import os
import sys

from taskmasterd.importer.convert import convert
from taskmasterd.importer.ini import InputError


def run(source: str, outdir: str, force: bool = False) -> int:
    try:
        result = convert(source)
    except InputError as exc:
        print(f"taskmasterd: {exc}", file=sys.stderr)
        return 1
    targets = {rel: os.path.join(outdir, rel) for rel in result.files}
    existing = [t for t in targets.values() if os.path.lexists(t)]
    if existing and not force:
        for t in existing:
            print(f"taskmasterd: {t} exists; not overwritten (use --force to replace it)",
                  file=sys.stderr)
        return 2
    for note in result.notes:
        print(note, file=sys.stderr)
    try:
        for rel, target in targets.items():
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            with open(target, "w", encoding="utf-8") as f:
                f.write(result.files[rel])
    except OSError as exc:
        print(f"taskmasterd: cannot write: {exc}", file=sys.stderr)
        return 1
    for rel, target in targets.items():
        names = result.programs.get(rel, [])
        replaced = " (replaced)" if target in existing else ""
        print(f"wrote {target}: {len(names)} program(s){replaced}")
    print(f"{len(result.notes)} note(s) on stderr; check with: "
          f"taskmasterd --check-config {targets['taskmaster.yaml']}")
    return 0
