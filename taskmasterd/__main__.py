import sys

from taskmasterd.missing import hint

try:
    from taskmasterd.cli import main

    code = main()
except ModuleNotFoundError as exc:
    line = hint(exc, "taskmasterd", sys.executable)
    if line is None:
        raise
    print(line, file=sys.stderr)
    code = 1
raise SystemExit(code)
