"""python -m taskmasterd"""

from collections.abc import Callable

from taskmasterd import missing


def _main() -> Callable[[], int]:
    from taskmasterd.cli import main

    return main


raise SystemExit(missing.run("taskmasterd", _main))
