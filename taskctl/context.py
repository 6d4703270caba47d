"""What a command runs with: the client, where to print, how."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

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

    def error(self, line: str) -> None:
        self.out.flush()
        self.err.write(line + "\n")
        self.err.flush()
