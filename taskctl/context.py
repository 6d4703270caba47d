"""What a command runs with: the client, where to print, how."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from taskctl.client import Client


class Context:
    """What a command runs with. interactive: in the shell (never exec, Ctrl-C
    returns to the prompt)."""

    def __init__(self, client: Client, out: TextIO, err: TextIO, json: bool = False,
                 interactive: bool = False) -> None:
        self.client = client
        self.out = out
        self.err = err
        self.json = json
        self.interactive = interactive

    def print(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def emit(self, as_json: Any, lines: Iterable[str]) -> None:
        """A result: `as_json` with --json (taskctl.format.dumps), else its lines."""
        if self.json:
            from taskctl.format import dumps

            self.print(dumps(as_json))
            return
        for line in lines:
            self.print(line)

    def error(self, line: str) -> None:
        self.out.flush()
        self.err.write(line + "\n")
        self.err.flush()
