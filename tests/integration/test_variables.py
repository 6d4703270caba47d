"""Variables (`%{name}`) with the real daemon (issue 19): each process gets
its own values and its own file, `taskctl tail` (OpenLog) opens that file, a
redirected stderr's tail is the stdout file, and an undefined variable
refuses the start with the value's place."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_redirect_stderr import ends_with
from tests.integration.test_taskctl import taskctl

Start = Callable[..., Daemon]


def test_each_process_its_values_and_its_file(write_config: WriteConfig, daemons: Start,
                                              bus_address: str, workdir: Path) -> None:
    cfg = write_config({"w": {
        "cmd": "sh -c 'echo %{process} %{process_num}/%{numprocs} %{env.TM_GREETING} \"$WHO\" "
               "in $PWD; echo oops >&2; exec sleep 100000'",
        "numprocs": 2, "starttime": 0,
        "env": {"WHO": "%{program}@%{host}"},
        "workingdir": "%{here}",
        "stdout": "out/w-%{process_num}.log",  # relative: to the file's directory
        "redirect_stderr": True,
    }})
    (workdir / "out").mkdir()
    d = daemons(cfg, env={"TM_GREETING": "hello world"})
    d.wait_count(event("RUNNING"), 2)
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    for i in (0, 1):
        f = workdir / "out" / f"w-{i}.log"
        want = f"w:{i} {i}/2 hello world w@{host} in {workdir}\noops\n"
        wait_until(f"the output of w:{i}", ends_with(f, b"oops\n"))
        assert f.read_text() == want
        # OpenLog opens the process's own file: stdout, and stderr (redirected) alike
        for args in ((f"w:{i}",), ("--stderr", f"w:{i}")):
            r = taskctl(bus_address, "tail", *args)
            assert r.returncode == 0 and r.stdout == want, r.stderr
    assert d.terminate() == 0


def test_a_zero_padded_number_names_the_files_as_supervisord_did(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """%{process_num:02}, what the importer writes for %(process_num)02d:
    the command sees 00, 01 and each process writes its own 0-padded file."""
    cfg = write_config({"w": {
        "cmd": "sh -c 'echo id=%{process_num:02}; exec sleep 100000'",
        "numprocs": 2, "starttime": 0, "stdout": "w_%{process_num:02}.log"}})
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 2)
    for i in (0, 1):
        f = workdir / f"w_0{i}.log"
        wait_until(f"the output of w:{i}", ends_with(f, b"\n"))
        assert f.read_text() == f"id=0{i}\n"
        r = taskctl(bus_address, "tail", f"w:{i}")
        assert r.returncode == 0 and r.stdout == f"id=0{i}\n", r.stderr
    assert sorted(p.name for p in workdir.glob("w_*.log")) == ["w_00.log", "w_01.log"]
    assert d.terminate() == 0


def test_an_undefined_variable_is_a_located_error(write_config: WriteConfig,
                                                  workdir: Path) -> None:
    cfg = write_config({"w": {"cmd": "run %{env.TM_SURELY_UNSET_VAR}"}})
    r = subprocess.run([sys.executable, "-m", "taskmasterd", "--check-config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    line = next(ln for ln in cfg.read_text().splitlines() if "TM_SURELY_UNSET_VAR" in ln)
    lineno = cfg.read_text().splitlines().index(line) + 1
    assert f"{cfg}:{lineno}:" in r.stderr and "programs.w.cmd" in r.stderr
    assert "TM_SURELY_UNSET_VAR is not set in taskmasterd's environment" in r.stderr
