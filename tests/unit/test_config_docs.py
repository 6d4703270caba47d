"""docs/config.md against the configuration reader, so the reference
cannot drift (issue 12, 3.): every key the reader takes is in its table and
every key in a table is taken; each example value loads; each default
written as a value loads to what leaving the key out gives; supervisord's
names are all listed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmasterd import config, programschema, variables
from taskmasterd.alertschema import ALERT_KEYS
from taskmasterd.tasks.settings import TASK_SETTING_KEYS

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
ROW = re.compile(r"\| `([a-z_]+)` \|(.*)")


def tables() -> dict[str, dict[str, list[str]]]:
    """Section title -> key -> the row's other cells."""
    out: dict[str, dict[str, list[str]]] = {"top": {}}
    section = "top"
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            out[section] = {}
        elif line.startswith("### "):  # a subsection's table is not the key table
            section = ""
        elif (m := ROW.match(line)) and section:
            out[section][m[1]] = [c.strip() for c in m[2].rstrip("|").split("|")]
    return out


SECTIONS = {"`taskmasterd:`": config.GLOBAL_KEYS, "`programs:`": config.PROGRAM_KEYS,
            "`alerts:`": ALERT_KEYS, "`tasks:`": TASK_SETTING_KEYS}


def test_every_key_the_reader_takes_is_documented_and_only_those() -> None:
    t = tables()
    assert set(t["top"]) == set(config.TOP_KEYS)  # before the first section
    for section, keys in SECTIONS.items():
        assert set(t[section]) == set(keys), section


def _literal(cell: str) -> Any:
    """The YAML value of a cell that is one backticked value, else None."""
    m = re.fullmatch(r"`([^`]*)`", cell)
    return yaml.safe_load(m[1]) if m else None


def _load(tmp_path: Path, doc: dict[str, Any]) -> config.Config:
    path = tmp_path / "taskmaster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return config.load_config(path)


def _examples(section: str) -> dict[str, Any]:
    return {key: _literal(cells[2]) for key, cells in tables()[section].items()}


def test_every_example_value_loads(tmp_path: Path) -> None:
    programs = _examples("`programs:`")
    if config.os.geteuid() != 0:
        programs.pop("user")  # switching users needs root
    # A console's stderr is its terminal, a redirected stderr is stdout's:
    # their examples load in programs of their own (worker sets stderr).
    console = {"cmd": "sleep 1", "console": programs.pop("console"),
               "console_scrollback": programs.pop("console_scrollback")}
    redirected = {"cmd": "sleep 1", "redirect_stderr": programs.pop("redirect_stderr")}
    loaded = _load(tmp_path, {"taskmasterd": _examples("`taskmasterd:`"),
                              "programs": {"worker": programs, "shell": console,
                                           "both": redirected},
                              "alerts": [_examples("`alerts:`")],
                              "tasks": _examples("`tasks:`")})
    assert loaded.programs[0].numprocs == programs["numprocs"]
    assert loaded.programs[1].console and loaded.programs[1].console_scrollback == 1024 ** 2
    assert loaded.programs[2].redirect_stderr
    assert loaded.daemon.loglevel == "debug"
    assert len(loaded.alerts) == 1
    assert loaded.tasks.max_parallel == 16


@pytest.mark.parametrize("section", list(SECTIONS))
def test_defaults_written_as_values_are_the_readers(tmp_path: Path, section: str) -> None:
    """Setting a key to its documented default changes nothing."""
    checked = 0
    for key, cells in tables()[section].items():
        default = _literal(cells[1])
        if default is None:  # "(required)", "the daemon's", a per-user path ...
            continue
        base: dict[str, Any]
        if section == "`programs:`":
            base = {"cmd": "sleep 1"}
        elif section == "`alerts:`":
            base = {"url": "json://localhost/hook"}
        else:
            base = {}

        def load(extra: dict[str, Any], base: dict[str, Any] = base) -> Any:
            item = {**base, **extra}
            if section == "`programs:`":
                return _load(tmp_path, {"programs": {"p": item}}).programs[0]
            if section == "`alerts:`":
                return _load(tmp_path, {"alerts": [item], "programs": {}}).alerts[0]
            if section == "`tasks:`":
                return _load(tmp_path, {"tasks": item, "programs": {}}).tasks
            return _load(tmp_path, {"taskmasterd": item, "programs": {}}).daemon

        assert load({key: default}) == load({}), f"{section} {key}: documented default {default!r}"
        checked += 1
    assert checked >= {"`programs:`": 15, "`alerts:`": 2, "`taskmasterd:`": 1,
                       "`tasks:`": 5}[section]


def test_every_supervisord_name_is_listed_with_ours(tmp_path: Path) -> None:
    text = DOC.read_text()
    part = text[text.index("### For supervisord users"):text.index("## `alerts:`")]
    rows = {}
    for line in part.splitlines():
        if line.startswith("| `"):
            left, right = line.strip("|").split("|")[:2]
            for name in re.findall(r"`([a-z_]+)`", left):
                rows[name] = right
    names = programschema.SUPERVISORD_NAMES
    assert set(rows) == set(names)
    for old, new in names.items():
        if new is not None:
            assert f"`{new}`" in rows[old], old
        if new == old:  # taken as it is (redirect_stderr)
            continue
        # a refused supervisord name is refused with a pointer to ours
        with pytest.raises(config.ConfigError) as info:
            path = tmp_path / "taskmaster.yaml"
            path.write_text(f"programs:\n  p:\n    cmd: sleep 1\n    {old}: x\n")
            config.load_config(path)
        assert old in str(info.value.issues[0].message)


def test_every_variable_is_documented_and_the_example_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text()
    part = text[text.index("### Variables"):text.index("### For supervisord users")]
    rows = [line.strip("|").split("|") for line in part.splitlines() if line.startswith("| `%{")]
    assert {r[0].strip().strip("`") for r in rows} == {f"%{{{n}}}" for n in variables.NAMES}
    assert all("`%(" in r[2] for r in rows)  # supervisord's spelling of each
    monkeypatch.setenv("SPOOL", "/var/spool/worker")
    example = re.search(r"```yaml\n(.*?)```", part, re.S)
    assert example is not None
    path = tmp_path / "taskmaster.yaml"
    path.write_text(example[1])
    [worker] = config.load_config(path).programs
    assert worker.workingdir == str(tmp_path) and worker.redirect_stderr


REPO = DOC.parents[1]


def test_the_docs_stand_alone_and_are_all_indexed() -> None:
    """The index lists every page of docs/; README, docs and man pages never
    point outside the repository (a clone has no ../shared)."""
    index = (REPO / "docs" / "README.md").read_text()
    for page in (REPO / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, page.name
    readme = (REPO / "README.md").read_text()
    assert "](docs/README.md)" in readme and "](docs/config.md)" in readme
    texts = [readme, *(p.read_text() for p in (REPO / "docs").glob("*.md")),
             *(p.read_text() for p in (REPO / "packaging" / "debian").glob("*.1"))]
    for text in texts:
        assert "../shared" not in text and "SPEC" not in text
