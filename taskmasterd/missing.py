"""One clear line, not a traceback, when `python3 -m taskctl` (or
taskmasterd) runs on a Python without our dependencies: typically Debian's
/usr/bin/python3 in a clone, where they live in the clone's .venv."""

from __future__ import annotations

import sys
from collections.abc import Callable

# The dependencies (pyproject.toml) by module, with their Debian package.
DEBIAN_PACKAGES = {"jeepney": "python3-jeepney", "dbus_next": "python3-dbus-next",
                   "yaml": "python3-yaml", "systemd": "python3-systemd", "apprise": "apprise"}


def hint(exc: ModuleNotFoundError, program: str, executable: str) -> str | None:
    """The line to print for a missing dependency; None for any other module
    (a bug: its traceback is wanted)."""
    top = (exc.name or "").partition(".")[0]
    package = DEBIAN_PACKAGES.get(top)
    if package is None:
        return None
    return (f"{program}: {executable} has no module {top!r}: use the virtualenv, "
            f"`sh bootstrap setup` then .venv/bin/{program} (in a clone), "
            f"or install it: apt install {package}")


def run(program: str, load_main: Callable[[], Callable[[], int]]) -> int:
    """`python -m PROGRAM`: import its main (through `load_main`) and run it;
    a missing dependency is one line and exit 1."""
    try:
        return load_main()()
    except ModuleNotFoundError as exc:
        line = hint(exc, program, sys.executable)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
