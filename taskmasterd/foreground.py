"""`taskmasterd --shell`: the 42 subject's mode — the daemon and taskctl's
interactive shell on one terminal.

The shell owns the main thread, because readline and Ctrl-C (cancel the
line) need it; the daemon's event loop runs in a second thread. TERM and HUP
arrive in the main thread and are forwarded to the loop. `shutdown`, `exit`
or Ctrl-D in the shell stop every program and then the daemon; if the daemon
stops first (D-Bus Shutdown, SIGTERM), the shell is ended. D-Bus clients can
connect all along.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from types import FrameType

from taskmasterd.busaddr import BusChoice
from taskmasterd.config import Config
from taskmasterd.daemon import Daemon, serve


@dataclass
class _Running:
    daemon: Daemon
    loop: asyncio.AbstractEventLoop
    where: BusChoice


class _DaemonThread(threading.Thread):
    def __init__(self, config: Config, choice: BusChoice) -> None:
        super().__init__(name="taskmasterd", daemon=True)
        self.config, self.choice = config, choice
        self.ready = threading.Event()
        self.running: _Running | None = None
        self.exit_code = 1
        self.shell_done = False
        self.finished = False
        self.stop_requested = False  # a TERM that came before the daemon was up

    def run(self) -> None:
        try:
            self.exit_code = asyncio.run(serve(self.config, self.choice, shell=True,
                                               started=self._on_started))
        except BaseException:
            # A bug: say it before the main thread is told to end the process.
            traceback.print_exc()
            self.exit_code = 1
        finally:
            self.finished = True
            self.ready.set()
            if not self.shell_done:  # the daemon stopped first: end the shell too
                os.kill(os.getpid(), signal.SIGTERM)

    def _on_started(self, daemon: Daemon, loop: asyncio.AbstractEventLoop, where: BusChoice) -> None:
        self.running = _Running(daemon, loop, where)
        if self.stop_requested:
            daemon.request_shutdown()
        self.ready.set()

    def forward(self, action: str) -> None:
        r = self.running
        if r is None:
            self.stop_requested = self.stop_requested or action == "stop"
            return
        if self.finished:
            return
        fn = {"stop": r.daemon.request_shutdown, "reopen": r.daemon.reopen_logs}.get(
            action, r.daemon.reload_quietly)
        try:
            r.loop.call_soon_threadsafe(fn)
        except RuntimeError:
            pass  # the loop just closed: the daemon is already on its way out


def run_with_shell(config: Config, choice: BusChoice) -> int:
    thread = _DaemonThread(config, choice)

    def on_term(signum: int, frame: FrameType | None) -> None:
        if thread.finished:
            raise SystemExit(thread.exit_code)  # interrupts the shell's input()
        thread.forward("stop")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, lambda signum, frame: thread.forward("reload"))
    signal.signal(signal.SIGUSR2, lambda signum, frame: thread.forward("reopen"))
    thread.start()
    thread.ready.wait()
    if thread.running is None:  # it could not start; it said why on stderr
        thread.shell_done = True
        thread.join()
        return thread.exit_code
    from taskctl.client import Client
    from taskctl.shell import run_shell

    print(f"taskmasterd: {len(config.programs)} programs from {config.path}; "
          "type help, or exit to stop them all", file=sys.stderr)
    try:
        run_shell(Client(thread.running.where))
    except SystemExit:
        pass  # the daemon stopped on its own
    finally:
        thread.shell_done = True
        thread.forward("stop")
        thread.join()
    return thread.exit_code
