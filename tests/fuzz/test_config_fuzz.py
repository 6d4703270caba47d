"""Config fuzz (issue 11 §9): generated and mutated YAML through parse_config.

The contract checked on every case: `parse_config` either returns a Config
or raises ConfigError; nothing else escapes (no traceback for any input),
and every ConfigIssue is located inside the text it was given (line and
column 1-based, the line exists, the column is at most one past its end,
lines counted by '\\n' as editors and `sed -n Np` count them) with the file
name set.

Two sources of cases:
- a hypothesis strategy that builds YAML *text* from a small node tree
  (block and flow style, anchors, aliases, merge keys, tags, quoting) with
  keys and values drawn from the schema's own vocabulary and from traps;
- byte-level and line-level mutations of etc/taskmaster.yaml and of a
  document using every feature (deletions, duplications, indentation
  shifts, swapped characters, inserted YAML punctuation).

Counts: CASES examples per test (3 tests: >= 2,000 cases per run), derandomized
so a CI run is reproducible; TASKMASTER_FUZZ_CASES raises the count locally.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskmasterd.config import Config, ConfigError, load_config, parse_config

CASES = int(os.environ.get("TASKMASTER_FUZZ_CASES", "800"))
FUZZ = settings(max_examples=CASES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ROOT = Path(__file__).resolve().parents[2]
FILE = "/etc/taskmaster/fuzz.yaml"

# ---------------------------------------------------------------------------
# the contract


def passable(value: object, where: str = "config") -> None:
    """Every string an accepted config holds can be handed to the system
    (execve, open, setenv): UTF-8-encodable, no NUL."""
    if isinstance(value, str):
        assert "\0" not in value, where
        value.encode("utf-8")  # UnicodeEncodeError on a lone surrogate
    elif isinstance(value, (tuple, list, frozenset, set)):
        for item in value:
            passable(item, where)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            passable(getattr(value, f.name), f"{where}.{f.name}")


def check(text: str, path: str = FILE) -> Config | None:
    """parse_config(text) must return or raise ConfigError with located issues."""
    try:
        config = parse_config(text, path)
        passable(config)
        return config
    except ConfigError as exc:
        assert exc.issues, f"ConfigError without issues for {text!r}"
        lines = text.split("\n")
        for issue in exc.issues:
            assert issue.file == path, (issue, text)
            assert issue.message, (issue, text)
            str(issue).encode("utf-8")  # printable, loggable, sendable over D-Bus
            assert 1 <= issue.line <= len(lines), (str(issue), len(lines), text)
            width = len(lines[issue.line - 1])
            assert 1 <= issue.column <= width + 1, (str(issue), width, text)
        assert str(exc)
        return None


# ---------------------------------------------------------------------------
# generated documents: a node tree rendered as YAML text

# Scalars as they would be written in a file (already YAML source text).
TRAP_SCALARS = [
    "sleep 1", "'sleep 1'", '"sleep 1"', "true", "false", "yes", "no", "on", "off", "Y", "n",
    "null", "~", "''", '""', "0", "1", "-1", "022", "0o22", "0x1f", "18", "777", "1000", "1001",
    "99999999999999999999999", "-99999999999999999999", "1e3", "1.5", ".5", "5.", ".inf", "-.inf",
    ".nan", "86400", "86401", "2026-11-23", "2026-11-23 10:00:00", "TERM", "SIGTERM", "sigkill",
    "9", "64", "0009", "'9'", '"\\u0669"', "\u0669", "journal", "./journal", "/dev/null",
    "/tmp/x.log", "relative/dir", '"a\\0b"', '"sleep \\udfff"', '"\\ud800"', '"/tmp/\\udc80"',
    '"\\t"', '" "', "debug", "INFO", "verbose",
    "always", "never", "unexpected", "json://localhost/hook", "mailto://",
    "'{program} {event}'", "'{0}'", "'{nope}'", "'{program.x}'", "'{'", "'}'",
    "!!str 12", "!!int 12", "!!binary aGVsbG8=", "!!python/object:os.system x", "!foo bar",
    "!!float 1", "!!null ''", "!!bool yes", "!!timestamp 2001-12-14",
    "'unbalanced \"quote'", "'trailing \\\\'", "x" * 70, "*", "web-*", "'[a'", "all",
]

PROGRAM_KEYS = ["cmd", "numprocs", "umask", "workingdir", "autostart", "autorestart",
                "exitcodes", "startretries", "starttime", "stopsignal", "stoptime", "stdout",
                "stderr", "env", "user", "restartdelay"]
OTHER_KEYS = ["taskmasterd", "programs", "alerts", "logfile", "loglevel", "logdir", "statedir",
              "url", "events", "rate", "title", "body", "command", "directory", "startsecs",
              "priority", "stdout_logfile_maxbytes", "CMD", "numproc", "all", "prog:0", "web-*",
              "", "a" * 65, "..", "é", "A=B", "PATH"]
KEYS = PROGRAM_KEYS + OTHER_KEYS
ANCHORS = ["a", "b", "defaults"]

plain_text = st.text(alphabet="abcxyz019 -_./:", min_size=1, max_size=12).map(
    lambda s: s.strip() or "x")
quoted_text = st.text(max_size=12).map(lambda s: json.dumps(s))  # a valid double-quoted scalar
scalar_text = st.one_of(st.sampled_from(TRAP_SCALARS), plain_text, quoted_text)
key_text = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(json.dumps), plain_text,
                     quoted_text)

# Node: ("scalar", text) | ("alias", name) | ("map", [(key, node)]) | ("seq", [node]),
# each wrapped as (anchor or None, tag or None, node).
Tree = tuple


def _decorate(node: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    anchor = st.one_of(st.none(), st.none(), st.sampled_from(ANCHORS))
    tag = st.one_of(st.none(), st.none(), st.none(),
                    st.sampled_from(["!!map", "!!seq", "!!str", "!!set", "!!omap", "!custom"]))
    return st.tuples(anchor, tag, node)


def _leaf() -> st.SearchStrategy[Tree]:
    return st.one_of(
        st.tuples(st.just(None), st.just(None), st.tuples(st.just("scalar"), scalar_text)),
        st.tuples(st.just(None), st.just(None),
                  st.tuples(st.just("alias"), st.sampled_from([*ANCHORS * 5, "undefined"]))),
    )


def _extend(children: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    merge = st.one_of(
        st.tuples(st.just("<<"), st.tuples(st.just(None), st.just(None),
                                           st.tuples(st.just("alias"), st.sampled_from(ANCHORS)))),
        st.tuples(st.just("<<"), children),
    )
    entry = st.one_of(st.tuples(key_text, children), st.tuples(key_text, children), merge)
    return _decorate(st.one_of(
        st.tuples(st.just("map"), st.lists(entry, max_size=5)),
        st.tuples(st.just("seq"), st.lists(children, max_size=4)),
    ))


trees = st.recursive(_leaf(), _extend, max_leaves=25)


def _program_settings() -> st.SearchStrategy[Tree]:
    """A mostly valid program mapping: the schema's keys with plausible values."""
    value = st.one_of(
        st.tuples(st.just(None), st.just(None), st.tuples(st.just("scalar"), scalar_text)),
        trees,
    )
    entry = st.tuples(st.sampled_from([*PROGRAM_KEYS, "<<", "command", "bogus"]), value)
    cmd = ("cmd", (None, None, ("scalar", "sleep 1")))
    return _decorate(st.tuples(st.just("map"), st.lists(entry, max_size=6).flatmap(
        lambda es: st.sampled_from([[cmd, *es], es, [*es, cmd]]))))


def _scalar(text: st.SearchStrategy[str]) -> st.SearchStrategy[Tree]:
    return st.tuples(st.just(None), st.just(None), st.tuples(st.just("scalar"), text))


# Alert values: apprise URLs and str.format templates, odd ones included.
URLS = ["json://localhost/hook", "jsons://h:8443/x?-X=1", "mailto://u:p@smtp.example.com?to=a@b.c",
        "http://x", "https://", "json://", "syslog://", "nope://x", "json://[::1]:80/", "json://%zz",
        "json://h/" + "x" * 300, "mailto://", "json://a,json://b", "://x", "json:/x", "tgram://"]
template_text = st.text(alphabet="{}!:.[]0 xrsa<>^%program", max_size=14)


def _alert() -> st.SearchStrategy[Tree]:
    value = {
        "url": st.one_of(st.sampled_from(URLS).map(json.dumps), scalar_text),
        "events": st.one_of(st.lists(st.sampled_from(["FATAL", "exited", "EXITED_UNEXPECTED", "NOPE",
                                                      "~", "1"]), max_size=3).map(
            lambda es: "[" + ", ".join(es) + "]"), scalar_text),
        "programs": st.sampled_from(["[web]", "['w*']", "[]", "['']", "[~]", "web", "[[a]]"]),
        "rate": st.sampled_from(["0", "60", "-1", "1e9", "86400.5", "'5'"]),
        "title": st.one_of(template_text.map(json.dumps), scalar_text),
        "body": st.one_of(template_text.map(json.dumps), scalar_text),
    }
    entry = st.sampled_from(sorted(value)).flatmap(
        lambda k: st.tuples(st.just(k), _scalar(value[k])))
    url = st.tuples(st.just("url"), _scalar(st.sampled_from(URLS).map(json.dumps)))
    entries = st.tuples(url, st.lists(entry, max_size=5)).flatmap(
        lambda ue: st.sampled_from([[ue[0], *ue[1]], ue[1]]))
    return _decorate(st.tuples(st.just("map"), entries))


def _document() -> st.SearchStrategy[Tree]:
    programs = st.lists(st.tuples(st.one_of(st.sampled_from(["web", "db", "a.b", "x-1"]), key_text),
                                  st.one_of(_program_settings(), _program_settings(), trees)),
                        max_size=4)
    plain = st.tuples(st.just(None), st.just(None))
    section = st.one_of(
        st.tuples(st.just("programs"), plain.flatmap(
            lambda p: programs.map(lambda es: (*p, ("map", es))))),
        st.tuples(st.just("alerts"), st.lists(st.one_of(_alert(), _alert(), trees), max_size=3).map(
            lambda items: (None, None, ("seq", items)))),
        st.tuples(st.sampled_from(["taskmasterd", "alerts", "programs", "other"]), trees),
    )
    return st.lists(section, min_size=1, max_size=4).map(lambda es: (None, None, ("map", es)))


def _props(anchor: str | None, tag: str | None) -> str:
    return " ".join(p for p in (f"&{anchor}" if anchor else "", tag or "") if p)


class Renderer:
    """Renders a tree as YAML text, mostly composable: an alias refers to an
    anchor already defined (else it becomes a plain scalar; the anchor named
    'undefined' never is), an anchor is defined once, and a key appears once
    per mapping (except 'cmd', to keep duplicate keys in the mix)."""

    def __init__(self) -> None:
        self.anchors: set[str] = set()

    def _head(self, anchor: str | None, tag: str | None) -> str:
        if anchor in self.anchors:
            anchor = None
        elif anchor is not None:
            self.anchors.add(anchor)
        props = _props(anchor, tag)
        return props + " " if props else ""

    def _alias(self, name: str) -> str:
        return f"*{name}" if name in self.anchors or name == "undefined" else name

    @staticmethod
    def _unique(body: list[tuple[str, Tree]]) -> list[tuple[str, Tree]]:
        seen: set[str] = set()
        out = []
        for key, value in body:
            if key in seen and key not in ("cmd", "<<"):
                continue
            seen.add(key)
            out.append((key, value))
        return out

    def flow(self, tree: Tree) -> str:
        anchor, tag, (kind, body) = tree
        if kind == "alias":
            return self._alias(body)
        prefix = self._head(anchor, tag)
        if kind == "scalar":
            return prefix + body
        if kind == "seq":
            return prefix + "[" + ", ".join(self.flow(c) for c in body) + "]"
        return prefix + "{" + ", ".join(f"{k}: {self.flow(v)}" for k, v in self._unique(body)) + "}"

    def block(self, tree: Tree, indent: int, flow_at: int) -> list[str]:
        """Lines of a block-style value at `indent`; from depth `flow_at` on, flow style."""
        anchor, tag, (kind, body) = tree
        pad = " " * indent
        if kind in ("scalar", "alias") or flow_at <= 0 or not body:
            return [pad + self.flow(tree)]
        head = self._head(anchor, tag).strip()
        lines = [pad + head] if head else []
        if kind == "seq":
            for child in body:
                lines.append(pad + "-")
                lines += self.block(child, indent + 2, flow_at - 1)
            return lines
        for key, value in self._unique(body):
            sub = self.block(value, indent + 2, flow_at - 1)
            if len(sub) == 1:
                lines.append(f"{pad}{key}: {sub[0].strip()}")
            else:
                lines.append(f"{pad}{key}:")
                lines += sub
        return lines


def render(tree: Tree, indent: int, flow_at: int) -> str:
    return "\n".join(Renderer().block(tree, indent, flow_at)) + "\n"


@FUZZ
@given(_document(), st.integers(0, 6))
def test_generated_documents(tree: Tree, flow_at: int) -> None:
    check(render(tree, 0, flow_at))


@FUZZ
@given(trees, st.integers(0, 6), st.sampled_from(["", "programs:\n", "---\n", "%YAML 1.1\n---\n"]))
def test_generated_trees(tree: Tree, flow_at: int, head: str) -> None:
    check(head + render(tree, 2 if head == "programs:\n" else 0, flow_at))


# Every string-valued setting of a valid file, given any text at all (any code
# point, lone surrogates included: YAML's "\\udXXX" escapes can write them).
STRING_FIELDS = [
    "programs:\n  web: {{cmd: {v}}}\n",
    "programs:\n  web: {{cmd: sleep 1, user: {v}}}\n",
    "programs:\n  web: {{cmd: sleep 1, workingdir: {v}}}\n",
    "programs:\n  web: {{cmd: sleep 1, stdout: {v}}}\n",
    "programs:\n  web: {{cmd: sleep 1, stderr: {v}}}\n",
    "programs:\n  web: {{cmd: sleep 1, env: {{A: {v}}}}}\n",
    "programs:\n  web: {{cmd: sleep 1, env: {{{v}: x}}}}\n",
    "programs:\n  web: {{cmd: sleep 1, stopsignal: {v}}}\n",
    "programs:\n  {v}: {{cmd: sleep 1}}\n",
    "taskmasterd: {{logfile: {v}}}\nprograms: {{}}\n",
    "taskmasterd: {{logdir: {v}}}\nprograms: {{}}\n",
    "taskmasterd: {{statedir: {v}}}\nprograms: {{}}\n",
    "alerts:\n  - {{url: 'json://localhost/x', title: {v}}}\nprograms: {{}}\n",
    "alerts:\n  - {{url: 'json://localhost/x', programs: [{v}]}}\nprograms: {{}}\n",
]
any_text = st.text(st.characters(codec=None, categories=None), min_size=1, max_size=12)


@settings(FUZZ, max_examples=max(1, CASES // 2))
@given(st.sampled_from(STRING_FIELDS), any_text, st.sampled_from(["", "sleep ", "/tmp/"]))
def test_string_fields(template: str, value: str, prefix: str) -> None:
    check(template.format(v=json.dumps(prefix + value)))


# ---------------------------------------------------------------------------
# mutations of real files

FULL = """\
taskmasterd:
  logfile: ./tm.log
  loglevel: info
  logdir: logs
programs:
  base: &defaults
    cmd: sleep 1
    autorestart: unexpected
    exitcodes: [0, 2]
  web:
    <<: *defaults
    cmd: "python3 -m http.server 8042"
    numprocs: 2
    umask: 022
    workingdir: /tmp
    autostart: yes
    startretries: 3
    starttime: 0.5
    stopsignal: INT
    stoptime: 3
    stdout: journal
    stderr: ~
    env: {A: "1", B: 042, C: on}
    user: nobody
    restartdelay: 0
alerts:
  - url: "json://localhost:9/hook"
    events: [FATAL, EXITED]
    programs: ["web*"]
    rate: 0
    title: "{host}: {program} {event}"
"""

SOURCES = [(ROOT / "etc" / "taskmaster.yaml").read_text(), FULL]
PUNCTUATION = [*":-&*!|>[]{},#'\"%@`?\t\0\r\x85\u2028\ufeff\U0001f600 \n", "<<: ", "- ", "  "]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.split("\n")
        op = draw(st.sampled_from(["delete", "dup_line", "del_line", "indent", "dedent", "swap",
                                   "insert", "truncate", "join"]))
        if op in ("dup_line", "del_line", "indent", "dedent", "join") and lines:
            i = draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(i, lines[i])
            elif op == "del_line":
                del lines[i]
            elif op == "indent":
                lines[i] = " " * draw(st.integers(1, 4)) + lines[i]
            elif op == "dedent":
                lines[i] = lines[i][draw(st.integers(1, 4)):]
            elif i + 1 < len(lines):
                lines[i:i + 2] = [lines[i] + lines[i + 1]]
            text = "\n".join(lines)
            continue
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        if op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 8)):]
        elif op == "swap" and i + 1 < len(text):
            text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(PUNCTUATION)) + text[i:]
        elif op == "truncate":
            text = text[:i]
    return text


@FUZZ
@given(mutated())
def test_mutated_files(text: str) -> None:
    check(text)


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SOURCES)).encode())
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 4))]
        else:
            data[i:i] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x80", b"\xef\xbb\xbf", b"\0"]))
        if not data:
            break
    return bytes(data)


@settings(FUZZ, max_examples=max(1, CASES // 4))
@given(mutated_bytes())
def test_mutated_bytes(data: bytes) -> None:
    """Bytes through load_config: invalid UTF-8 too is a located issue."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.yaml")
        with open(path, "wb") as f:
            f.write(data)
        try:
            load_config(path)
        except ConfigError as exc:
            lines = data.split(b"\n")
            for issue in exc.issues:
                assert issue.file == path
                assert 1 <= issue.line <= len(lines), (str(issue), data)
                # a column counts characters, or bytes on a line that is not UTF-8
                assert 1 <= issue.column <= len(lines[issue.line - 1]) + 1, (str(issue), data)


def test_the_sources_are_valid() -> None:
    """The mutations start from valid files (else they would test little)."""
    for text in SOURCES:
        assert check(text) is not None
