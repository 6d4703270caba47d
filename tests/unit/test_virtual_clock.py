"""The test-side virtual clock (tests/virtual_clock.py) does what the timing
tests rely on: idle waits take no real time and land exactly on the timer,
timers keep their order, threads and ready I/O are not overtaken."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from tests.virtual_clock import VirtualClockLoop, run


def test_a_long_sleep_is_instant_and_exact() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop) and loop.time() == 0.0
        await asyncio.sleep(3600)  # sleep-ok: the virtual clock under test
        return loop.time()

    started = time.monotonic()
    assert run(main()) == pytest.approx(3600.0, abs=1e-9)
    assert time.monotonic() - started < 30  # an hour of virtual time, not of real time


def test_timers_fire_in_order_at_their_times() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        for name, delay in (("c", 10.0), ("a", 2.0), ("b", 2.5)):
            loop.call_later(delay, lambda n=name: fired.append((n, loop.time())))
        await asyncio.sleep(11)  # sleep-ok: the virtual clock under test
        return fired

    fired = run(main())
    assert [n for n, _ in fired] == ["a", "b", "c"]
    assert [t for _, t in fired] == pytest.approx([2.0, 2.5, 10.0], abs=1e-9)


def test_wait_for_times_out_on_the_virtual_clock() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), timeout=5)
        return loop.time()

    assert run(main()) == pytest.approx(5.0, abs=1e-9)


def test_time_stands_still_while_a_thread_works() -> None:
    """A thread's 50 real ms are not overtaken by a timer 1 virtual s ahead."""
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        def work() -> str:
            time.sleep(0.05)  # sleep-ok: real work in a thread; virtual time must stand still
            return "done"

        result = await asyncio.wait_for(asyncio.to_thread(work), timeout=1)
        return result, loop.time()

    result, now = run(main())
    assert result == "done" and now == 0.0


def test_ready_io_comes_before_a_jump() -> None:
    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.send(b"x")
        try:
            got = await asyncio.wait_for(loop.sock_recv(a, 1), timeout=10)
            return got, loop.time()
        finally:
            a.close()
            b.close()

    assert run(main()) == (b"x", 0.0)


def test_without_timers_it_waits_for_real_io() -> None:
    """No timer to jump to: the loop blocks on real I/O, as any loop."""
    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        writer = threading.Timer(0.05, b.send, (b"late",))  # sleep-ok: the I/O arrives later
        writer.start()
        try:
            return await loop.sock_recv(a, 4), loop.time()
        finally:
            writer.join()
            a.close()
            b.close()

    assert run(main()) == (b"late", 0.0)


def test_the_clock_never_goes_back() -> None:
    loop = VirtualClockLoop()
    try:
        loop.advance(1.5)
        assert loop.time() == 1.5
        with pytest.raises(ValueError):
            loop.advance(-1)
    finally:
        loop.close()
