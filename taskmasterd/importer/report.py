"""The notes: one line per thing not carried over, `file:line: [section] option: why`."""

from __future__ import annotations

from dataclasses import dataclass

from taskmasterd.importer.ini import Section


@dataclass(frozen=True)
class Note:
    path: str
    line: int
    section: str
    option: str | None
    message: str

    def __str__(self) -> str:
        what = f"{self.option}: " if self.option else ""
        return f"{self.path}:{self.line}: [{self.section}] {what}{self.message}"


class Notes(list[Note]):
    def add(self, section: Section, option: str | None, message: str) -> None:
        path, line = section.where(option)
        self.append(Note(path, line, section.name, option, message))
