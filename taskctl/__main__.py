"""python -m taskctl"""

import sys
from collections.abc import Callable

from taskmasterd import missing


def _main() -> Callable[[], int]:
    from taskctl.cli import main

    return main


sys.exit(missing.run("taskctl", _main))
