"""One loop timer that follows a deadline — the only timer pattern the daemon
uses (process life cycles, alert rate limits), so that an idle daemon has no
timer at all and every wake-up is one that something asked for.

The owner keeps two attributes, `timer` (the asyncio handle) and `timer_at`
(the deadline it is armed for); `follow` re-arms only when the deadline
changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class TimerOwner(Protocol):
    timer: asyncio.TimerHandle | None
    timer_at: float | None


def follow(loop: asyncio.AbstractEventLoop, owner: TimerOwner, deadline: float | None,
           fire: Callable[[float], None]) -> None:
    """Arm `owner`'s timer for `deadline` (None: disarm); at expiry call
    `fire(now)` with `now >= deadline`."""
    if deadline == owner.timer_at:
        return
    cancel(owner)
    owner.timer_at = deadline
    if deadline is not None:
        owner.timer = loop.call_at(deadline, _expire, loop, owner, fire)


def cancel(owner: TimerOwner) -> None:
    if owner.timer is not None:
        owner.timer.cancel()
    owner.timer = owner.timer_at = None


def _expire(loop: asyncio.AbstractEventLoop, owner: TimerOwner, fire: Callable[[float], None]) -> None:
    deadline = owner.timer_at
    owner.timer = owner.timer_at = None
    if deadline is None:
        return
    # call_at may fire a hair early: whoever set the deadline must see it met.
    fire(max(loop.time(), deadline))
