"""The importer's output (structure of the YAML it writes, the notes, the
command line), checked without the config loader: the round trip through
--check-config and both daemons is tests/integration/test_importer.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmasterd.cli import main
from taskmasterd.importer.convert import convert
from taskmasterd.programschema import PROGRAM_KEYS

DATA = Path(__file__).resolve().parents[1] / "data" / "supervisord"
NEW_KEYS = {"redirect_stderr"}  # issue 19's, not in the loader until it merges


def programs_of(conf: str | Path) -> tuple[dict[str, Any], list[str]]:
    result = convert(str(conf))
    docs = {rel: yaml.safe_load(text) for rel, text in result.files.items()}
    merged: dict[str, Any] = {}
    for doc in docs.values():
        merged.update(doc.get("programs") or {})
    return merged, [str(n) for n in result.notes]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("conf", sorted(DATA.rglob("*.conf")), ids=lambda p: p.stem)
def test_every_real_config_gives_only_our_keys(conf: Path) -> None:
    programs, _ = programs_of(conf)
    for name, body in programs.items():
        assert set(body) <= set(PROGRAM_KEYS) | NEW_KEYS, name
        assert isinstance(body["cmd"], str) and body["cmd"]


def test_program_options_map(tmp_path: Path) -> None:
    conf = write(tmp_path / "s.conf", """\
[supervisord]
[program:web]
command=/usr/bin/web --port 80
directory=/srv/web
umask=22
autostart=false
autorestart=unexpected
startsecs=5
startretries=7
exitcodes=0,2
stopsignal=int
stopwaitsecs=30
user=www-data
environment=A="x,y",B=%(program_name)s
stdout_logfile=/var/log/web.out
stdout_logfile_maxbytes=1MB
stdout_logfile_backups=3
stderr_logfile=NONE
""")
    programs, notes = programs_of(conf)
    assert programs == {"web": {
        "cmd": "/usr/bin/web --port 80", "workingdir": "/srv/web", "umask": "022",
        "autostart": False, "autorestart": "unexpected", "exitcodes": [0, 2],
        "startretries": 7, "starttime": 5, "stoptime": 30, "stopsignal": "INT",
        "user": "www-data", "env": {"A": "x,y", "B": "web"},
        "stdout": "/var/log/web.out", "stderr": None,
        "stdout_maxbytes": "1MB", "stdout_backups": 3}}
    assert notes == []


def test_outputs_auto_none_and_redirect(tmp_path: Path) -> None:
    conf = write(tmp_path / "s.conf", """\
[supervisord]
[program:a]
command=a
stdout_logfile=AUTO
stderr_logfile=off
[program:b]
command=b
redirect_stderr=true
stdout_logfile=/tmp/b.log
stderr_logfile=/tmp/b.err
""")
    programs, notes = programs_of(conf)
    assert programs["a"] == {"cmd": "a", "stderr": None}  # AUTO: absent = ours automatic
    assert programs["b"] == {"cmd": "b", "stdout": "/tmp/b.log", "redirect_stderr": True}
    assert notes == [f"{conf}:10: [program:b] stderr_logfile: ignored with redirect_stderr=true "
                     "(as supervisord does)"]


def test_report_lines(tmp_path: Path) -> None:
    conf = write(tmp_path / "supervisord.conf", """\
[supervisord]
pidfile=/run/s.pid
[program:web]
command=web
stdout_capture_maxbytes=1MB
stopasgroup=false
killasgroup=false
[eventlistener:x]
command=listener
[group:g]
programs=web
""")
    _, notes = programs_of(conf)
    assert notes == [
        f"{conf}:2: [supervisord] pidfile: not carried over: no pid file: systemd or your init "
        "tracks taskmasterd",
        f"{conf}:5: [program:web] stdout_capture_maxbytes: not supported (no process "
        "communication events; use alerts: in docs/config.md)",
        f"{conf}:6: [program:web] stopasgroup: Taskmaster always signals the whole process group "
        "(a program is its process group)",
        f"{conf}:7: [program:web] killasgroup: Taskmaster always signals the whole process group "
        "(a program is its process group)",
        f"{conf}:8: [eventlistener:x] not carried over: no event listeners: use alerts: for "
        "notifications in docs/config.md; or run it as a program if it does not need "
        "supervisord's events",
        f"{conf}:10: [group:g] groups are not carried over: its programs (web) are programs of "
        "their own; start them together with `taskctl start a b` or a glob",
    ]


def test_numprocs_and_process_name(tmp_path: Path) -> None:
    programs, notes = programs_of(DATA / "debian" / "conf.d" / "laravel-worker.conf")
    worker = programs["laravel-worker"]
    assert worker["numprocs"] == 3 and worker["redirect_stderr"] is True
    assert worker["stoptime"] == 3600
    assert any("process_name: the processes are named laravel-worker:0 ... laravel-worker:2 "
               "(supervisord: laravel-worker:<process_name>)" in n for n in notes)
    conf = write(tmp_path / "s.conf", "[supervisord]\n[program:w]\ncommand=w %(process_num)d\n"
                                      "numprocs=2\nprocess_name=%(program_name)s_%(process_num)d\n"
                                      "stdout_logfile=/tmp/w-%(process_num)02d.log\n")
    programs, notes = programs_of(conf)
    assert programs["w"]["cmd"] == "w %{process_num}"
    assert programs["w"]["stdout"] == "/tmp/w-%{process_num:02}.log"  # the same file names
    assert not any("process_num" in n and "format" in n for n in notes)


def test_names_are_made_ours(tmp_path: Path) -> None:
    conf = write(tmp_path / "s.conf", "[supervisord]\n[program:all]\ncommand=a\n"
                                      "[program:a@b]\ncommand=b\n[program:a_b]\ncommand=c\n")
    programs, notes = programs_of(conf)
    assert list(programs) == ["all_", "a_b", "a_b-2"]
    assert any("'a_b' is taken; written as 'a_b-2'" in n for n in notes)


def test_priority_becomes_after(tmp_path: Path) -> None:
    conf = write(tmp_path / "s.conf", """\
[supervisord]
[program:db]
command=db
priority=1
[program:cache]
command=cache
priority=1
autostart=false
[program:app]
command=app
priority=5
[program:web]
command=web
[program:late]
command=late
priority=2000
[program:g1]
command=g1
priority=1
[group:grp]
programs=g1
priority=3000
""")
    programs, notes = programs_of(conf)
    assert "after" not in programs["db"] and "after" not in programs["cache"]
    assert programs["app"]["after"] == ["db"]  # cache does not start by itself: not waited for
    assert programs["web"]["after"] == ["app"]  # 999, the default
    assert programs["late"]["after"] == ["web"]
    assert programs["g1"]["after"] == ["late"]  # a group member takes the group's priority
    assert any("[program:app] priority: priority 5: written as after: [db]" in n for n in notes)


def test_one_priority_level_gives_no_after() -> None:
    programs, _ = programs_of(DATA / "public" / "gunicorn.conf")  # a group at 999
    assert all("after" not in body for body in programs.values())
    assert programs["gunicorn"]["env"]["PATH"] == "/srv/site/venv/bin:%{env.PATH}"


def test_debian_layout_with_conf_d(tmp_path: Path) -> None:
    root = tmp_path / "etc" / "supervisor"
    shutil.copytree(DATA / "debian", root)
    main_conf = root / "supervisord.conf"
    main_conf.write_text(main_conf.read_text().replace("/etc/supervisor/", f"{root}/"))
    result = convert(str(main_conf))
    assert sorted(result.files) == ["conf.d/celery.yaml", "conf.d/laravel-worker.yaml",
                                    "taskmaster.yaml"]
    top = yaml.safe_load(result.files["taskmaster.yaml"])
    assert top == {"taskmasterd": {"logfile": "/var/log/supervisor/taskmasterd.log",
                                   "logdir": "/var/log/supervisor",
                                   "include": ["conf.d/*.yaml"]},
                   "programs": {}}
    celery = yaml.safe_load(result.files["conf.d/celery.yaml"])
    assert list(celery) == ["programs"] and list(celery["programs"]) == ["work", "beat"]
    assert celery["programs"]["work"]["autorestart"] == "never"
    assert result.files["conf.d/celery.yaml"].startswith(
        f"# Imported from supervisord's {root}/conf.d/celery.conf\n")


def test_sample_config(tmp_path: Path) -> None:
    result = convert(str(DATA / "sample" / "supervisord.conf"))
    assert list(result.files) == ["taskmaster.yaml"]  # its programs are all commented out
    doc = yaml.safe_load(result.files["taskmaster.yaml"])
    assert doc == {"taskmasterd": {"logfile": "/tmp/taskmasterd.log", "loglevel": "info"},
                   "programs": {}}


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write(tmp_path / "s.conf", "[supervisord]\n[program:web]\ncommand=web\n"
                                      "stdout_events_enabled=true\n")
    out = tmp_path / "out"
    assert main(["--import-supervisord", str(conf), "-o", str(out)]) == 0
    cap = capsys.readouterr()
    assert f"wrote {out}/taskmaster.yaml: 1 program(s)" in cap.out
    assert f"{conf}:4: [program:web] stdout_events_enabled: not supported" in cap.err
    assert yaml.safe_load((out / "taskmaster.yaml").read_text())["programs"] == {"web": {"cmd": "web"}}
    # never overwrites without --force
    assert main(["--import-supervisord", str(conf), "-o", str(out)]) == 2
    assert "exists; not overwritten (use --force" in capsys.readouterr().err
    assert main(["--import-supervisord", str(conf), "-o", str(out), "--force"]) == 0
    assert "(replaced)" in capsys.readouterr().out
    assert main(["--import-supervisord", str(tmp_path / "nope.conf"), "-o", str(out)]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["-o", str(out)])
    assert exc.value.code == 2


def test_sections_merge_across_files_as_supervisord(tmp_path: Path) -> None:
    main_conf = write(tmp_path / "supervisord.conf", "[program:web]\ncommand=web\nstartsecs=1\n"
                                                     "[include]\nfiles=conf.d/*.conf\n")
    extra = write(tmp_path / "conf.d" / "more.conf", "[program:web]\nstartsecs=5\n"
                                                     "[include]\nfiles=*.conf\n")
    result = convert(str(main_conf))
    assert list(result.files) == ["taskmaster.yaml"]  # the merged program stays where it began
    doc = yaml.safe_load(result.files["taskmaster.yaml"])
    assert doc["programs"] == {"web": {"cmd": "web", "starttime": 5}}
    assert [str(n) for n in result.notes] == [
        f"{main_conf}:1: [supervisord] missing (supervisord refuses such a file); imported anyway",
        f"{extra}:1: [program:web] also defined at {main_conf}:1; merged, the later options win "
        "(as supervisord does)",
        f"{extra}:3: [include] ignored, as supervisord ignores [include] in included files",
    ]


def test_plain_keys_are_expanded_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the Laravel documentation's pattern: numprocs and user from the environment
    monkeypatch.setenv("QUEUE_WORKERS", "4")
    monkeypatch.setenv("APP_USER", "www-data")
    monkeypatch.delenv("QUEUE_TIMEOUT", raising=False)
    conf = write(tmp_path / "s.conf", "[supervisord]\n[program:q]\ncommand=php artisan queue:work\n"
                                      "numprocs=%(ENV_QUEUE_WORKERS)s\nuser=%(ENV_APP_USER)s\n"
                                      "stopwaitsecs=%(ENV_QUEUE_TIMEOUT)s\n")
    programs, notes = programs_of(conf)
    assert programs["q"] == {"cmd": "php artisan queue:work", "numprocs": 4, "user": "www-data"}
    assert f"{conf}:4: [program:q] numprocs: '%(ENV_QUEUE_WORKERS)s' is expanded now, with this " \
           "environment (QUEUE_WORKERS=4): written as '4'" in notes
    assert f"{conf}:6: [program:q] stopwaitsecs: cannot expand '%(ENV_QUEUE_TIMEOUT)s': " \
           "'ENV_QUEUE_TIMEOUT' is not set here; left out" in notes


def test_relative_paths_are_reported(tmp_path: Path) -> None:
    conf = write(tmp_path / "s.conf", "[supervisord]\n[program:r]\ncommand=./bin/r\n"
                                      "directory=app\nstdout_logfile=logs/r.log\n")
    _, notes = programs_of(conf)
    assert [n.split(": ", 1)[0] for n in notes] == [f"{conf}:3", f"{conf}:4", f"{conf}:5"]
    assert all("relative" in n for n in notes)


def test_the_samples_program_section(tmp_path: Path) -> None:
    """echo_supervisord_conf's commented [program:theprogramname], every option, uncommented."""
    lines = (DATA / "sample" / "supervisord.conf").read_text().split("\n")
    start = lines.index(";[program:theprogramname]")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() in ("", ";"))
    conf = write(tmp_path / "s.conf", "\n".join(["[supervisord]", *(ln[1:] for ln in lines[start:end])]))
    programs, notes = programs_of(conf)
    assert programs == {"theprogramname": {
        "cmd": "/bin/cat", "workingdir": "/tmp", "umask": "022", "autostart": True,
        "autorestart": "unexpected", "exitcodes": [0], "startretries": 3, "starttime": 1,
        "stoptime": 10, "stopsignal": "QUIT", "user": "chrism", "env": {"A": "1", "B": "2"},
        "stdout": "/a/path", "stdout_maxbytes": "1MB", "stdout_backups": 10,
        "redirect_stderr": True}}
    # options left at their defaults (events off, serverurl AUTO) are not reported
    assert [n.split("] ", 1)[1].split(":")[0] for n in notes] == [
        "stopasgroup", "killasgroup", "stdout_capture_maxbytes", "stderr_logfile",
        "stderr_capture_maxbytes"]
