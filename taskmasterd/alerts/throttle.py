"""One target's rate limit and coalescing (pure: the clock is an argument,
as in process.py).

The first matching event is sent at once; the ones that follow within
`rate` seconds of the last send, or while that send is still under way, are
gathered in one `Batch` and sent as a summary when the interval has passed.
A crash loop therefore costs one message per `rate` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskmasterd.alerts.match import display_name
from taskmasterd.events import Event


@dataclass
class Batch:
    """The events one message is about: one event, or a summary of several."""

    first: Event
    last: Event
    count: int = 1
    summary: bool = False  # gathered while the target was rate-limited
    kinds: dict[str, int] = field(default_factory=dict)  # display name -> count, first seen first
    programs: list[str] = field(default_factory=list)  # distinct, first seen first
    processes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, event: Event, *, summary: bool = False) -> Batch:
        batch = cls(first=event, last=event, count=0, summary=summary)
        batch.add(event)
        return batch

    def add(self, event: Event) -> None:
        if self.count:
            self.last = event
        self.count += 1
        name = display_name(event)
        self.kinds[name] = self.kinds.get(name, 0) + 1
        if event.program and event.program not in self.programs:
            self.programs.append(event.program)
        if event.process not in self.processes:
            self.processes.append(event.process)


class Throttle:
    """One target's rate limit. Pure: `now` is an argument (monotonic seconds).

    `offer(event, now)` returns the Batch to send now, or None when the event
    was buffered. A buffered Batch goes out from `due(now)` once `rate`
    seconds have passed since the last send and that send is `done`; the
    caller arms one timer on `deadline` (None: nothing to wake up for).
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.last_sent: float | None = None
        self.pending: Batch | None = None
        self.busy = False  # a message is being delivered (retries included)

    def offer(self, event: Event, now: float) -> Batch | None:
        if self.pending is None and not self.busy and self._free(now):
            return self._send(Batch.of(event), now)
        if self.pending is None:
            self.pending = Batch.of(event, summary=True)
        else:
            self.pending.add(event)
        return None

    def due(self, now: float) -> Batch | None:
        """The summary to send now, if its time has come (a summary of one
        event is that event)."""
        if self.pending is None or self.busy or not self._free(now):
            return None
        return self._send(self._take(), now)

    def done(self) -> None:
        """The message sent last is delivered or given up."""
        self.busy = False

    def drain(self) -> Batch | None:
        """What is pending, rate or not (the daemon is exiting)."""
        return self._take() if self.pending is not None else None

    @property
    def deadline(self) -> float | None:
        if self.pending is None or self.busy:
            return None
        return self.last_sent + self.rate if self.last_sent is not None else 0.0

    def _free(self, now: float) -> bool:
        return self.last_sent is None or now >= self.last_sent + self.rate

    def _take(self) -> Batch:
        batch, self.pending = self.pending, None
        assert batch is not None
        batch.summary = batch.count > 1
        return batch

    def _send(self, batch: Batch, now: float) -> Batch:
        self.last_sent = now
        self.busy = True
        return batch
