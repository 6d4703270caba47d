"""systemd's start rate limit (StartLimitBurst/StartLimitIntervalSec) over a
process's automatic restarts, and how a hit is told. Pure: times come in as
`now` (monotonic seconds)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


def format_span(seconds: float) -> str:
    """Seconds for a sentence: two decimals under 10 s (0.04), one above (12.5)."""
    return f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"


@dataclass(frozen=True)
class StartLimitHit:
    """Why a process gave up on the start limit: `restarts` automatic restarts
    had been made within the window, the first `span` seconds before the one
    that was refused."""

    restarts: int
    span: float

    def __str__(self) -> str:
        return f"start limit hit ({self.restarts} restarts in {format_span(self.span)} s)"


@dataclass
class StartLimit:
    """systemd's start rate limit over one process's automatic restarts.

    `admit(now, burst, interval)` says whether one more restart may happen
    now and records it if so: at most `burst` restarts within any
    `interval` seconds. Only the times of the last `burst` admitted restarts
    are kept, so memory is bounded whatever the crash rate. `burst` and
    `interval` are arguments, not state, so that a reload changes them in
    place; either at 0 disables the limit (as in systemd).
    """

    times: deque[float] = field(default_factory=deque)

    def admit(self, now: float, burst: int, interval: float) -> bool:
        if burst <= 0 or interval <= 0:
            self.times.clear()
            return True
        while self.times and (now - self.times[0] >= interval or len(self.times) > burst):
            self.times.popleft()  # out of the window, or beyond a burst lowered by a reload
        if len(self.times) >= burst:
            return False
        self.times.append(now)
        return True

    def hit(self, now: float) -> StartLimitHit:
        """What was in the window when `admit` refused at `now`."""
        return StartLimitHit(len(self.times), now - self.times[0] if self.times else 0.0)

    def reset(self) -> None:
        self.times.clear()
