"""taskmasterd/tasks/spawner.py: the starts asked for in one loop turn go to
the spawner threads together, shared among them, and each answer comes back
on the loop, in order per thread, errors included."""

from __future__ import annotations

import asyncio
import threading

import pytest

from taskmasterd.tasks.spawner import Spawner


def test_one_turn_of_starts_is_shared_among_the_threads_and_answered_on_the_loop() -> None:
    threads: list[str] = []
    answers: list[tuple[int | BaseException, bool]] = []

    def start(n: int) -> int:
        threads.append(threading.current_thread().name)
        if n == 3:
            raise OSError(2, "No such file or directory")
        return 1000 + n

    async def main() -> None:
        loop_thread = threading.current_thread()
        spawner = Spawner(2)
        done = asyncio.Event()

        def answer(result: int | BaseException) -> None:
            answers.append((result, threading.current_thread() is loop_thread))
            if len(answers) == 6:
                done.set()
        try:
            for n in range(6):  # one loop turn
                spawner.submit(lambda n=n: start(n), answer)
            assert threads == []  # nothing before the turn ends
            await asyncio.wait_for(done.wait(), 10)
        finally:
            spawner.close()

    asyncio.run(main())
    # (two shares; an idle thread may take both: the pool decides)
    assert len(threads) == 6 and all(name.startswith("spawn_") for name in threads)
    assert all(on_loop for _r, on_loop in answers)
    pids = sorted(r for r, _ in answers if isinstance(r, int))
    assert pids == [1000, 1001, 1002, 1004, 1005]
    (error,) = [r for r, _ in answers if isinstance(r, BaseException)]
    assert isinstance(error, OSError) and error.errno == 2


def test_a_lone_start_is_not_held_back() -> None:
    async def main() -> int:
        spawner = Spawner(2)
        got: asyncio.Future[int | BaseException] = asyncio.get_running_loop().create_future()
        try:
            spawner.submit(lambda: 42, got.set_result)
            result = await asyncio.wait_for(got, 10)
        finally:
            spawner.close()
        assert isinstance(result, int)
        return result

    assert asyncio.run(main()) == 42


@pytest.mark.parametrize("threads", [1, 3])
def test_every_start_is_answered_once(threads: int) -> None:
    async def main() -> list[int | BaseException]:
        spawner = Spawner(threads)
        answers: list[int | BaseException] = []
        done = asyncio.Event()

        def answer(result: int | BaseException) -> None:
            answers.append(result)
            if len(answers) == 50:
                done.set()
        try:
            for n in range(50):
                spawner.submit(lambda n=n: n, answer)
                if n % 7 == 0:
                    await asyncio.sleep(0)  # sleep-ok: a loop turn, so starts come in several batches
            await asyncio.wait_for(done.wait(), 10)
        finally:
            spawner.close()
        return answers

    assert sorted(asyncio.run(main())) == list(range(50))  # type: ignore[type-var]
