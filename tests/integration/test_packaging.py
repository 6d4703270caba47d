"""The Debian package: `make deb` builds it out of tree, it holds what a
Debian 12 machine needs, its dependencies exist there, lintian and
systemd-analyze find nothing wrong, and what it ships runs on Debian's own
python3 with Debian's dbus-next and PyYAML (not the project's .venv)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskmasterd import __version__

REPO = Path(__file__).resolve().parents[2]
VERSION = f"{__version__}-1"
DEB = REPO / "build" / "deb" / f"taskmasterd_{VERSION}_all.deb"
BUS_NAME = "org.taskmaster.Taskmaster1"

BUILD_TOOLS = ("make", "dpkg-buildpackage", "dpkg-deb", "lintian", "dh_python3")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(shutil.which(t) for t in BUILD_TOOLS),
                       reason="needs Debian's build tools (sh bootstrap setup installs them)"),
]

# What Debian 12 (bookworm) has of everything the package may depend on: a
# dependency on anything else, or on a version above these, could not be
# installed there.
BOOKWORM = {
    "python3": "3.11.2-1",
    "python3:any": "3.11.2-1",
    "python3-dbus-next": "0.2.3-3",
    "python3-jeepney": "0.8.0-3",
    "python3-yaml": "6.0-3",
    "python3-systemd": "235-1",
    "apprise": "1.2.0-1",
    "dbus": "1.14.10-1~deb12u1",
    "adduser": "3.134",
    "init-system-helpers": "1.65.2",
}
REQUIRED = ("python3-dbus-next", "python3-jeepney", "python3-yaml", "python3-systemd", "apprise", "dbus")

# Debian's interpreter, with nothing of the project's environment.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


@dataclass(frozen=True)
class Built:
    deb: Path
    root: Path  # the package extracted (dpkg-deb -x)
    build_log: str


def run(*argv: str | Path, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    r = run("make", "-C", REPO, "deb", timeout=300)
    log = r.stdout + r.stderr
    if r.returncode != 0:
        tail = "\n".join(log.splitlines()[-40:])
        pytest.fail(f"`make deb` failed (exit {r.returncode}):\n{tail}", pytrace=False)
    root = tmp_path_factory.mktemp("deb-root")
    x = run("dpkg-deb", "-x", DEB, root)
    assert x.returncode == 0, x.stderr
    yield Built(DEB, root, log)


def field(deb: Path, name: str) -> str:
    r = run("dpkg-deb", "-f", deb, name)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_make_deb_builds_out_of_tree_and_leaves_the_repository_clean(built: Built) -> None:
    assert built.deb.is_file()
    assert f"deb: build/deb/taskmasterd_{VERSION}_all.deb" in built.build_log
    assert field(built.deb, "Package") == "taskmasterd"
    assert field(built.deb, "Version") == VERSION
    assert field(built.deb, "Architecture") == "all"
    # Nothing of the build (debian/, .pybuild, wheels) lands in the tree itself.
    for leftover in ("debian", ".pybuild", "dist"):
        assert not (REPO / leftover).exists(), leftover


def test_the_package_holds_the_programs_units_policy_and_config(built: Built) -> None:
    r = run("dpkg-deb", "-c", built.deb)
    assert r.returncode == 0, r.stderr
    files = {line.split()[-1].removeprefix(".") for line in r.stdout.splitlines()}
    site = "/usr/lib/python3/dist-packages"
    for path in ("/usr/bin/taskmasterd", "/usr/bin/taskctl", "/usr/bin/taskmaster-web",
                 "/lib/systemd/system/taskmasterd.service",
                 "/lib/systemd/system/taskmaster-web.service",
                 "/lib/systemd/system/taskmasterd-cleanup.service",
                 "/usr/lib/systemd/user/taskmasterd.service",
                 f"/usr/share/dbus-1/system.d/{BUS_NAME}.conf",
                 f"/usr/share/dbus-1/interfaces/{BUS_NAME}.Manager.xml",
                 f"/usr/share/dbus-1/interfaces/{BUS_NAME}.Program.xml",
                 "/etc/taskmaster/taskmaster.yaml", "/etc/logrotate.d/taskmasterd",
                 "/etc/taskmaster/conf.d/README",
                 f"{site}/taskmasterd/bus/{BUS_NAME}.conf",
                 f"{site}/taskmasterd/__init__.py", f"{site}/taskmasterd/bus/__init__.py",
                 f"{site}/taskctl/__init__.py",
                 "/usr/share/man/man1/taskmasterd.1.gz", "/usr/share/man/man1/taskctl.1.gz",
                 "/usr/share/man/man1/taskmaster-web.1.gz"):
        assert path in files, path
    # Every module of the source tree is in the package.
    for package in ("taskmasterd", "taskctl", "taskweb"):
        for source in (REPO / package).rglob("*.py"):
            assert f"{site}/{source.relative_to(REPO)}" in files, source
    # The installed files are the repository's.
    root = built.root
    assert (root / "lib/systemd/system/taskmasterd.service").read_bytes() == \
        (REPO / "etc/taskmasterd.service").read_bytes()
    assert (root / "lib/systemd/system/taskmasterd-cleanup.service").read_bytes() == \
        (REPO / "etc/taskmasterd-cleanup.service").read_bytes()
    assert (root / "usr/lib/systemd/user/taskmasterd.service").read_bytes() == \
        (REPO / "etc/taskmasterd-user.service").read_bytes()
    assert (root / "lib/systemd/system/taskmaster-web.service").read_bytes() == \
        (REPO / "etc/taskmaster-web.service").read_bytes()
    assert (root / "etc/taskmaster/taskmaster.yaml").read_bytes() == \
        (REPO / "etc/taskmaster.yaml").read_bytes()
    # conf.d (issue 19): shipped with its README only, and included by the default config.
    assert [p.name for p in (root / "etc/taskmaster/conf.d").iterdir()] == ["README"]
    assert (root / "etc/taskmaster/conf.d/README").read_bytes() == \
        (REPO / "etc/conf.d/README").read_bytes()
    assert 'include: ["conf.d/*.yaml"]' in (root / "etc/taskmaster/taskmaster.yaml").read_text()


def test_the_docs_are_where_the_man_pages_say(built: Built) -> None:
    """docs/ is shipped whole (dh_compress gzips the larger files), and each
    man page names the place."""
    import gzip

    doc = built.root / "usr/share/doc/taskmasterd"
    for source in (REPO / "docs").glob("*.md"):
        shipped = doc / "docs" / source.name
        text = shipped.read_bytes() if shipped.exists() else \
            gzip.decompress((doc / "docs" / f"{source.name}.gz").read_bytes())
        assert text == source.read_bytes(), source.name
    assert (doc / "README.md.gz").exists()
    for page in ("taskmasterd.1", "taskctl.1", "taskmaster-web.1"):
        text = (REPO / "packaging/debian" / page).read_text()
        assert "/usr/share/doc/taskmasterd/docs/" in text, page


def test_the_desktop_notifier_is_shipped_as_an_example(built: Built) -> None:
    """contrib/taskmaster-notify (docs/notify.md) in the docs' examples, as is
    and still executable (dh_fixperms and dh_compress leave examples/ alone)."""
    shipped = built.root / "usr/share/doc/taskmasterd/examples/taskmaster-notify"
    assert shipped.read_bytes() == (REPO / "contrib/taskmaster-notify").read_bytes()
    assert shipped.stat().st_mode & 0o777 == 0o755


def test_the_example_configuration_is_a_conffile(built: Built) -> None:
    control = built.root.parent / "control"
    shutil.rmtree(control, ignore_errors=True)
    e = run("dpkg-deb", "-e", built.deb, control)
    assert e.returncode == 0, e.stderr
    assert sorted((control / "conffiles").read_text().split()) == [
        "/etc/logrotate.d/taskmasterd", "/etc/taskmaster/conf.d/README",
        "/etc/taskmaster/taskmaster.yaml"]
    postinst = (control / "postinst").read_text()
    assert "addgroup --system" in postinst and "taskmaster" in postinst
    assert "deb-systemd-helper enable 'taskmasterd.service'" in postinst  # system unit enabled
    # The cleanup unit is started by the main unit only (RefuseManualStart=).
    assert "taskmasterd-cleanup" not in postinst
    postrm = (control / "postrm").read_text()
    purge = postrm[postrm.index('"$1" = purge'):]
    assert "/var/log/taskmaster" in purge and "/var/lib/taskmaster" in purge


def parse_depends(value: str) -> list[list[tuple[str, str | None, str | None]]]:
    """[[(name, op, version), alternative...], ...]"""
    clauses = []
    for clause in value.split(","):
        alternatives = []
        for alt in clause.split("|"):
            m = re.fullmatch(r"\s*([a-z0-9][a-z0-9+.:-]*)\s*(?:\(\s*(<<|<=|=|>=|>>)\s*(\S+)\s*\))?\s*",
                             alt)
            assert m, f"cannot parse dependency {alt!r}"
            alternatives.append((m[1], m[2], m[3]))
        clauses.append(alternatives)
    return clauses


def satisfied(version: str, op: str, wanted: str) -> bool:
    ops = {"<<": "lt", "<=": "le", "=": "eq", ">=": "ge", ">>": "gt"}
    return subprocess.run(["dpkg", "--compare-versions", version, ops[op], wanted]).returncode == 0


def test_depends_are_satisfiable_on_debian_12(built: Built) -> None:
    depends = field(built.deb, "Depends")
    clauses = parse_depends(depends)
    names = {name for clause in clauses for name, _, _ in clause}
    for name in REQUIRED:
        assert name in names, f"{name} missing from Depends: {depends}"
    for clause in clauses:
        # Each clause has at least one alternative Debian 12 can satisfy.
        def ok(name: str, op: str | None, version: str | None) -> bool:
            have = BOOKWORM.get(name)
            return have is not None and (op is None or satisfied(have, op, version or ""))
        assert any(ok(*alt) for alt in clause), f"not satisfiable on Debian 12: {clause} in {depends}"
    # No PyPI name translated blindly (each would also fail the check above).
    assert not names & {"python3-systemd-python", "python3-pyyaml", "python3-dbus_next"}
    assert field(built.deb, "Pre-Depends") == ""


def test_dbus_next_is_pinned_to_0_2_3(built: Built) -> None:
    """taskmasterd overrides dbus-next 0.2.3's internals: apt must refuse any other version."""
    clauses = [c for c in parse_depends(field(built.deb, "Depends"))
               if any(name == "python3-dbus-next" for name, _, _ in c)]

    def accepts(version: str) -> bool:
        return bool(clauses) and all(
            any(name == "python3-dbus-next" and (op is None or satisfied(version, op, wanted or ""))
                for name, op, wanted in clause) for clause in clauses)

    assert accepts("0.2.3-3") and accepts("0.2.3-3+deb12u1") and accepts("0.2.3-1")
    assert not any(accepts(v) for v in ("0.2.2-1", "0.2.4-1", "0.2.4~rc1-1", "0.3.0-1"))


def test_lintian_reports_no_errors(built: Built) -> None:
    r = run("lintian", "--fail-on", "none", "--tag-display-limit", "0", built.deb, env=CLEAN_ENV)
    assert r.returncode == 0, r.stderr
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert errors == []


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
@pytest.mark.parametrize("unit, scope", [
    ("lib/systemd/system/taskmasterd.service", "--system"),
    ("usr/lib/systemd/user/taskmasterd.service", "--user"),
])
def test_systemd_analyze_verify_finds_nothing(built: Built, tmp_path: Path, unit: str,
                                              scope: str) -> None:
    # The binary is not installed on this machine: point ExecStart at the
    # extracted package's (the unit keeps its name, which verify checks), and
    # man at its man pages (for Documentation=).
    text = (built.root / unit).read_text()
    assert "ExecStart=/usr/bin/taskmasterd " in text
    (tmp_path / "units").mkdir()
    copy = tmp_path / "units" / "taskmasterd.service"
    copy.write_text(text.replace("/usr/bin/taskmasterd", str(built.root / "usr/bin/taskmasterd")))
    units = [copy]
    if scope == "--system":  # OnSuccess=/OnFailure= name it: verified alongside
        cleanup = built.root / "lib/systemd/system/taskmasterd-cleanup.service"
        units.append(tmp_path / "units" / cleanup.name)
        shutil.copyfile(cleanup, units[-1])
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**CLEAN_ENV, "MANPATH": str(built.root / "usr/share/man"),
           "XDG_RUNTIME_DIR": str(runtime)}
    r = run("systemd-analyze", scope, "verify", *units, env=env)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_shipped_programs_run_on_debians_python(built: Built) -> None:
    site = built.root / "usr/lib/python3/dist-packages"
    env = {**CLEAN_ENV, "PYTHONPATH": str(site)}
    python = ["/usr/bin/python3", "-s"]  # no user site either
    where = run(*python, "-c", "import taskmasterd, taskctl, dbus_next, yaml, systemd.journal;"
                "print(taskmasterd.__file__, taskctl.__file__, dbus_next.__file__, yaml.__file__)",
                env=env, cwd="/")
    assert where.returncode == 0, where.stderr
    ours, client, dbus_next, yaml = where.stdout.split()
    assert ours.startswith(str(site)) and client.startswith(str(site))
    assert dbus_next.startswith("/usr/lib/python3/dist-packages/")
    assert yaml.startswith("/usr/lib/python3/dist-packages/")

    daemon = built.root / "usr/bin/taskmasterd"
    assert daemon.read_text().startswith("#!/usr/bin/python3\n")
    r = run(*python, daemon, "--version", env=env, cwd="/")
    assert (r.returncode, r.stdout.strip()) == (0, f"taskmasterd {__version__}"), r.stderr
    config = built.root / "etc/taskmaster/taskmaster.yaml"
    r = run(*python, daemon, "--check-config", config, env=env, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout
    r = run(*python, built.root / "usr/bin/taskctl", "--version", env=env, cwd="/")
    assert (r.returncode, r.stdout.strip()) == (0, f"taskctl {__version__}"), r.stderr
    # taskmaster-web on Debian's python3-aiohttp and python3-prometheus-client
    # (its Recommends; bootstrap installs them for the tests)
    r = run(*python, "-c", "import taskweb.api, taskweb.metrics, aiohttp, prometheus_client;"
            "print(aiohttp.__file__, prometheus_client.__file__)", env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in r.stdout.split())
    r = run(*python, built.root / "usr/bin/taskmaster-web", "--help", env=env, cwd="/")
    assert r.returncode == 0 and "--token-file" in r.stdout, r.stderr


def test_the_configuration_is_not_world_readable(built: Built) -> None:
    """It may hold credentials: 0640 in the package, root:taskmaster once
    postinst has run (the group does not exist at build time)."""
    r = run("dpkg-deb", "-c", built.deb)
    assert r.returncode == 0, r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if ln.endswith(" ./etc/taskmaster/taskmaster.yaml")]
    mode, owner = line.split()[:2]
    assert (mode, owner) == ("-rw-r-----", "root/root")
    control = built.root.parent / "control-modes"
    shutil.rmtree(control, ignore_errors=True)
    e = run("dpkg-deb", "-e", built.deb, control)
    assert e.returncode == 0, e.stderr
    postinst = (control / "postinst").read_text()
    group = postinst.index("addgroup --system --quiet taskmaster")
    chown = postinst.index('chown root:taskmaster "$conf"')
    assert group < chown < postinst.index('chmod 0640 "$conf"')
    assert "for conf in /etc/taskmaster/taskmaster.yaml; do" in postinst
    assert 'dpkg-statoverride --list "$conf"' in postinst  # an admin's override is kept
    assert chown < postinst.index("deb-systemd-invoke start")  # before the service starts
    # conf.d's files may hold credentials too: the directory is root and the group's.
    confd = postinst.index('chown root:taskmaster "$confd"')
    assert group < confd < postinst.index('chmod 0750 "$confd"') < postinst.index("deb-systemd-invoke start")
    assert 'dpkg-statoverride --list "$confd"' in postinst


def test_the_package_rotates_the_lifecycle_log(built: Built, tmp_path: Path) -> None:
    conf = built.root / "etc/logrotate.d/taskmasterd"
    text = conf.read_text()
    assert re.findall(r"^(/\S+) \{", text, re.M) == ["/var/log/taskmaster/taskmasterd.log"]
    directives = {line.strip() for line in text.splitlines()}
    assert {"weekly", "rotate 4", "compress", "delaycompress", "missingok", "notifempty"} <= directives
    # The postrotate script, run against a stand-in systemctl: SIGUSR2 to the
    # daemon only, and nothing (exit 0) when the service is not running.
    script = text[text.index("postrotate") + len("postrotate"):text.index("endscript")]
    shims = tmp_path / "bin"
    shims.mkdir()
    systemctl = shims / "systemctl"
    systemctl.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\n'
                         'case "$*" in *is-active*) exit "$ACTIVE" ;; esac\n')
    systemctl.chmod(0o755)
    for active, expected in (("3", ["--quiet is-active taskmasterd.service"]),
                             ("0", ["--quiet is-active taskmasterd.service",
                                    "kill --kill-whom=main --signal=USR2 taskmasterd.service"])):
        calls = tmp_path / f"calls-{active}"
        r = run("sh", "-ec", script, env={"PATH": f"{shims}:/usr/bin:/bin", "CALLS": str(calls),
                                          "ACTIVE": active})
        assert r.returncode == 0, r.stderr
        assert calls.read_text().splitlines() == expected
    # no systemctl at all (not booted with systemd): still exit 0
    r = run("/bin/sh", "-ec", script, env={"PATH": str(tmp_path / "empty")})
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which("logrotate"), reason="needs logrotate (sh bootstrap setup installs it)")
def test_logrotate_accepts_the_configuration(built: Built, tmp_path: Path) -> None:
    conf = tmp_path / "taskmasterd"  # a copy this user owns: logrotate insists on that
    conf.write_bytes((built.root / "etc/logrotate.d/taskmasterd").read_bytes())
    conf.chmod(0o644)
    r = run("logrotate", "--debug", "--state", tmp_path / "state", conf, env=CLEAN_ENV)
    output = r.stdout + r.stderr
    assert r.returncode == 0, output
    assert "error" not in output.lower(), output
    assert "rotating pattern: /var/log/taskmaster/taskmasterd.log  weekly (4 rotations)" in output


# -- upgrades: re-exec, not restart --------------------------------------------

def maintainer_script(built: Built, name: str) -> str:
    control = built.root.parent / "control-scripts"
    if not control.exists():
        e = run("dpkg-deb", "-e", built.deb, control)
        assert e.returncode == 0, e.stderr
    return (control / name).read_text()


def test_an_upgrade_neither_stops_nor_restarts_the_service(built: Built) -> None:
    """--no-stop-on-upgrade: prerm stops on remove only, postinst's snippet
    only starts (a no-op for a running unit); the re-exec is postinst's own."""
    prerm = maintainer_script(built, "prerm")
    stops = [line for line in prerm.splitlines()
             if "deb-systemd-invoke stop" in line and "taskmasterd.service" in line]
    assert len(stops) == 1, prerm
    assert re.search(r'if .*\[ "\$1" = remove \].*\n\s*deb-systemd-invoke stop', prerm), prerm
    postinst = maintainer_script(built, "postinst")
    assert "_dh_action=restart" not in postinst
    assert "deb-systemd-invoke start 'taskmasterd.service'" in postinst
    dispatch = postinst.index('case "$was" in')
    # After debhelper's section: modules byte-compiled and systemd reloaded first.
    assert postinst.index("py3compile -p taskmasterd") < dispatch
    assert postinst.index("systemctl --system daemon-reload") < dispatch
    # `was` is read before that section, which may start a stopped unit (with the new code).
    assert postinst.index("was=$(systemctl show -p ActiveState") < postinst.index("#" " Automatically added")
    assert "exit 0" in postinst[dispatch:]


class Postinst:
    """The upgrade part of the built postinst (its functions and the final
    dispatch on the unit's state), run against stand-ins for systemctl,
    taskctl and deb-systemd-invoke that log their arguments. The daemon is a
    real process (a shell script, so that its command line starts with the
    interpreter as taskmasterd's does: /usr/bin/python3 /usr/bin/taskmasterd ...)."""

    def __init__(self, built: Built, tmp_path: Path) -> None:
        text = maintainer_script(built, "postinst")
        parts = [re.search(r"^UNIT=.*$", text, re.M)]
        for name in ("restart_taskmasterd", "reexec_taskmasterd"):
            parts.append(re.search(rf"^{name}\(\) \{{\n.*?^\}}$", text, re.M | re.S))
        parts.append(re.search(r'^case "\$was" in\n.*?^esac$', text, re.M | re.S))
        assert all(parts), "postinst no longer has UNIT=, the two functions and the case"
        self.script = "\n".join(m[0] for m in parts if m)
        self.tmp = tmp_path
        self.calls = tmp_path / "calls"
        bin_ = tmp_path / "bin"
        bin_.mkdir()
        shims = {
            "systemctl": 'echo "systemctl $*" >> "$CALLS"\n'
                         'case "$*" in\n'
                         '*MainPID*) echo "$MAIN" ;;\n'
                         '*ExecStart*) echo "{ path=/x ; argv[]=$ARGV ; ignore_errors=no ; '
                         'start_time=[n/a] ; stop_time=[n/a] ; pid=$MAIN ; code=(null) ; status=0/0 }" ;;\n'
                         "esac\n",
            # taskctl [--system] pid|daemon-reexec: $SYSTEM_PID / $DEFAULT_PID
            # answer `pid` (empty: unreachable, exit 7); daemon-reexec exits $REEXEC.
            "taskctl": 'echo "taskctl $*" >> "$CALLS"\n'
                       'if [ "$1" = --system ]; then pid=$SYSTEM_PID; shift; else pid=$DEFAULT_PID; fi\n'
                       'case "$1" in\n'
                       'pid) [ -n "$pid" ] || exit 7; echo "$pid" ;;\n'
                       'daemon-reexec) [ "$REEXEC" = 0 ] && echo "taskmasterd: re-executed"\n'
                       '    exit "$REEXEC" ;;\n'
                       "esac\n",
            "deb-systemd-invoke": 'echo "deb-systemd-invoke $*" >> "$CALLS"\n',
        }
        for name, body in shims.items():
            (bin_ / name).write_text("#!/bin/sh\n" + body)
            (bin_ / name).chmod(0o755)
        self.path = f"{bin_}:/usr/bin:/bin"
        daemon = tmp_path / "taskmasterd"
        daemon.write_text("#!/bin/sh\nsleep 600\n")
        daemon.chmod(0o755)
        self.argv = f"{daemon} --system -c /etc/taskmaster/taskmaster.yaml"
        self.daemon = subprocess.Popen([str(daemon), "--system", "-c", "/etc/taskmaster/taskmaster.yaml"],
                                       start_new_session=True)

    def close(self) -> None:
        os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait()

    def run(self, was: str, *, argv: str | None = None, system_pid: int | None = None,
            default_pid: int | None = None, reexec: int = 0) -> tuple[list[str], str]:
        """(the commands called, what the script printed)."""
        self.calls.write_text("")
        env = {"PATH": self.path, "CALLS": str(self.calls), "MAIN": str(self.daemon.pid),
               "ARGV": self.argv if argv is None else argv, "REEXEC": str(reexec),
               "SYSTEM_PID": "" if system_pid is None else str(system_pid),
               "DEFAULT_PID": "" if default_pid is None else str(default_pid)}
        r = run("sh", "-ec", f"was={was}\n{self.script}", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        return self.calls.read_text().splitlines(), r.stdout + r.stderr


@pytest.fixture
def postinst(built: Built, tmp_path: Path) -> Iterator[Postinst]:
    p = Postinst(built, tmp_path)
    try:
        yield p
    finally:
        p.close()


SHOW = ["systemctl show -p MainPID --value taskmasterd.service",
        "systemctl show -p ExecStart --value taskmasterd.service"]
RESTART = "deb-systemd-invoke restart taskmasterd.service"


def test_postinst_reexecutes_the_running_daemon(postinst: Postinst) -> None:
    main = postinst.daemon.pid
    for was in ("active", "reloading"):
        calls, out = postinst.run(was, system_pid=main)
        assert calls == [*SHOW, "taskctl --system pid", "taskctl --system daemon-reexec"], was
        assert "taskmasterd: re-executed" in out and "restarting" not in out
    # No system bus (the daemon serves its private bus): taskctl without a flag finds it.
    calls, out = postinst.run("active", default_pid=main)
    assert calls == [*SHOW, "taskctl --system pid", "taskctl pid", "taskctl daemon-reexec"]
    assert RESTART not in calls


def test_postinst_restarts_and_says_why_when_it_cannot_reexec(postinst: Postinst) -> None:
    main = postinst.daemon.pid
    # The re-exec refused or failed (a daemon without Reexecute, a timeout).
    calls, out = postinst.run("active", system_pid=main, reexec=1)
    assert calls[-2:] == ["taskctl --system daemon-reexec", RESTART]
    assert (f"taskmasterd: the re-exec of pid {main} failed: restarting taskmasterd.service "
            "instead (its programs restart too)") in out
    # Nobody answers as the unit's MainPID (unreachable, or another daemon).
    calls, out = postinst.run("active", system_pid=main + 1)
    assert calls == [*SHOW, "taskctl --system pid", "taskctl pid", RESTART]
    assert f"taskctl cannot reach the daemon (pid {main}) over D-Bus: restarting" in out
    # The unit now says another command line: a re-exec would run the old one.
    calls, out = postinst.run("active", system_pid=main,
                              argv=postinst.argv.replace(" --system", " --bus private"))
    assert calls == [*SHOW, RESTART]
    assert "the unit's ExecStart= (" in out and "is not the daemon's command line (/bin/sh " in out
    # The unit was starting (with the old code) when the upgrade came.
    calls, out = postinst.run("activating", system_pid=main)
    assert calls == [RESTART]
    assert "it was starting during the upgrade: restarting" in out


def test_postinst_leaves_a_stopped_unit_alone(postinst: Postinst) -> None:
    for was in ("", "inactive", "failed", "deactivating"):
        calls, out = postinst.run(was or "''", system_pid=postinst.daemon.pid)
        assert (calls, out) == ([], ""), was


# -- taskmaster-web (docs/web.md): shipped, off by default, its token made once ----

def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_web_service_is_shipped_off_by_default(built: Built) -> None:
    unit = unit_settings((built.root / "lib/systemd/system/taskmaster-web.service").read_text())
    expected = {"Type": ["notify"], "ExecStart": ["/usr/bin/taskmaster-web --system"],
                "User": ["taskmaster-web"], "SupplementaryGroups": ["taskmaster"],
                "LoadCredential": ["token:/etc/taskmaster/web.token"], "CapabilityBoundingSet": [""],
                "WantedBy": ["multi-user.target"]}
    assert {k: unit.get(k) for k in expected} == expected
    # not DynamicUser=: dbus-daemon drops a dynamic user's connection (the unit says more)
    assert "DynamicUser" not in unit
    for hardening in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectHome",
                      "ProtectKernelTunables", "ProtectControlGroups", "RestrictNamespaces",
                      "LockPersonality"):
        assert unit.get(hardening) == ["yes"], hardening
    assert "Requires" not in unit  # a client: it waits for the daemon, is not bound to it
    assert (built.root / "usr/bin/taskmaster-web").read_text().startswith("#!/usr/bin/python3\n")
    assert unit["ProtectSystem"] == ["strict"]
    postinst = maintainer_script(built, "postinst")
    assert re.search(r"if ! getent passwd taskmaster-web .*\n\s*adduser --system --quiet --group "
                     r"--no-create-home --home /nonexistent", postinst), postinst
    # Not enabled on install (only re-enabled if the admin had enabled it), never
    # started; an upgrade restarts it only if it runs.
    assert "deb-systemd-helper --quiet was-enabled 'taskmaster-web.service'" in postinst
    assert "deb-systemd-invoke start 'taskmaster-web.service'" not in postinst
    assert "deb-systemd-invoke try-restart 'taskmaster-web.service'" in postinst
    assert "deb-systemd-invoke restart 'taskmaster-web.service'" not in postinst
    prerm = maintainer_script(built, "prerm")
    assert re.search(r'\[ "\$1" = remove \].*\n\s*deb-systemd-invoke stop .taskmaster-web.service.',
                     prerm), prerm
    postrm = maintainer_script(built, "postrm")
    assert "rm -f /etc/taskmaster/web.token" in postrm[postrm.index('"$1" = purge'):]
    # taskmasterd works without them: recommended, not required
    recommends = {name for clause in parse_depends(field(built.deb, "Recommends"))
                  for name, _, _ in clause}
    assert {"python3-aiohttp", "python3-prometheus-client"} <= recommends
    depends = field(built.deb, "Depends")
    assert "aiohttp" not in depends and "prometheus" not in depends


def test_postinst_makes_the_web_token_once_and_root_only(built: Built, tmp_path: Path) -> None:
    """postinst's token block, run on a path of the test's (chown a stand-in
    that logs: the test may not be root): a random token of 32 characters,
    mode 600, never replaced, and a symlink there is left alone."""
    from taskweb.auth import read_token

    text = maintainer_script(built, "postinst")
    m = re.search(r"^\ttoken=/etc/taskmaster/web.token\n.*?^\tfi$", text, re.M | re.S)
    assert m, "postinst no longer makes /etc/taskmaster/web.token"
    token = tmp_path / "etc" / "web.token"
    token.parent.mkdir()
    script = m[0].replace("/etc/taskmaster/web.token", str(token))
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "chown").write_text('#!/bin/sh\necho "chown $*" >> "$CALLS"\n')
    (bin_ / "chown").chmod(0o755)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls")}
    r = run("sh", "-ec", script, env=env)
    assert r.returncode == 0, r.stderr
    assert token.stat().st_mode & 0o777 == 0o600
    first = read_token(str(token))  # the service accepts it
    assert len(first) == 32 and re.fullmatch(r"[A-Za-z0-9+/]{32}", first)
    assert (tmp_path / "calls").read_text() == f"chown root:root {token}.dpkg-new\n"
    assert sorted(p.name for p in token.parent.iterdir()) == ["web.token"]
    r = run("sh", "-ec", script, env=env)  # an upgrade: kept
    assert r.returncode == 0 and read_token(str(token)) == first
    token.unlink()
    r = run("sh", "-ec", script, env=env)
    assert r.returncode == 0 and read_token(str(token)) != first  # random
    token.unlink()
    token.symlink_to(tmp_path / "elsewhere")  # an admin's link (dangling, even)
    r = run("sh", "-ec", script, env=env)
    assert r.returncode == 0 and token.is_symlink() and not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_analyze_verify_finds_nothing_in_the_web_unit(built: Built, tmp_path: Path) -> None:
    text = (built.root / "lib/systemd/system/taskmaster-web.service").read_text()
    (tmp_path / "units").mkdir()
    copy = tmp_path / "units" / "taskmaster-web.service"
    copy.write_text(text.replace("/usr/bin/taskmaster-web",
                                 str(built.root / "usr/bin/taskmaster-web")))
    r = run("systemd-analyze", "--system", "verify", copy, env=CLEAN_ENV)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
