"""Processes in words: the sentence of each transition (the lifecycle log's,
the journal's MESSAGE) and the one-line description of a process (`status`,
the D-Bus `description`). Pure: the wall-clock uptime is passed in."""

from __future__ import annotations

from taskmasterd.config import ProgramConfig
from taskmasterd.lifecycle import Changed, describe_exit
from taskmasterd.process import Process
from taskmasterd.reload import ReloadPlan, in_place_fields
from taskmasterd.settingsdiff import SettingChange
from taskmasterd.states import State


def description(p: Process, uptime: float) -> str:
    """`uptime`: seconds since the process was spawned (used while it has a pid)."""
    if p.state in (State.RUNNING, State.STARTING, State.STOPPING) and p.pid:
        up = int(uptime)
        text = f"pid {p.pid}, uptime {up // 3600}:{up // 60 % 60:02d}:{up % 60:02d}"
        if p.state is State.STARTING and p.config.ready is not None:
            text += f", waiting for ready ({p.config.ready.describe()})"
        elif p.state is State.STOPPING and p.failure:
            text += f", {p.failure}"
        if p.status_text:
            text += f"; {p.status_text}"
        return text
    if p.state is State.FATAL and p.start_limit_hit is not None:
        return f"{p.start_limit_hit}; last: {last_outcome(p)}"
    if p.spawn_error is not None:
        return f"spawn error: {p.spawn_error}"
    if p.state in (State.EXITED, State.STOPPED, State.BACKOFF) and (
            p.exit_status is not None or p.exit_unknown):
        return describe_exit(p.exit_status)
    if p.state is State.FATAL:
        if p.failure:
            return f"{p.failure}, gave up"
        return f"exited too quickly ({last_outcome(p)}), gave up"
    return "not started"


def adopted_message(ch: Changed, age: float, starttime: float) -> str:
    up = int(age)
    state = "RUNNING" if ch.new is State.RUNNING else \
        f"STARTING, RUNNING in {max(0.0, starttime - age):.1f}s (what is left of starttime {starttime:g}s)"
    return (f"re-adopted pid {ch.pid} (started by a previous taskmasterd, up "
            f"{up // 3600}:{up // 60 % 60:02d}:{up % 60:02d}): {state}; no second copy started")


def transition_message(p: Process, ch: Changed) -> str:
    cfg = p.config
    new = ch.new
    if new is State.STARTING:
        return f"spawned with pid {ch.pid}" if ch.pid else "spawning"
    if new is State.RUNNING:
        if cfg.ready is not None:
            return (f"entered RUNNING state, ready ({cfg.ready.describe()}) and up for "
                    f">= {cfg.starttime:g}s (starttime)")
        return f"entered RUNNING state, process has stayed up for > {cfg.starttime:g}s (starttime)"
    if new is State.STOPPING:
        if ch.reason:  # stopped by the daemon: not ready, watchdog, unhealthy
            sig = "SIGABRT" if ch.reason.startswith("watchdog") else \
                f"SIG{cfg.stopsignal.name.removeprefix('SIG')}"
            return f"stopping, {ch.reason}: sent {sig} to process group {ch.pid}"
        return f"stopping: sent SIG{cfg.stopsignal.name.removeprefix('SIG')} to process group {ch.pid}"
    if new is State.STOPPED:
        if ch.exit_status is None and not ch.status_unknown:
            return "stopped (no process was running)"
        return f"stopped ({describe_exit(ch.exit_status)})"
    if new is State.EXITED:
        if ch.reason:
            return f"exited ({describe_exit(ch.exit_status)}) after being stopped, {ch.reason}"
        return (f"exited ({describe_exit(ch.exit_status)}; "
                f"{'expected' if ch.expected else 'not expected'})")
    if new is State.BACKOFF:
        status = describe_exit(None) if ch.status_unknown else describe_exit(ch.exit_status or 0)
        why = f"could not spawn: {ch.spawn_error}" if ch.spawn_error else \
            f"{p.failure} (then {status})" if ch.old is State.STOPPING and p.failure else \
            f"exited too quickly ({status})"
        if ch.retry_in is None:
            return f"{why}; no retries left"
        return f"{why}; retry {p.retries} of {cfg.startretries} in {ch.retry_in:g}s"
    if new is State.FATAL:
        last = last_outcome(p)
        if p.failure:  # stopped by the daemon (not ready in time): why, then how it ended
            last = f"{p.failure} ({last})"
        if ch.start_limit_hit is not None:
            return (f"gave up: entered FATAL state, {ch.start_limit_hit} (limit: startlimit_burst "
                    f"{cfg.startlimit_burst} per startlimit_interval {cfg.startlimit_interval:g}s); "
                    f"last: {last}")
        return f"gave up: entered FATAL state, too many start retries too quickly; last: {last}"
    if new is State.UNKNOWN and ch.status_unknown:
        return f"entered UNKNOWN state from {ch.old.value} ({describe_exit(None)})"
    return f"entered {new.value} state from {ch.old.value}"


def last_outcome(p: Process) -> str:
    """How the last attempt ended: its spawn error or its exit status."""
    if p.spawn_error is not None:
        return f"spawn error: {p.spawn_error}"
    if p.exit_status is not None or p.exit_unknown:
        return describe_exit(p.exit_status)
    return "no exit status"


def reload_message(plan: ReloadPlan, old: dict[str, ProgramConfig],
                   settings: tuple[SettingChange, ...] = ()) -> str:
    """The RELOAD event's sentence: what was added, restarted, resized...,
    then the settings changed outside the programs."""
    parts = []
    for label, names in (("added", [p.name for p in plan.added]),
                         ("restarted", [p.name for p in plan.restarted]),
                         ("resized", [f"{r.program.name} {r.old_numprocs}->{r.program.numprocs}"
                                      for r in plan.resized]),
                         ("updated in place", [f"{p.name} ({', '.join(in_place_fields(old[p.name], p))})"
                                               for p in plan.updated]),
                         ("removed", list(plan.removed))):
        if names:
            parts.append(f"{label}: {', '.join(names)}")
    if settings:
        parts.append("settings: " + ", ".join(c.describe() for c in settings))
    return "reloaded; " + ("; ".join(parts) or "nothing changed")
