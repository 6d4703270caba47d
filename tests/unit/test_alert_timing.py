"""The alert dispatcher's timing, on the virtual clock (tests/virtual_clock.py):
the real retry delays (2 s, then 10 s), the summary at the end of the rate
interval, and the flush when the daemon exits. Exact times, whatever the
machine's load; no real waiting.

The dispatcher is the daemon's own (asyncio, its worker threads); only the
network is replaced: each target's sender is a recorder that answers as
told (it runs in the target's thread, where time stands still)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from taskmasterd.alerts import RETRY_DELAYS, AlertDispatcher, Message
from taskmasterd.config import AlertConfig
from taskmasterd.events import Event
from tests.virtual_clock import run


@dataclass
class Recorder:
    """Stands for a target's apprise sender: notes when (virtual time) and
    what it was asked to send; fails the first `failures` tries (-1: all)."""

    loop: asyncio.AbstractEventLoop
    failures: int = 0
    sent: list[tuple[float, Message]] = field(default_factory=list)

    def send(self, message: Message) -> tuple[bool, str]:
        self.sent.append((self.loop.time(), message))
        if self.failures < 0 or len(self.sent) <= self.failures:
            return False, "connection refused"
        return True, "delivered"

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.sent]


def dispatcher(rate: float, failures: int = 0) -> tuple[AlertDispatcher, Recorder]:
    """A dispatcher with one target (all events), its sender recorded."""
    loop = asyncio.get_running_loop()
    d = AlertDispatcher([AlertConfig(url="json://127.0.0.1:9/hook", rate=rate,
                                     events=frozenset({"FATAL", "EXITED_UNEXPECTED"}))], host="h")
    recorder = Recorder(loop, failures)
    d.targets[0].sender = recorder  # type: ignore[assignment]
    return d, recorder


def crash(program: str = "web") -> Event:
    return Event(kind="EXITED", message="exited", process=program, program=program,
                 old_state="RUNNING", new_state="EXITED", exit_status=1, expected=False)


def fatal(program: str = "web") -> Event:
    return Event(kind="FATAL", message="gave up", process=program, program=program,
                 new_state="FATAL")


@pytest.fixture
def log() -> Iterator[list[tuple[float, str]]]:
    """taskmasterd's log messages, with the virtual time they were logged at."""
    seen: list[tuple[float, str]] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                now = asyncio.get_running_loop().time()
            except RuntimeError:  # logged from a worker thread
                now = -1.0
            seen.append((now, record.getMessage()))

    logger = logging.getLogger("taskmasterd")
    handler = Handler(logging.DEBUG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_the_retry_delays_are_2_s_then_10_s_then_the_message_is_dropped(
        log: list[tuple[float, str]]) -> None:
    assert RETRY_DELAYS == (2.0, 10.0)

    async def main() -> list[float]:
        d, target = dispatcher(rate=0, failures=-1)
        d.on_event(fatal())
        assert await d.wait_idle(3600)
        await d.close()
        return target.times

    assert run(main()) == pytest.approx([0.0, 2.0, 12.0], abs=1e-9)
    failures = [(t, m) for t, m in log if "alert" in m and ("failed" in m or "dropped" in m)]
    assert [t for t, _ in failures] == pytest.approx([0.0, 2.0, 12.0], abs=1e-9)
    assert "try 1 of 3, next in 2 s" in failures[0][1]
    assert "try 2 of 3, next in 10 s" in failures[1][1]
    assert "not delivered after 3 tries, dropped" in failures[2][1]


def test_a_retry_that_gets_through_ends_the_retries() -> None:
    async def main() -> list[float]:
        d, target = dispatcher(rate=0, failures=1)
        d.on_event(fatal())
        assert await d.wait_idle(3600)
        await asyncio.sleep(60)  # sleep-ok: virtual clock: nothing more comes, however long one waits
        await d.close()
        return target.times

    assert run(main()) == pytest.approx([0.0, 2.0], abs=1e-9)


def test_a_crash_loop_gets_one_message_then_a_summary_when_the_rate_interval_ends() -> None:
    """rate 3: the first exit at once; the next ones, every 0.5 s, wait for
    t = 3.0 exactly and go as one summary that counts them."""
    async def main() -> list[tuple[float, Message]]:
        d, target = dispatcher(rate=3)
        for _ in range(6):  # exits at 0.0, 0.5, ... 2.5
            d.on_event(crash())
            await asyncio.sleep(0.5)  # sleep-ok: virtual clock: an exit every 0.5 s
        await asyncio.sleep(10)  # sleep-ok: virtual clock: past the rate interval
        await d.close()
        return target.sent

    [(t1, first), (t2, summary)] = run(main())
    assert (t1, t2) == pytest.approx((0.0, 3.0), abs=1e-9)
    assert first.title == "[h] web: EXITED (unexpected)"
    assert summary.title == "[h] web: 5 more events"


def test_exit_sends_the_held_back_summary_at_once() -> None:
    """rate 3600: the second event would wait an hour; at exit it goes now."""
    async def main() -> tuple[list[tuple[float, Message]], float]:
        loop = asyncio.get_running_loop()
        d, target = dispatcher(rate=3600)
        d.on_event(fatal())
        await asyncio.sleep(10)  # sleep-ok: virtual clock: 10 s pass at once
        d.on_event(fatal("db"))
        assert await d.wait_idle(60)
        assert len(target.sent) == 1  # held back by the rate
        await d.close()
        return target.sent, loop.time()

    sent, closed_at = run(main())
    assert [t for t, _ in sent] == pytest.approx([0.0, 10.0], abs=1e-9)
    assert closed_at == pytest.approx(10.0, abs=1e-9)  # close waited for nothing else
    assert "db" in sent[1][1].title


def test_exit_during_a_retry_wait_makes_one_last_try_at_once(
        log: list[tuple[float, str]]) -> None:
    async def main() -> list[float]:
        d, target = dispatcher(rate=0, failures=-1)
        d.on_event(fatal())
        await asyncio.sleep(1)  # sleep-ok: virtual clock; the first try failed at 0, the next is due at 2
        await d.close()
        return target.times

    assert run(main()) == pytest.approx([0.0, 1.0], abs=1e-9)
    assert any("not delivered after 2 tries, dropped" in m for _, m in log)
