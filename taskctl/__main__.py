"""python -m taskctl"""

import sys

from taskmasterd.missing import hint

try:
    from taskctl.cli import main

    code = main()
except ModuleNotFoundError as exc:
    line = hint(exc, "taskctl", sys.executable)
    if line is None:
        raise
    print(line, file=sys.stderr)
    code = 1
sys.exit(code)
