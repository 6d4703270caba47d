"""`taskmasterd: {include: [...]}` (issue 19) through the real loader: the
values of a tree of files, every error of every file at once in its own
file, a program defined twice named with both places, `after:` across
files, and the limits (number of files, sizes, what is not a file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskmasterd import cli, config, configschema, hostcheck, includes
from taskmasterd.config import ConfigError, OutputKind, load_config

Issue = tuple[str, int, int, str, str]


def prog(c: config.Config, name: str) -> config.ProgramConfig:
    p = c.program(name)
    assert p is not None, name
    return p


def tree(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative names) under root; the main file is the first."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / next(iter(files))


def issues_of(path: Path | str) -> list[Issue]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [(i.file, i.line, i.column, i.keypath, i.message) for i in info.value.issues]


MAIN = "taskmasterd:\n  include: conf.d/*.yaml\n"


def test_values_come_from_every_file_in_order(tmp_path: Path) -> None:
    main = tree(tmp_path, {
        "etc/taskmaster.yaml": ("taskmasterd:\n  include: ['conf.d/*.yaml', ../extra/one.yaml]\n"
                                "programs:\n  main: {cmd: sleep 1, stdout: main.log}\n"),
        "etc/conf.d/b.yaml": "programs:\n  b: {cmd: sleep 1, workingdir: data}\n",
        "etc/conf.d/a.yaml": ("programs:\n  a1: {cmd: sleep 1, stdout: out/a1.log}\n"
                              "  a2: {cmd: sleep 1}\n"
                              "alerts:\n  - url: json://localhost/a\n"),
        "etc/conf.d/notes.txt": "not yaml: [",  # not matched by *.yaml
        "etc/conf.d/.hidden.yaml": "not yaml: [",  # a glob's * skips dot files
        "extra/one.yaml": "programs:\n  one: {cmd: sleep 1, stderr: err.log}\n",
    })
    c = load_config(main)
    assert [p.name for p in c.programs] == ["main", "a1", "a2", "b", "one"]
    etc = tmp_path / "etc"
    # Relative paths resolve against the directory of the file that holds them.
    assert prog(c, "main").stdout.path == str(etc / "main.log")
    assert prog(c, "a1").stdout.path == str(etc / "conf.d/out/a1.log")
    assert prog(c, "b").workingdir == str(etc / "conf.d/data")
    assert prog(c, "one").stderr.path == str(tmp_path / "extra/err.log")
    assert [a.url for a in c.alerts] == ["json://localhost/a"]
    assert c.daemon.include == ("conf.d/*.yaml", "../extra/one.yaml")
    assert [(f.path, f.programs, len(f.alerts)) for f in c.files] == [
        (str(main), ("main",), 0), (str(etc / "conf.d/a.yaml"), ("a1", "a2"), 1),
        (str(etc / "conf.d/b.yaml"), ("b",), 0), (str(tmp_path / "extra/one.yaml"), ("one",), 0)]
    assert c.file_of("a2") == str(etc / "conf.d/a.yaml")


def test_included_names_follow_the_main_file_as_given(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, {"taskmaster.yaml": MAIN, "conf.d/a.yaml": "programs:\n  a: {cmd: sleep 1}\n"})
    monkeypatch.chdir(tmp_path)
    c = load_config("taskmaster.yaml")
    assert [f.name for f in c.files] == ["taskmaster.yaml", "conf.d/a.yaml"]
    assert c.files[1].path == str(tmp_path / "conf.d/a.yaml")


def test_an_empty_glob_and_an_empty_file_are_fine(tmp_path: Path) -> None:
    main = tree(tmp_path, {"taskmaster.yaml": MAIN + "programs:\n  p: {cmd: sleep 1}\n"})
    (tmp_path / "conf.d").mkdir()
    assert [p.name for p in load_config(main).programs] == ["p"]
    (tmp_path / "conf.d/empty.yaml").write_text("# nothing yet\n")
    assert [f.programs for f in load_config(main).files] == [("p",), ()]
    # No conf.d at all: the same.
    (tmp_path / "conf.d/empty.yaml").unlink()
    (tmp_path / "conf.d").rmdir()
    assert len(load_config(main).files) == 1


def test_include_takes_a_list_or_a_string(tmp_path: Path) -> None:
    main = tree(tmp_path, {"taskmaster.yaml": "taskmasterd:\n  include: []\nprograms: {}\n"})
    assert load_config(main).daemon.include == ()
    main.write_text("taskmasterd:\n  include: [3, null, '']\nprograms: {}\n")
    assert issues_of(main) == [
        (str(main), 2, 13, "taskmasterd.include[0]",
         "expected a path or glob like conf.d/*.yaml, found an integer (3); "
         "quote it if it is meant as text"),
        (str(main), 2, 16, "taskmasterd.include[1]",
         "expected a path or glob like conf.d/*.yaml, found null"),
        (str(main), 2, 22, "taskmasterd.include[2]",
         "expected a path or glob like conf.d/*.yaml, found an empty string")]


def test_a_missing_literal_path_is_an_error_at_its_item(tmp_path: Path) -> None:
    main = tree(tmp_path, {"taskmaster.yaml": ("taskmasterd:\n  include:\n    - conf.d/*.yaml\n"
                                               "    - local.yaml\nprograms: {}\n")})
    [(file, line, column, keypath, message)] = issues_of(main)
    assert (file, line, column, keypath) == (str(main), 4, 7, "taskmasterd.include[1]")
    assert message.startswith(f"no file {tmp_path}/local.yaml: a path without glob characters")


def test_every_error_of_every_file_at_once_each_in_its_file(tmp_path: Path) -> None:
    main = tree(tmp_path, {
        "taskmaster.yaml": MAIN + "programs:\n  web: {cmd: sleep 1, numprocs: 0}\n",
        "conf.d/a.yaml": ("programs:\n"
                          "  db: {cmd: sleep 1, umask: 99}\n"
                          "  cache: {cmd: sleep 1, stoptime: soon}\n"),
        "conf.d/b.yaml": "taskmasterd: {loglevel: debug}\ntasks: {}\nprogramz: {}\n",
        "conf.d/c.yaml": "programs: [\n",  # cannot be composed
        "conf.d/d.yaml": "alerts:\n  - url: 42\n",
    })
    d = tmp_path / "conf.d"
    got = issues_of(main)
    assert [(f, line, col, kp) for f, line, col, kp, _ in got] == [
        (str(main), 4, 33, "programs.web.numprocs"),
        (str(d / "a.yaml"), 2, 29, "programs.db.umask"),
        (str(d / "a.yaml"), 3, 35, "programs.cache.stoptime"),
        (str(d / "b.yaml"), 1, 1, "taskmasterd"),
        (str(d / "b.yaml"), 2, 1, "tasks"),
        (str(d / "b.yaml"), 3, 1, "programz"),
        (str(d / "c.yaml"), 2, 1, ""),
        (str(d / "d.yaml"), 2, 10, "alerts[0].url")]
    messages = {kp: m for _, _, _, kp, m in got}
    assert messages["taskmasterd"] == ("'taskmasterd:' belongs in the main configuration file; "
                                       "an included file holds only 'programs:' and 'alerts:'")
    assert messages["programz"] == "unknown top-level key 'programz' (did you mean 'programs'?)"


def test_a_program_defined_twice_names_both_places(tmp_path: Path) -> None:
    main = tree(tmp_path, {
        "taskmaster.yaml": MAIN + "programs:\n  web: {cmd: sleep 1}\n",
        "conf.d/a.yaml": "programs:\n  db: {cmd: sleep 1}\n",
        "conf.d/b.yaml": "# b\nprograms:\n  db: {cmd: sleep 2}\n  web:\n    cmd: sleep 3\n",
    })
    a, b = tmp_path / "conf.d/a.yaml", tmp_path / "conf.d/b.yaml"
    assert issues_of(main) == [
        (str(b), 3, 3, "programs.db", f"program 'db' is defined twice: {b}:3:3 and {a}:2:3"),
        (str(b), 4, 3, "programs.web", f"program 'web' is defined twice: {b}:4:3 and {main}:4:3")]


def test_after_sees_the_programs_of_every_file(tmp_path: Path) -> None:
    main = tree(tmp_path, {
        "taskmaster.yaml": MAIN + "programs:\n  web: {cmd: sleep 1, after: [db, cache]}\n",
        "conf.d/a.yaml": "programs:\n  db: {cmd: sleep 1}\n",
        "conf.d/b.yaml": "programs:\n  cache: {cmd: sleep 1, after: db}\n",
    })
    c = load_config(main)
    assert {p.name: p.after for p in c.programs} == {"web": ("db", "cache"), "db": (),
                                                     "cache": ("db",)}
    # An unknown name and a cycle across files, each at its item in its file.
    (tmp_path / "conf.d/a.yaml").write_text("programs:\n  db: {cmd: sleep 1, after: [web, cahce]}\n")
    a = str(tmp_path / "conf.d/a.yaml")
    got = issues_of(main)
    assert [(f, line, col, kp) for f, line, col, kp, _ in got] == [
        (a, 2, 30, "programs.db.after[0]"),  # the item that closes the cycle
        (a, 2, 35, "programs.db.after[1]")]
    assert got[0][4] == ("cycle web -> db -> web; a program cannot (indirectly) start "
                         "after itself")
    assert got[1][4] == "unknown program 'cahce' (did you mean 'cache'?)"


def test_included_files_do_not_include(tmp_path: Path) -> None:
    main = tree(tmp_path, {
        "taskmaster.yaml": MAIN + "programs: {}\n",
        "conf.d/a.yaml": "taskmasterd:\n  include: '../more/*.yaml'\nprograms: {}\n",
        "more/b.yaml": "programs:\n  b: {cmd: sleep 1}\n",
    })
    [(file, _, _, keypath, _)] = issues_of(main)
    assert (file, keypath) == (str(tmp_path / "conf.d/a.yaml"), "taskmasterd")


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    main = tree(tmp_path, {
        "taskmaster.yaml": ("taskmasterd:\n  include: ['conf.d/*.yaml', conf.d/a.yaml, '*.yaml',"
                            " 'available/*.yaml']\nprograms:\n  main: {cmd: sleep 1}\n"),
        "conf.d/a.yaml": "programs:\n  a: {cmd: sleep 1}\n",
        "available/web.yaml": "programs:\n  web: {cmd: sleep 1}\n",
    })
    (tmp_path / "conf.d/web.yaml").symlink_to("../available/web.yaml")
    c = load_config(main)  # the main file matched by '*.yaml' is not read again either
    assert [p.name for p in c.programs] == ["main", "a", "web"]
    assert [f.name for f in c.files] == [str(main), str(tmp_path / "conf.d/a.yaml"),
                                         str(tmp_path / "conf.d/web.yaml")]


def test_what_is_not_a_regular_file_is_refused_at_the_item(tmp_path: Path) -> None:
    main = tree(tmp_path, {"taskmaster.yaml": MAIN + "programs: {}\n"})
    (tmp_path / "conf.d/dir.yaml").mkdir(parents=True)
    os.mkfifo(tmp_path / "conf.d/fifo.yaml")  # opened without waiting for a writer
    (tmp_path / "conf.d/gone.yaml").symlink_to("nowhere.yaml")
    d = tmp_path / "conf.d"
    assert issues_of(main) == [
        (str(main), 2, 12, "taskmasterd.include",
         f"cannot read the included file {d}/dir.yaml: it is a directory; expected a regular file"),
        (str(main), 2, 12, "taskmasterd.include",
         f"cannot read the included file {d}/fifo.yaml: it is a FIFO; expected a regular file"),
        (str(main), 2, 12, "taskmasterd.include",
         f"cannot read the included file {d}/gone.yaml: No such file or directory")]


def test_at_most_so_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(includes, "MAX_INCLUDED_FILES", 3)
    files = {"taskmaster.yaml": "taskmasterd:\n  include: ['conf.d/*.yaml', x/*.yaml]\nprograms: {}\n"}
    files |= {f"conf.d/{n}.yaml": f"programs:\n  p{n}: {{cmd: sleep 1}}\n" for n in range(3)}
    main = tree(tmp_path, files)
    assert len(load_config(main).programs) == 3
    (tmp_path / "x").mkdir()
    (tmp_path / "x/one.yaml").write_text("programs: {}\n")
    assert issues_of(main) == [(str(main), 2, 30, "taskmasterd.include[1]",
                                "the include patterns name more than 3 files; at most 3 are read")]


def test_the_included_files_are_read_up_to_a_size_in_all(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configschema, "MAX_INCLUDED_SIZE", 100)
    main = tree(tmp_path, {"taskmaster.yaml": MAIN + "programs: {}\n",
                           "conf.d/a.yaml": "# " + "a" * 60 + "\n",
                           "conf.d/b.yaml": "# " + "b" * 60 + "\n"})
    [(_, line, _, _, message)] = issues_of(main)
    assert line == 2
    assert message == (f"cannot read the included file {tmp_path}/conf.d/b.yaml: the included "
                       "files would be over 100 bytes in all; at most that much is read")


def test_errors_are_capped_across_files(tmp_path: Path) -> None:
    bad = "programs:\n" + "".join(f"  p{n}: {{cmd: sleep 1, umask: 9}}\n" for n in range(60))
    main = tree(tmp_path, {"taskmaster.yaml": MAIN + "programs: {}\n",
                           **{f"conf.d/{n}.yaml": bad.replace("  p", f"  f{n}p") for n in range(5)}})
    got = issues_of(main)
    assert len(got) < 200
    assert got[0][:4] == (str(main), 2, 12, "taskmasterd.include")
    assert "included file(s) were not checked" in got[0][4]


def test_host_checks_locate_in_the_included_file(tmp_path: Path) -> None:
    main = tree(tmp_path, {"taskmaster.yaml": MAIN + "programs: {}\n",
                           "conf.d/a.yaml": "programs:\n  j: {cmd: sleep 1, stdout: journal}\n"})
    c = load_config(main)
    assert prog(c, "j").stdout.kind is OutputKind.JOURNAL
    [issue] = hostcheck.host_issues(c, journal=lambda: False)
    assert (issue.file, issue.line, issue.column) == (str(tmp_path / "conf.d/a.yaml"), 2, 29)
    with pytest.raises(ConfigError) as info:
        hostcheck.load(main, journal=lambda: False)
    assert [i.file for i in info.value.issues] == [str(tmp_path / "conf.d/a.yaml")]


def test_check_config_says_which_files_it_read(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    main = tree(tmp_path, {"taskmaster.yaml": MAIN + "programs:\n  m: {cmd: sleep 1}\n",
                           "conf.d/a.yaml": "programs:\n  a: {cmd: sleep 1, numprocs: 2}\n"})
    assert cli.check_config(str(main)) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{main}: OK (2 programs, 3 processes, from 2 files)",
        f"  {main}: 1 programs",
        f"  {tmp_path}/conf.d/a.yaml: 1 programs"]
    (tmp_path / "conf.d/a.yaml").write_text("programs:\n  a: {cmd: sleep 1, numprocs: -1}\n")
    assert cli.check_config(str(main)) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/conf.d/a.yaml:2:31: programs.a.numprocs:" in err


def test_at_most_so_many_patterns(tmp_path: Path) -> None:
    patterns = ", ".join(f"'x{n}/*.yaml'" for n in range(includes.MAX_PATTERNS + 1))
    main = tree(tmp_path, {"taskmaster.yaml": f"taskmasterd:\n  include: [{patterns}]\nprograms: {{}}\n"})
    [(_, line, column, keypath, message)] = issues_of(main)
    assert (line, column, keypath) == (2, 12, "taskmasterd.include")
    assert message.startswith(f"{includes.MAX_PATTERNS + 1} patterns; at most {includes.MAX_PATTERNS}")
