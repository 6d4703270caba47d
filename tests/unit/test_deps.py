"""taskmasterd.deps: the `after:` graph checks, what a start waits for, and
the order of stops (pure)."""

from __future__ import annotations

from taskmasterd.deps import (
    NOT_CONFIGURED,
    after_problems,
    blockers,
    dependents,
    longest_stop,
    stop_order,
    stop_waits,
    waiting_text,
)
from taskmasterd.programschema import ProgramConfig
from taskmasterd.states import State

R, S = State.RUNNING, State.STOPPED


def prog(name: str, *after: str) -> ProgramConfig:
    return ProgramConfig(name=name, cmd="true", argv=("true",), after=after)


def test_a_diamond_and_a_chain_are_fine() -> None:
    assert after_problems({"db": (), "cache": ("db",), "queue": ("db",),
                           "web": ("cache", "queue"), "front": ("web", "db")}) == []
    assert after_problems({"a": (), "b": ("a",), "c": ("b",)}) == []


def test_unknown_name_with_a_guess_or_the_list() -> None:
    problems = after_problems({"db": (), "web": ("dbb", "zzz")})
    assert problems == [
        ("web", 0, "unknown program 'dbb' (did you mean 'db'?)"),
        ("web", 1, "unknown program 'zzz'; the programs are: db, web"),
    ]


def test_self_and_duplicate() -> None:
    assert after_problems({"web": ("web",)}) == [
        ("web", 0, "program 'web' cannot start after itself (cycle: web -> web)")]
    assert after_problems({"db": (), "web": ("db", "db")}) == [
        ("web", 1, "'db' is listed twice in after")]


def test_two_cycle_at_the_item_that_closes_it() -> None:
    [(program, i, message)] = after_problems({"a": ("b",), "b": ("a",)})
    assert (program, i) == ("b", 0)
    assert message.startswith("cycle a -> b -> a;")


def test_three_cycle_with_its_path() -> None:
    [(program, i, message)] = after_problems({"x": (), "a": ("x", "b"), "b": ("c",),
                                              "c": ("a",)})
    assert (program, i) == ("c", 0)
    assert "cycle a -> b -> c -> a" in message


def test_every_cycle_and_every_other_problem_at_once() -> None:
    problems = after_problems({"a": ("b",), "b": ("a", "nope"), "c": ("d",), "d": ("c", "d")})
    assert [(p, i) for p, i, _ in problems] == [("b", 0), ("b", 1), ("d", 0), ("d", 1)]
    assert "cycle a -> b -> a" in problems[0][2]
    assert "unknown program 'nope'" in problems[1][2]
    assert "cycle c -> d -> c" in problems[2][2]
    assert "cannot start after itself" in problems[3][2]


def test_a_long_chain_is_walked_without_recursion() -> None:
    n = 5000
    graph = {f"p{i}": ((f"p{i + 1}",) if i + 1 < n else ("p0",)) for i in range(n)}
    [(program, index, message)] = after_problems(graph)
    assert (program, index) == (f"p{n - 1}", 0)
    # the path is shortened: its first programs, how many, and the one closing it
    assert message.startswith("cycle p0 -> p1 -> p2 -> p3 -> p4 -> p5 -> ... (5000 programs) "
                              f"-> p{n - 1} -> p0;"), message[:200]


def test_blockers_show_the_worst_state_of_a_program_not_all_running() -> None:
    web = prog("web", "db", "cache", "queue")
    states = {"db": [R], "cache": [R, State.STARTING, S], "queue": [S]}
    assert blockers(web, states) == [("cache", "STARTING"), ("queue", "STOPPED")]
    assert blockers(web, {"db": [R], "cache": [R, R], "queue": [R]}) == []
    assert blockers(prog("web", "gone"), {}) == [("gone", NOT_CONFIGURED)]
    assert blockers(prog("web"), {"db": [S]}) == []
    assert waiting_text([("db", "STOPPED"), ("cache", "FATAL")]) == \
        "waiting for db (STOPPED), cache (FATAL)"


def test_dependents_are_transitive() -> None:
    graph = {"db": (), "api": ("db",), "front": ("api",), "cron": ()}
    assert dependents(graph) == {"db": {"api", "front"}, "api": {"front"}, "front": set(),
                                 "cron": set()}


def test_stop_waits_only_for_dependents_in_the_same_request() -> None:
    graph = {"db": (), "api": ("db",), "front": ("api",), "cron": ()}
    assert stop_waits(graph, ["db", "api", "front", "cron"]) == {
        "db": {"api", "front"}, "api": {"front"}, "front": set(), "cron": set()}
    # through a program not stopped: db still waits for front
    assert stop_waits(graph, ["db", "front"]) == {"db": {"front"}, "front": set()}
    assert stop_waits(graph, ["db"]) == {"db": set()}  # a lone stop: at once


def test_stop_order_puts_dependents_first() -> None:
    graph = {"db": (), "cache": (), "api": ("db", "cache"), "front": ("api",), "cron": ()}
    assert stop_order(graph, ["db", "cache", "api", "front", "cron"]) == \
        ["front", "api", "db", "cache", "cron"]
    assert stop_order(graph, ["cron", "db"]) == ["cron", "db"]
    assert stop_order(graph, ["db", "front"]) == ["front", "db"]  # through api, not stopped


def test_stop_order_of_a_long_chain_is_linear() -> None:
    n = 3000
    graph = {f"p{i}": ((f"p{i - 1}",) if i else ()) for i in range(n)}
    names = list(graph)
    assert stop_order(graph, names) == names[::-1]


def test_longest_stop_sums_stoptimes_along_the_longest_chain() -> None:
    graph = {"db": (), "cache": (), "api": ("db", "cache"), "front": ("api",), "cron": ()}
    times = {"db": 10.0, "cache": 30.0, "api": 5.0, "front": 2.0, "cron": 40.0}
    assert longest_stop(graph, times) == 40.0  # cron alone vs front+api+cache = 37
    assert longest_stop(graph, {**times, "front": 20.0}) == 55.0  # 20 + 5 + 30
    assert longest_stop(graph, {"db": 10.0, "front": 2.0}) == 12.0  # api not alive: 0
    assert longest_stop({}, {}) == 0.0
