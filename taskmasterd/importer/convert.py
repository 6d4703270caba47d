"""A supervisord configuration tree -> the Taskmaster files (text) and the notes.

Layout (issue 19): `taskmaster.yaml` holds the `taskmasterd:` settings and
the main file's programs; each included file that has programs becomes
`conf.d/<its name>.yaml`, and the main file includes `conf.d/*.yaml` when
the source had an [include]. A section that supervisord merges from two
files (same name) is merged here too and stays in the file that defined it
first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from taskmasterd.importer.ini import Section, SourceFile, Tree, read_tree
from taskmasterd.importer.ordering import derive_after
from taskmasterd.importer.others import note_section, read_daemon
from taskmasterd.importer.programs import Program, read_program
from taskmasterd.importer.report import Note, Notes
from taskmasterd.importer.yamlout import dump

MAIN = "taskmaster.yaml"
INCLUDE_GLOB = "conf.d/*.yaml"


@dataclass
class Converted:
    files: dict[str, str] = field(default_factory=dict)  # relative output path -> text
    programs: dict[str, list[str]] = field(default_factory=dict)  # output path -> program names
    notes: Notes = field(default_factory=Notes)


def convert(path: str) -> Converted:
    """Read `path` (raises ini.InputError) and build the output."""
    return convert_tree(read_tree(path))


def _merge(tree: Tree, notes: Notes) -> list[tuple[SourceFile, list[Section]]]:
    """Each file with the sections it defines first; later definitions merged in."""
    seen: dict[str, Section] = {}
    out: list[tuple[SourceFile, list[Section]]] = []
    for f in [tree.main, *tree.includes]:
        own: list[Section] = []
        for sec in f.sections:
            first = seen.get(sec.name)
            if first is None or sec.name == "include":  # an included one is ignored (below)
                seen[sec.name] = sec
                own.append(sec)
                continue
            notes.add(sec, None, f"also defined at {first.path}:{first.line}; merged, the later "
                                 "options win (as supervisord does)")
            first.options.update(sec.options)
            first.lines.update(sec.lines)
            first.files.update(sec.files)
        out.append((f, own))
    return out


def convert_tree(tree: Tree) -> Converted:
    result = Converted()
    notes = result.notes
    for fpath, line, pattern in tree.unmatched:
        notes.append(Note(fpath, line, "include", "files", f"no file matches {pattern}"))
    per_file = _merge(tree, notes)
    groups = _groups(per_file)
    daemon: dict[str, Any] = {}
    programs: list[tuple[SourceFile, Program]] = []
    taken: set[str] = set()
    for f, sections in per_file:
        for sec in sections:
            if sec.kind == "program":
                group = groups.get(sec.label.strip())
                p = read_program(sec, notes, group[0] if group else None)
                p.name = _unique(p.name, taken, sec, notes)
                programs.append((f, p))
            elif sec.name == "supervisord" and f is tree.main:
                daemon = read_daemon(sec, notes)
            elif sec.name == "supervisord":
                notes.add(sec, None, "not carried over: only the main file's [supervisord] counts")
            else:
                note_section(sec, notes, f is tree.main)
    if not any(s.name == "supervisord" for _, ss in per_file for s in ss):
        notes.append(Note(tree.main.path, 1, "supervisord", None,
                          "missing (supervisord refuses such a file); imported anyway"))
    level_of = {p.name: _level(p, groups) for _, p in programs}
    after = derive_after([p for _, p in programs], level_of)
    for _, p in programs:
        if p.name in after:
            p.body["after"] = after[p.name]
            where = "priority" if "priority" in p.source.options else None
            notes.add(p.source, where,
                      f"priority {level_of[p.name]}: written as after: [{', '.join(after[p.name])}] "
                      "(it starts once they are RUNNING; supervisord only starts them first)")
    has_include = bool(tree.includes) or any(s.name == "include" for s in tree.main.sections)
    _layout(result, tree, programs, daemon, has_include)
    # the report reads file by file, top to bottom
    order = {f.path: i for i, f in enumerate([tree.main, *tree.includes])}
    result.notes.sort(key=lambda n: (order.get(n.path, len(order)), n.line))
    return result


def _groups(per_file: list[tuple[SourceFile, list[Section]]]) -> dict[str, tuple[str, int]]:
    """program label -> (its [group:x] name, the group's priority)."""
    out: dict[str, tuple[str, int]] = {}
    for _, sections in per_file:
        for sec in sections:
            if sec.kind != "group":
                continue
            try:
                prio = int(sec.options.get("priority", "999"))
            except ValueError:
                prio = 999
            for member in sec.options.get("programs", "").split(","):
                if member.strip():
                    out[member.strip()] = (sec.label.strip(), prio)
    return out


def _level(p: Program, groups: dict[str, tuple[str, int]]) -> int:
    group = groups.get(p.source.label.strip())
    return group[1] if group else p.priority


def _unique(name: str, taken: set[str], sec: Section, notes: Notes) -> str:
    final, n = name, 2
    while final in taken:
        final, n = f"{name}-{n}", n + 1
    if final != name:
        notes.add(sec, None, f"program name {name!r} is taken; written as {final!r}")
    taken.add(final)
    return final


def _header(sources: list[str]) -> str:
    return ("Imported from supervisord's " + ", ".join(sources) + "\n"
            "by taskmasterd --import-supervisord: check the notes it printed.\n")


def _layout(result: Converted, tree: Tree, programs: list[tuple[SourceFile, Program]],
            daemon: dict[str, Any], has_include: bool) -> None:
    main_doc: dict[str, Any] = {}
    settings = dict(daemon)
    if has_include:
        settings["include"] = [INCLUDE_GLOB]
    if settings:
        main_doc["taskmasterd"] = settings
    mine = {p.name: p.body for f, p in programs if f is tree.main}
    main_doc["programs"] = mine
    result.files[MAIN] = dump(main_doc, _header([tree.main.path]))
    result.programs[MAIN] = list(mine)
    used: set[str] = set()
    for f in tree.includes:
        bodies = {p.name: p.body for g, p in programs if g is f}
        if not bodies:
            continue
        stem = os.path.splitext(os.path.basename(f.path))[0] or "included"
        name, n = stem, 2
        while name in used:
            name, n = f"{stem}-{n}", n + 1
        used.add(name)
        rel = f"conf.d/{name}.yaml"
        result.files[rel] = dump({"programs": bodies}, _header([f.path]))
        result.programs[rel] = list(bodies)
