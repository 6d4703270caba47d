"""asyncio orchestration: owns the processes, carries out their actions.

Each process is a pure state machine (process.py) plus, here, its runtime
handles: the child (pid + pidfd watched with loop.add_reader) and at most one
timer (loop.call_at on the machine's `deadline`). Nothing polls: an idle
daemon has no timers and sleeps in epoll.

Public methods (start/stop/restart/signal/reload/processes/shutdown) are what
the D-Bus adapters and the daemon's signal handlers call; `snapshot()` is
what the state store records and `adopt()` takes back what a previous
daemon left running (taskmasterd/statestore). Concerns of their own are
mixins: takeover, ordering, checking, overlap, reloading (`reload`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal as signals
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from taskmasterd import deps, spawn, targets
from taskmasterd.busaddr import runtime_dir
from taskmasterd.checking import Checking
from taskmasterd.config import Config, OutputKind, ProgramConfig
from taskmasterd.deadline import follow as follow_deadline
from taskmasterd.describe import description, transition_message
from taskmasterd.errors import AlreadyStarted, BadName, NoSuchProgram, NotAFile, NotRunning, ShuttingDown
from taskmasterd.events import Event, EventBus, Kind
from taskmasterd.lifecycle import Action, Changed, Kill, Spawn, SpawnError
from taskmasterd.logpipes import LogPipes
from taskmasterd.ordering import DOWN, STARTABLE, Ordering
from taskmasterd.overlap import OverlapBook, Overlaps, Successor
from taskmasterd.probing import DAEMON_ONLY_ENV, Probing, Sink
from taskmasterd.process import Process
from taskmasterd.reloading import Reloading
from taskmasterd.states import State
from taskmasterd.takeover import Request, Slot, Takeover

log = logging.getLogger("taskmasterd")

@dataclass(frozen=True)
class ProcessInfo:
    name: str
    program: str
    state: State
    pid: int
    exit_status: int
    started_at: float  # wall clock seconds, 0 if never started
    description: str
    spawn_error: str
    restarts: int  # automatic restarts since the last administrative start
    last_exit_status: int  # returncode convention (< 0: signal); 0 if it never exited
    last_exit_at: float  # wall clock seconds, 0 if it never exited
    last_exit_expected: bool  # False if it never exited
    # Readiness and health (issue 15; docs/readiness.md): "" when not configured
    ready_check: str = ""  # "notify", "tcp 127.0.0.1:80" ...
    status_text: str = ""  # its last STATUS= (notify)
    health: str = ""  # "unknown" (not checked yet), "healthy", "unhealthy"
    health_detail: str = ""  # the last check's detail
    health_failures: int = 0  # failed checks in a row


@dataclass
class Supervisor(Overlaps, Takeover, Ordering, Checking, Reloading):
    config: Config
    bus: EventBus
    logdir: str
    journal: bool = False  # AUTO output goes to the journal
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    slots: dict[str, Slot] = field(default_factory=dict)  # config order
    _retired: list[Slot] = field(default_factory=list)
    _alive: set[Slot] = field(default_factory=set)  # slots with a child: O(1) "all down?"
    _shutting_down: bool = False
    _all_down: asyncio.Event = field(default_factory=asyncio.Event)
    # Where the processes' notify sockets go (ready: notify); "": under the
    # runtime directory, keyed by logdir.
    notify_dir: str = ""
    # Called with a program's name when what its processes show changed
    # without a transition (STATUS=, a health result): D-Bus PropertiesChanged.
    detail_listeners: list[Callable[[str], None]] = field(default_factory=list)
    # Start ordering (after:, taskmasterd.deps), without a state of its own:
    # starts held until the programs of `after` are RUNNING (slot -> its
    # description, "waiting for db (STOPPED)"), and stops deferred until the
    # dependents stopped in the same request are down (slot -> those slots,
    # the request to make then). Both are looked at again (_settle) after
    # each turn of actions that changed a state.
    _held: dict[Slot, str] = field(default_factory=dict)
    _deferred: dict[Slot, tuple[set[Slot], Request]] = field(default_factory=dict)
    _depth: int = 0  # nesting of _apply: settle once the outermost is done
    _dirty: bool = False  # a state changed since the last settle
    _settling: bool = False  # settling, or a batch of requests is being made
    overlaps: OverlapBook = field(default_factory=OverlapBook)  # restart: overlap (overlap.py)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.logpipes = LogPipes()  # the log writer starts with the first bounded output
        self._child_env = {k: v for k, v in self.base_env.items() if k not in DAEMON_ONLY_ENV}
        self.probing = Probing(
            Sink(ready=lambda n, d: self._probed(n, Process.on_ready, d),
                 ping=lambda n: self._probed(n, lambda p, now: p.on_ping(now)),
                 unhealthy=self._unhealthy, status=self._status_text, details=self._details),
            self.notify_dir or Probing.notify_dir(runtime_dir(), os.path.abspath(self.logdir)))
        for program in self.config.programs:
            self._add_slots(program, range(program.numprocs))

    # ---- public API ------------------------------------------------------

    def launch_autostart(self, skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
        """Start the autostart processes, but those taken back (and `skip`)."""
        names = [n for p in self.config.programs if p.autostart for n in p.process_names()
                 if self.slots[n].process.state is State.STOPPED and n not in skip]
        self._batch([(self.slots[n], Process.start) for n in names])
        return names

    def start(self, target: str) -> list[str]:
        if self._shutting_down:
            raise ShuttingDown("taskmasterd is shutting down")
        return self._each(target, Process.start)

    def stop(self, target: str) -> list[str]:
        return self._each(target, Process.stop)

    def restart(self, target: str) -> list[str]:
        if self._shutting_down:
            raise ShuttingDown("taskmasterd is shutting down")
        return self._each(target, Process.restart)

    def signal(self, target: str, sig: signals.Signals) -> list[str]:
        names = targets.resolve(target, self.config.programs)
        hit = []
        for name in names:
            slot = self.slots[name]
            if slot.child is None:
                continue
            spawn.kill_group(slot.child, sig)
            hit.append(name)
            self._publish_process(slot, Kind.SIGNALLED, f"sent {sig.name} on request",
                                  pid=slot.child.pid)
        if not hit:
            raise NotRunning(f"{target}: no running process to signal")
        return hit

    def processes(self) -> list[ProcessInfo]:
        return [self._info(slot) for slot in self.slots.values()]

    def process(self, name: str) -> ProcessInfo:
        return self._info(self.slots[name])

    def program_processes(self, program: str) -> list[ProcessInfo]:
        """The processes of `program`: those of its config, or, for a program
        a reload removed, those still going down."""
        config = self.config.program(program)
        if config is not None:
            return [self._info(self.slots[n]) for n in config.process_names()]
        leaving = [self._info(s) for s in self._retired if s.process.program == program]
        if not leaving:
            raise NoSuchProgram(f"{program} was removed by a reload")
        return leaving

    def leaving(self, program: str) -> bool:
        """Whether `program` (removed by a reload) still has a process alive."""
        return any(s.child is not None and s.process.program == program for s in self._retired)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def shutdown(self) -> None:
        """Stop every process (stoptime, then SIGKILL) and wait for them; then
        let the log writer drain their last output and wait for it too."""
        self._shutting_down = True
        self._held.clear()  # nothing starts any more
        # Dependents first; a refusal is a process already down.
        self._batch([(slot, Process.stop) for slot in [*self.slots.values(), *self._retired]])
        self._check_all_down()
        await self._all_down.wait()
        self.probing.close()
        await self.logpipes.finish()

    def output_file(self, name: str, stream: str) -> str:
        """The file a process's stdout/stderr goes to (for OpenLog)."""
        if stream not in ("stdout", "stderr"):
            raise BadName(f"stream must be stdout or stderr, not {stream!r}")
        slot = self.slots.get(name)
        if slot is None:
            raise NoSuchProgram(f"no such process: {name!r}")
        p = slot.process
        if p.config.console and stream == "stderr":
            raise NotAFile(f"the stderr of {name} is its terminal (console: true): what it writes "
                           "there is in its stdout")
        spec = spawn.launch_spec(p.config, p.index, logdir=self.logdir, journal=self.journal,
                                 base_env={})
        path = spawn.output_path(spec, stream)  # a redirected stderr's is stdout's
        if path is None:
            source = spawn.source_stream(spec, stream)
            out = spec.stdout if source == "stdout" else spec.stderr
            if out.kind is OutputKind.NULL:
                how = f"{source}: null" + (", redirect_stderr: true" if source != stream else "")
                raise NotAFile(f"the {stream} of {name} is discarded ({how} in the "
                               "configuration): there is nothing to read")
            raise NotAFile(f"the {stream} of {name} goes to the journal; use "
                           f"journalctl -f -t {p.program}")
        return path

    def longest_stop(self) -> float:
        """How long stopping the processes alive now can take (0 if none):
        the longest stoptime, summed along a chain of `after` (dependents
        stop first, taskmasterd.deps)."""
        stoptimes: dict[str, float] = {}
        for s in self._alive:
            stoptimes[s.process.program] = max(stoptimes.get(s.process.program, 0.0),
                                               s.process.config.stoptime)
        return deps.longest_stop(self._graph(), stoptimes)

    def live_slots(self) -> list[Slot]:
        return list(self._alive)

    def live_children(self) -> int:
        return len(self._alive) + self.overlap_children()

    def counts(self) -> dict[State, int]:
        out: dict[State, int] = {}
        for slot in self.slots.values():
            out[slot.process.state] = out.get(slot.process.state, 0) + 1
        return out

    # ---- requests --------------------------------------------------------

    def _each(self, target: str, request: Request) -> list[str]:
        names = targets.resolve(target, self.config.programs)
        results = self._batch([(self.slots[n], request) for n in names])
        done = [n for n, r in zip(names, results, strict=True) if r is None]
        refusals = [r for r in results if r is not None]
        if not done and refusals:
            # Nothing could be done: say why (the first reason is typical).
            cls = AlreadyStarted if refusals[0].code == "AlreadyStarted" else NotRunning
            raise cls(str(refusals[0]))
        return done

    def _request(self, slot: Slot, request: Request) -> None:
        if self._overlap_request(slot, request):
            return
        self._apply(slot, request(slot.process, self._loop.time()))

    # ---- carrying out actions --------------------------------------------

    def _apply(self, slot: Slot, actions: list[Action]) -> None:
        if isinstance(slot, Successor):  # an overlap restart's new process (overlap.py)
            self._successor_apply(slot, actions)
            return
        self._depth += 1
        try:
            for action in actions:
                if isinstance(action, Changed):
                    self._publish_change(slot, action)
                elif isinstance(action, Spawn):
                    self._apply(slot, self._spawn(slot))
                elif isinstance(action, Kill):
                    self._kill(slot, action)
            self._sync_timer(slot)
            if slot.child is None:
                self._check_all_down()
        finally:
            self._depth -= 1
        if self._depth == 0 and self._dirty:
            self._settle()  # what this turn's transitions release (start ordering)

    def _launch(self, slot: Slot, key: str) -> None:
        """Spawn the command of `slot`'s process, with its notify socket
        (ready: notify) under `key` (its name; an overlap successor's own
        key, which also names its output pipes), and follow the child: its
        pidfd, outputs and probes. SpawnFailed (the socket closed again) if
        it cannot be started."""
        proc = slot.process
        spec = spawn.launch_spec(proc.config, proc.index, logdir=self.logdir,
                                 journal=self.journal, base_env=self._child_env)
        try:
            try:
                extra = self.probing.spawn_env(key, proc.config)
            except OSError as err:
                raise spawn.SpawnFailed(SpawnError(
                    errno.errorcode.get(err.errno or 0, "EINVAL"),
                    f"bind notify socket in {self.probing.directory}",
                    err.strerror or str(err))) from None
            child = spawn.spawn(dataclasses.replace(spec, env={**spec.env, **extra}))
        except spawn.SpawnFailed:
            self.probing.gone(key)
            raise
        slot.child = child
        slot.fingerprint = self._fingerprint(proc.config)
        slot.pipes = [self.logpipes.follow(p.fd, p.path, p.maxbytes, p.backups, process=key,
                                           stream=p.stream, scrollback=p.scrollback)
                      for p in child.pipes]
        slot.started_wall = time.time()
        self._all_down.clear()
        self._loop.add_reader(child.pidfd, self._on_pidfd, slot)
        self.probing.spawned(key, proc.config, child.pid)

    def _spawn(self, slot: Slot) -> list[Action]:
        proc = slot.process
        now = self._loop.time()
        try:
            self._launch(slot, proc.name)
        except spawn.SpawnFailed as exc:
            # Log order: STARTING, then why it failed, then BACKOFF/FATAL.
            starting, *rest = proc.on_spawn_failed(exc.error, now)
            self._apply(slot, [starting])
            self._publish_process(slot, Kind.SPAWN_ERROR, f"spawn error: {exc.error}",
                                  spawn_error=exc.error)
            return rest
        self._alive.add(slot)
        assert slot.child is not None
        return proc.on_spawned(slot.child.pid, now)

    def _kill(self, slot: Slot, action: Kill) -> None:
        if slot.child is None:
            return
        spawn.kill_group(slot.child, action.sig)
        if action.sig is signals.SIGKILL:
            self._publish_process(slot, Kind.KILLED,
                                  f"{action.reason}: sent SIGKILL to process group {slot.child.pid}",
                                  pid=slot.child.pid)

    def _on_pidfd(self, slot: Slot) -> None:
        child = slot.child
        assert child is not None
        if child.adopted:  # readable: it exited; how cannot be known (not our child)
            self._loop.remove_reader(child.pidfd)
            spawn.reap_adopted(child)
            slot.child = None
            self._exited(slot, None)
            return
        status: int | None
        try:
            status = spawn.collect(child)
        except OSError as exc:
            # Cannot happen unless something else reaped our child; never
            # leave a readable fd registered (it would spin the loop).
            log.error("%s: cannot collect the exit of pid %d: %s", slot.process.name, child.pid, exc)
            status = -signals.SIGKILL
            os.close(child.pidfd)
        if status is None:
            return
        self._loop.remove_reader(child.pidfd)
        slot.child = None  # reaped: nothing may signal its pid any more
        pipes, slot.pipes = slot.pipes, []
        self.logpipes.when_drained(pipes, lambda: self._exited(slot, status))

    def _exited(self, slot: Slot, status: int | None) -> None:
        """The exit, published once the output is in its files (at once for
        unbounded outputs: the child wrote them itself)."""
        if self._overlap_exited(slot, status):
            return
        self._alive.discard(slot)
        self.probing.gone(slot.process.name)
        slot.exited_wall = time.time()
        self._apply(slot, slot.process.on_exit(status, self._loop.time()))
        if slot.retiring and slot.child is None:
            self._retired.remove(slot)
            self._check_all_down()

    def _sync_timer(self, slot: Slot) -> None:
        follow_deadline(self._loop, slot, slot.process.deadline,
                        lambda now: self._apply(slot, slot.process.on_timer(now)))

    def _check_all_down(self) -> None:
        if self._shutting_down and self.live_children() == 0:
            self._all_down.set()

    # ---- slots (a reload's changes: reloading.py) ------------------------

    def _add_slots(self, program: ProgramConfig, indexes: range) -> None:
        names = program.process_names()
        for i in indexes:
            self.slots[names[i]] = Slot(Process(name=names[i], config=program, index=i))

    # ---- events ----------------------------------------------------------

    def _info(self, slot: Slot) -> ProcessInfo:
        p = slot.process
        err = str(p.spawn_error) if p.spawn_error else ""
        last = p.last_exit
        return ProcessInfo(
            name=p.name, program=p.program, state=p.state, pid=p.pid,
            exit_status=p.exit_status or 0,
            started_at=slot.started_wall if p.pid else 0.0,
            description=self._describe(slot) + self._overlap_text(slot),
            spawn_error=err,
            restarts=p.restarts,
            last_exit_status=(last.status or 0) if last is not None else 0,
            last_exit_at=slot.exited_wall if last is not None else 0.0,
            last_exit_expected=last.expected if last is not None else False,
            **self._checks(p))

    def _describe(self, slot: Slot) -> str:
        p = slot.process
        held = self._held.get(slot)
        if held is not None and p.state in STARTABLE:
            return held  # "waiting for db (STOPPED)": why it is not starting
        text = description(p, time.time() - slot.started_wall) + self._health_text(p)
        deferred = self._deferred.get(slot)
        if deferred is not None:  # why it is not stopping yet
            text += f"; stop waits for {', '.join(sorted(s.process.name for s in deferred[0]))}"
        return text

    def _publish_process(self, slot: Slot, kind: Kind, message: str, *, pid: int = 0,
                         spawn_error: SpawnError | None = None) -> None:
        p = slot.process
        self.bus.publish(Event(kind=kind, message=message, process=p.name, program=p.program,
                               pid=pid, spawn_error=spawn_error))

    def _publish_change(self, slot: Slot, ch: Changed) -> None:
        p = slot.process
        self.probing.changed(p.name, p.config, ch.old, ch.new)
        self._dirty = True
        if ch.new in DOWN:
            for waited, _ in self._deferred.values():
                waited.discard(slot)
        self.bus.publish(Event(
            kind=ch.new, message=transition_message(p, ch), process=p.name,
            program=p.program, old_state=ch.old, new_state=ch.new, pid=ch.pid,
            exit_status=ch.exit_status, expected=ch.expected, exit_unknown=ch.status_unknown))
