"""The importer reads supervisord's INI as supervisord 4 does (taskmasterd.importer.ini)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmasterd.importer.ini import InputError, read_file, read_tree


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_comments_continuations_and_lines(tmp_path: Path) -> None:
    conf = write(tmp_path / "s.conf", (
        "; a comment\n"
        "[program:web]\n"
        "command=/bin/echo a;b ; an inline comment\n"
        "# another comment\n"
        "directory = /srv # inline too\n"
        "environment=A=1,\n"
        "    B=2\n"
        "STARTSECS=5\n"))
    [sec] = read_file(conf).sections
    assert sec.name == "program:web" and sec.kind == "program" and sec.label == "web"
    assert sec.options["command"] == "/bin/echo a;b"  # ';' without a space before is text
    assert sec.options["directory"] == "/srv"
    assert sec.options["environment"] == "A=1,\nB=2"
    assert sec.options["startsecs"] == "5"  # keys are lower-cased, as supervisord's parser does
    assert sec.line == 2
    assert sec.where("command") == (conf, 3)
    assert sec.where("directory") == (conf, 5)
    assert sec.where("startsecs") == (conf, 8)


def test_here_is_each_files_directory(tmp_path: Path) -> None:
    main = write(tmp_path / "supervisord.conf", (
        "[supervisord]\n[include]\nfiles = sub/*.conf other.conf\n"
        "[program:a]\ncommand=%(here)s/a\n"))
    write(tmp_path / "sub" / "b.conf", "[program:b]\ncommand=%(here)s/b\n")
    write(tmp_path / "sub" / "a.conf", "[program:c]\ncommand=%(here)s/c\n")
    tree = read_tree(main)
    assert tree.main.sections[2].options["command"] == f"{tmp_path}/a"
    # globs are sorted, relative to the main file's directory
    assert [Path(f.path).name for f in tree.includes] == ["a.conf", "b.conf"]
    assert tree.includes[1].sections[0].options["command"] == f"{tmp_path}/sub/b"
    assert [p for _, _, p in tree.unmatched] == [f"{tmp_path}/other.conf"]


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_tree(str(tmp_path / "missing.conf"))
    bad = write(tmp_path / "bad.conf", "command=x\n")  # an option before any section
    with pytest.raises(InputError, match="not a supervisord configuration"):
        read_tree(bad)
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"\xff\xfe[\x00")
    with pytest.raises(InputError, match="cannot read"):
        read_tree(str(binary))
