"""A configuration holding credentials that any user can read: one warning
naming the file, at start and at each reload (issue 11, 5.)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.harness import Daemon, event

WARNING = "holds credentials"


def config_text(workdir: Path, url: str) -> str:
    return (f"taskmasterd: {{logfile: {workdir}/t.log, logdir: {workdir}/logs}}\n"
            "programs:\n  web: {cmd: sleep 100000, starttime: 0}\n"
            f"alerts:\n  - url: \"{url}\"\n    events: [FATAL]\n")


def test_world_readable_credentials_are_warned_of_at_start_and_reload(
        workdir: Path, daemons: Callable[..., Daemon]) -> None:
    config = workdir / "taskmaster.yaml"
    config.write_text(config_text(workdir, "mailto://tm:S3cretPass@smtp.example.com?to=ops@example.com"))
    config.chmod(0o644)
    d = daemons(config)
    d.wait_for(event("RUNNING", "web"))
    warnings = [line for line in d.raw if WARNING in line]
    assert len(warnings) == 1, d.text()
    assert f"WARNING {config} holds credentials (alerts[0].url) and any user can read it (mode 0644)" \
        in warnings[0]
    assert "S3cretPass" not in d.text() and "S3cretPass" not in (workdir / "t.log").read_text()

    d.reload()
    assert len([line for line in d.raw if WARNING in line]) == 2  # once per load

    config.chmod(0o640)
    d.reload()
    assert len([line for line in d.raw if WARNING in line]) == 2
    assert d.terminate() == 0


def test_no_warning_without_credentials(workdir: Path, daemons: Callable[..., Daemon]) -> None:
    config = workdir / "taskmaster.yaml"
    config.write_text(config_text(workdir, "jsons://hooks.example.com/taskmaster"))
    config.chmod(0o644)
    d = daemons(config)
    d.wait_for(event("RUNNING", "web"))
    d.reload()
    assert WARNING not in d.text()
    assert d.terminate() == 0
