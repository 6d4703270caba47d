"""Set-up shared by every suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Our sources' .pyc, compiled once, as an installed copy has them: the
    tests start hundreds of daemons, taskctls and task runners from the tree,
    and where PYTHONDONTWRITEBYTECODE is set (some machines set it) each of
    them compiled every module again (~0.1 s of CPU a start). The same as
    bench/drivers.py's project_python(); `make deb` leaves __pycache__ out."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "taskmasterd"),
                    str(ROOT / "taskctl")], env=env, stdout=subprocess.DEVNULL, check=False)
