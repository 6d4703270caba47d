"""`after:` through the real loader (taskmasterd.config.load_config): its
values, and every error at the offending item's file:line:column, all at
once, even next to errors in other programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmasterd.config import ConfigError, load_config


def load_text(tmp_path: Path, text: str) -> tuple[str, list[tuple[int, int, str, str]]]:
    path = tmp_path / "taskmaster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issues = info.value.issues
    assert all(i.file == str(path) for i in issues)
    return str(path), [(i.line, i.column, i.keypath, i.message) for i in issues]


def test_values(tmp_path: Path) -> None:
    path = tmp_path / "taskmaster.yaml"
    path.write_text("programs:\n"
                    "  db: {cmd: 'true'}\n"
                    "  cache: {cmd: 'true', after: []}\n"
                    "  web: {cmd: 'true', after: [db, cache]}\n"
                    "  front: {cmd: 'true', after: web}\n"
                    "  '1': {cmd: 'true', after: [db]}\n"
                    "  two: {cmd: 'true', after: [1]}\n")
    config = load_config(path)
    after = {p.name: p.after for p in config.programs}
    assert after == {"db": (), "cache": (), "web": ("db", "cache"), "front": ("web",),
                     "1": ("db",), "two": ("1",)}


def test_every_error_at_its_item(tmp_path: Path) -> None:
    _, issues = load_text(tmp_path, (
        "programs:\n"                                      # 1
        "  db:\n"                                          # 2
        "    cmd: sleep 1\n"                               # 3
        "    after: [web]\n"                               # 4
        "  web:\n"                                         # 5
        "    cmd: sleep 1\n"                               # 6
        "    after:\n"                                     # 7
        "      - db\n"                                     # 8
        "      - cahce\n"                                  # 9
        "      - web\n"                                    # 10
        "      - db\n"                                     # 11
        "  cache:\n"                                       # 12
        "    cmd: sleep 1\n"                               # 13
        "    after: nothing_like_it\n"))                   # 14
    assert issues == [
        (8, 9, "programs.web.after[0]", "cycle db -> web -> db; a program cannot "
                                        "(indirectly) start after itself"),
        (9, 9, "programs.web.after[1]", "unknown program 'cahce' (did you mean 'cache'?)"),
        (10, 9, "programs.web.after[2]",
         "program 'web' cannot start after itself (cycle: web -> web)"),
        (11, 9, "programs.web.after[3]", "'db' is listed twice in after"),
        (14, 12, "programs.cache.after",
         "unknown program 'nothing_like_it'; the programs are: db, web, cache"),
    ]


def test_a_three_cycle_and_another_programs_error_together(tmp_path: Path) -> None:
    _, issues = load_text(tmp_path, (
        "programs:\n"
        "  a: {cmd: 'true', after: [c]}\n"
        "  b: {cmd: 'true', after: [a], numprocs: 0}\n"
        "  c: {cmd: 'true', after: [b]}\n"))
    # b's numprocs is wrong, its after is read all the same: the cycle is told
    assert [(line, col, kp) for line, col, kp, _ in issues] == [
        (3, 28, "programs.b.after[0]"), (3, 42, "programs.b.numprocs")]
    assert issues[0][3].startswith("cycle a -> c -> b -> a;")


def test_bad_values(tmp_path: Path) -> None:
    _, issues = load_text(tmp_path, (
        "programs:\n"
        "  db: {cmd: 'true'}\n"
        "  web: {cmd: 'true', after: [db, {x: 1}, null]}\n"
        "  api: {cmd: 'true', after: {db: 1}}\n"
        "  cron: {cmd: 'true', after: }\n"))
    assert [(line, kp) for line, _, kp, _ in issues] == [
        (3, "programs.web.after[1]"), (3, "programs.web.after[2]"),
        (4, "programs.api.after"), (5, "programs.cron.after")]
    assert "expected a program name or a list of them like [db, cache], found a mapping" \
        in issues[0][3]
    assert "found null" in issues[1][3] and "found null" in issues[3][3]


def test_a_merge_key_shares_after(tmp_path: Path) -> None:
    path = tmp_path / "taskmaster.yaml"
    path.write_text("programs:\n"
                    "  db: {cmd: 'true'}\n"
                    "  web: &web {cmd: 'true', after: [db]}\n"
                    "  api: {<<: *web}\n")
    assert [p.after for p in load_config(path).programs] == [(), ("db",), ("db",)]
