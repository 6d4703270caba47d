"""`bootstrap`'s install logic under dash (Debian's /bin/sh), without
installing anything: a temporary copy of the repository's bootstrap whose
`python=/usr/bin/python3` line names a stand-in, with stand-ins for
dpkg-query and the venv's pip, taskmasterd and test tools (issue 11, 6.)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASH = shutil.which("dash")
pytestmark = pytest.mark.skipif(DASH is None, reason="needs dash (Debian's /bin/sh)")

# The venv stand-in: `python -m venv .venv` makes .venv/bin/python and a pip
# that logs its calls to ../calls; an install of the project makes
# taskmasterd, and with [test] the test tools; FAIL_PIP=1 fails the project's
# install (the network error of the issue).
FAKE_PYTHON = r"""#!/bin/sh
set -eu
[ "$1 $2" = "-m venv" ] || { echo "python stand-in: unexpected $*" >&2; exit 9; }
echo "venv" >> calls
mkdir -p "$3/bin"
cat > "$3/bin/python" <<'EOF'
#!/bin/sh
echo "python $*" >> calls
EOF
cat > "$3/bin/pip" <<'EOF'
#!/bin/sh
echo "pip $*" >> calls
case "$*" in *"--upgrade pip"*) exit 0 ;; esac
if [ "${FAIL_PIP:-}" = 1 ]; then echo "pip: network unreachable" >&2; exit 1; fi
printf '#!/bin/sh\necho "taskmasterd $*" >> calls\n' > .venv/bin/taskmasterd
printf '#!/bin/sh\nfor a; do echo "taskctl arg: $a"; done\n' > .venv/bin/taskctl
case "$*" in *"[test]"*)
    for tool in ruff mypy; do printf '#!/bin/sh\necho "%s $*" >> calls\n' $tool > .venv/bin/$tool; done
    chmod +x .venv/bin/ruff .venv/bin/mypy ;;
esac
chmod +x .venv/bin/taskmasterd .venv/bin/taskctl
EOF
chmod +x "$3/bin/python" "$3/bin/pip"
"""
# Every Debian package is there (but those named in $MISSING): apt-get is
# never reached unless a test says so.
FAKE_DPKG_QUERY = r"""#!/bin/sh
for p; do :; done
case " ${MISSING:-} " in *" $p "*) exit 1 ;; esac
printf 'install ok installed'
"""
# The apt-get stand-in for tests that let it run: logs its calls and, for an
# install, what the policy-rc.d file said then (or that there was none).
FAKE_APT_GET = r"""#!/bin/sh
echo "apt-get $*" >> calls
if [ "$1" = install ]; then
    if [ -e "$POLICY" ]; then echo "policy: $(tail -n 1 "$POLICY")" >> calls
    else echo "policy: none" >> calls; fi
fi
"""


BINDIR = "\nbindir=/usr/local/bin  # where `run` puts taskctl, as root\n"
POLICY = "\npolicy=/usr/sbin/policy-rc.d  # Debian's switch for starting services from maintainer scripts\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


def make_tree(tmp_path: Path) -> Path:
    """The copy of bootstrap in tmp_path; what it would put in /usr/local/bin goes to bin/."""
    text = (ROOT / "bootstrap").read_text()
    assert text.count("\npython=/usr/bin/python3\n") == 1 and text.count(BINDIR) == 1
    assert text.count(POLICY) == 1
    tmp_path.mkdir(exist_ok=True)
    text = text.replace(BINDIR, f'\nbindir="{tmp_path}/bin"\n')
    text = text.replace(POLICY, f'\npolicy="{tmp_path}/policy-rc.d"\n')
    (tmp_path / "bootstrap").write_text(text.replace("\npython=/usr/bin/python3\n",
                                                     f'\npython="{tmp_path}/shims/python3"\n'))
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    shims = tmp_path / "shims"
    shims.mkdir()
    for name, body in (("python3", FAKE_PYTHON), ("dpkg-query", FAKE_DPKG_QUERY)):
        (shims / name).write_text(body)
        (shims / name).chmod(0o755)
    (shims / "apt-get").write_text("#!/bin/sh\necho 'apt-get must not run' >&2\nexit 9\n")
    (shims / "apt-get").chmod(0o755)
    return tmp_path


def bootstrap(tree: Path, *args: str, fail_pip: bool = False, uid: int | None = None,
              missing: str = "") -> tuple[int, list[str], str]:
    """Run the copy with dash: (exit status, what it called, stderr). `uid`:
    what `id -u` says (default: the truth); `missing`: the Debian packages
    dpkg-query says are not installed (apt-get then runs, a stand-in)."""
    calls = tree / "calls"
    calls.unlink(missing_ok=True)
    shims = tree / "shims"
    (shims / "id").unlink(missing_ok=True)
    if uid is not None:
        (shims / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (shims / "id").chmod(0o755)
    env = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(tree), "MISSING": missing,
           "POLICY": str(tree / "policy-rc.d")}
    (shims / "apt-get").write_text(FAKE_APT_GET if missing else
                                   "#!/bin/sh\necho 'apt-get must not run' >&2\nexit 9\n")
    (shims / "systemctl").write_text('#!/bin/sh\necho "systemctl $*" >> calls\n')
    (shims / "systemctl").chmod(0o755)
    if fail_pip:
        env["FAIL_PIP"] = "1"
    assert DASH is not None
    r = subprocess.run([DASH, str(tree / "bootstrap"), *args], cwd=tree, env=env, capture_output=True,
                       text=True, timeout=60)
    return r.returncode, calls.read_text().splitlines() if calls.exists() else [], r.stderr


PROJECT = "pip install -q -e ."
WITH_TESTS = "pip install -q -e .[test]"


def installs(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("pip install -q -e")]


def test_a_run_interrupted_after_the_venv_is_finished_by_the_next(tree: Path) -> None:
    rc, calls, err = bootstrap(tree, "run", fail_pip=True)
    assert rc != 0 and "network unreachable" in err
    assert calls[0] == "venv" and (tree / ".venv/bin/python").exists()
    assert not (tree / ".venv/.installed").exists()

    rc, calls, err = bootstrap(tree, "run")  # dash: `[ pyproject.toml -nt <missing> ]` is false
    assert rc == 0, err
    assert installs(calls) == [PROJECT]
    assert calls[-1] == "taskmasterd -c etc/taskmaster.yaml"
    assert (tree / ".venv/.installed").read_text() == "run\n"

    rc, calls, err = bootstrap(tree, "run")  # set up: straight to the daemon
    assert (rc, calls) == (0, ["taskmasterd -c etc/taskmaster.yaml"]), err


def test_run_installs_no_test_tools_and_test_adds_them_without_a_downgrade_after(tree: Path) -> None:
    rc, calls, err = bootstrap(tree, "run", "--bus", "private")
    assert rc == 0, err
    assert installs(calls) == [PROJECT]
    assert calls[-1] == "taskmasterd -c etc/taskmaster.yaml --bus private"
    assert not (tree / ".venv/bin/ruff").exists()

    rc, calls, err = bootstrap(tree, "test", "-x")
    assert rc == 0, err
    assert installs(calls) == [WITH_TESTS]
    assert calls[-3:] == ["ruff check taskmasterd taskctl taskweb tests bench",
                          "mypy taskmasterd taskctl taskweb", "python -m pytest -q -x"]

    rc, calls, err = bootstrap(tree, "run")  # a run after a test installs nothing
    assert (rc, calls) == (0, ["taskmasterd -c etc/taskmaster.yaml"]), err
    assert (tree / ".venv/.installed").read_text() == "test\n"

    future = time.time() + 10
    os.utime(tree / "pyproject.toml", (future, future))  # changed: install again, tools kept
    rc, calls, err = bootstrap(tree, "run")
    assert rc == 0, err
    assert installs(calls) == [WITH_TESTS]


def test_setup_installs_the_test_tools_once(tree: Path) -> None:
    rc, calls, err = bootstrap(tree, "setup")
    assert rc == 0, err
    assert calls[0] == "venv" and installs(calls) == [WITH_TESTS]
    rc, calls, err = bootstrap(tree, "setup")
    assert (rc, calls) == (0, []), err
    rc, calls, err = bootstrap(tree, "test")
    assert rc == 0 and installs(calls) == [], err


def test_an_interrupted_upgrade_to_the_test_tools_is_finished_too(tree: Path) -> None:
    assert bootstrap(tree, "run")[0] == 0
    rc, _, _ = bootstrap(tree, "setup", fail_pip=True)
    assert rc != 0
    assert not (tree / ".venv/.installed").exists()  # removed before installing
    rc, calls, err = bootstrap(tree, "run")
    assert rc == 0 and installs(calls) == [PROJECT], err
    rc, calls, err = bootstrap(tree, "setup")
    assert rc == 0 and installs(calls) == [WITH_TESTS], err


def test_an_older_bootstraps_empty_stamp_counts_as_set_up(tree: Path) -> None:
    assert bootstrap(tree, "setup")[0] == 0
    (tree / ".venv/.installed").write_text("")  # what `touch` left
    future = time.time() - 10
    os.utime(tree / "pyproject.toml", (future, future))
    rc, calls, err = bootstrap(tree, "test")
    assert rc == 0 and installs(calls) == [], err


# ---- taskctl reachable after `sh bootstrap run` (issue 12, 3.) ------------------------------


def test_run_as_root_puts_taskctl_on_path_and_says_so(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "it's a clone")  # a quote in the path, on purpose
    rc, calls, err = bootstrap(tree, "run", uid=0)
    assert rc == 0 and calls[-1] == "taskmasterd -c etc/taskmaster.yaml", err
    wrapper = tree / "bin" / "taskctl"
    assert f"in another terminal: taskctl status   ({wrapper} runs {tree}/.venv/bin/taskctl)" in err
    r = subprocess.run([str(wrapper), "status", "two words", "$HOME"], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.splitlines() == ["taskctl arg: status", "taskctl arg: two words",
                                     "taskctl arg: $HOME"], r.stderr
    assert not (tree / "bin" / "taskctl.tmp").exists()

    rc, _, err = bootstrap(tree, "run", uid=0)  # ours: written again
    assert rc == 0 and "in another terminal: taskctl status" in err

    shutil.rmtree(tree / ".venv")  # the clone's venv gone: the wrapper says so
    r = subprocess.run([str(wrapper), "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 127 and r.stderr.startswith(f"taskctl: {tree}/.venv/bin/taskctl is gone")


def test_the_test_servers_are_installed_without_starting_them_and_left_disabled(
        tree: Path) -> None:
    rc, calls, err = bootstrap(tree, "setup", uid=0,
                               missing="make nginx redis-server openssh-server")
    assert rc == 0, err
    apt = [c for c in calls if c.startswith(("apt-get", "policy", "systemctl"))]
    assert apt == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends make", "policy: none",
        "apt-get install -y -qq --no-install-recommends nginx redis-server openssh-server",
        "policy: exit 101",
        "systemctl disable --quiet nginx.service", "systemctl disable --quiet redis-server.service",
        "systemctl disable --quiet ssh.service",  # openssh-server's unit
    ]
    assert "bootstrap: installing make nginx redis-server openssh-server" in err
    assert not (tree / "policy-rc.d").exists()  # bootstrap's own, removed after


def test_a_policy_rc_d_already_there_is_kept(tree: Path) -> None:
    mine = "#!/bin/sh\n# a container's own\nexit 0\n"
    (tree / "policy-rc.d").write_text(mine)
    rc, calls, err = bootstrap(tree, "setup", uid=0, missing="redis-server")
    assert rc == 0, err
    assert "policy: exit 0" in calls and (tree / "policy-rc.d").read_text() == mine


def test_run_needs_no_test_server(tree: Path) -> None:
    rc, calls, err = bootstrap(tree, "run", uid=0, missing="nginx redis-server")
    assert rc == 0, err
    assert not [c for c in calls if c.startswith("apt-get")]


def test_missing_servers_without_root_are_named(tree: Path) -> None:
    rc, _, err = bootstrap(tree, "setup", uid=1000, missing="nginx")
    assert rc == 1 and "missing Debian packages: nginx (run as root" in err


def test_run_leaves_a_taskctl_that_is_not_its_own_alone(tree: Path) -> None:
    (tree / "bin").mkdir()
    (tree / "bin" / "taskctl").write_text("#!/bin/sh\necho mine\n")
    rc, _, err = bootstrap(tree, "run", uid=0)
    assert rc == 0 and (tree / "bin" / "taskctl").read_text() == "#!/bin/sh\necho mine\n"
    assert f"is not ours, left alone; in another terminal: {tree}/.venv/bin/taskctl status" in err


def test_run_as_another_user_prints_the_command(tree: Path) -> None:
    rc, calls, err = bootstrap(tree, "run", uid=1000)
    assert rc == 0 and calls[-1] == "taskmasterd -c etc/taskmaster.yaml", err
    assert f"bootstrap: in another terminal: {tree}/.venv/bin/taskctl status" in err
    assert not (tree / "bin").exists()


def test_setup_and_test_put_nothing_on_path(tree: Path) -> None:
    assert bootstrap(tree, "setup", uid=0)[0] == 0
    assert bootstrap(tree, "test", uid=0)[0] == 0
    assert not (tree / "bin").exists()


def test_the_readmes_first_lines_show_how_to_reach_taskctl() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```sh\n")[1:3]]
    # the two commands first (run, test), then how to reach the running daemon
    assert [line.split("#")[0].strip() for line in blocks[0].splitlines()] == [
        "sh bootstrap run", "sh bootstrap test"]
    assert blocks[1].startswith("taskctl status")
    assert BINDIR in (ROOT / "bootstrap").read_text()  # where the README says
    assert "`/usr/local/bin/taskctl`" in readme.split("\n---\n", 1)[0]
