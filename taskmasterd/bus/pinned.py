"""The one dbus-next version taskmasterd runs on.

`taskmasterd.bus.messagebus` subclasses dbus-next's MessageBus, its message
writer and its unmarshaller, overrides private methods and copies a few
library functions (each marked with its upstream name): that is only right
for the version it was written against, the one Debian 12 ships. pip and
apt are told (pyproject.toml: `dbus-next==0.2.3`; debian/control: the
0.2.3 range); `check()` catches what they cannot (a venv sharing the system's
site-packages, a `--no-deps` install, a source checkout run by hand).
"""

from __future__ import annotations

import functools
import importlib.metadata

REQUIRED = "0.2.3"
DISTRIBUTION = "dbus-next"


class WrongDbusNext(Exception):
    """Another dbus-next than REQUIRED is installed: the message says which and what to do."""


@functools.cache
def found_version() -> str | None:
    """The installed dbus-next's version (pip's dist-info or Debian's egg-info), None if none
    (looked up once: it scans sys.path)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def problem(found: str | None) -> str | None:
    """One line saying what is wrong with dbus-next `found`, or None when it is REQUIRED."""
    if found == REQUIRED:
        return None
    what = f"dbus-next {found} is installed" if found else "dbus-next is not installed"
    return (f"{what}, taskmasterd needs exactly {REQUIRED} (it extends that version's internals): "
            f"pip install 'dbus-next=={REQUIRED}', or on Debian 12: apt install python3-dbus-next")


def check_installed() -> None:
    """Raise WrongDbusNext unless the installed dbus-next is REQUIRED """
    message = problem(found_version())
    if message is not None:
        raise WrongDbusNext(message)
