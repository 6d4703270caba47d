"""The `redirect_stderr:` key of a program (issue 19, docs/config.md): its
rule with the output keys. Pure: no I/O.

With `redirect_stderr: true` stderr goes wherever stdout goes (supervisord's
redirect_stderr): the same file — the same descriptor, or the one pipe to
the log writer when the file is bounded, so both streams keep their order —,
the same journal stream, or nowhere. A `stderr:` of its own would be a
second destination that is never used: refused. stderr_maxbytes and
stderr_backups have nothing to bound (stdout's apply). With `console: true`
both streams already are the terminal: allowed, without effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def redirect_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each rule `redirect_stderr` breaks; the key is
    where the error is shown."""
    if not values.get("redirect_stderr", False) or values.get("console", False):
        return []  # (a console's stderr rule is console_problems')
    if "stderr" in values:
        return [("stderr", "stderr goes where stdout goes (redirect_stderr: true); remove "
                           "stderr, or redirect_stderr to give stderr a destination of its own")]
    return []
