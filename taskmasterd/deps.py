"""Start ordering between programs (`after:`, issue 15): the graph checks the
config runs, what a start waits for, and in which order a set of programs
stops. Pure: no asyncio, no I/O.

`after: [db, cache]` orders, it does not pull in: web starts only once db
and cache are RUNNING (ready), and starting web never starts db (systemd's
After= without Wants=). A program is RUNNING for this purpose when all its
processes are. Stopping several programs at once stops the dependents
first: db waits until web (listed in the same request) is down.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from taskmasterd.lifecycle import SEVERITY
from taskmasterd.states import State
from taskmasterd.yamlnodes import suggest

if TYPE_CHECKING:  # taskmasterd.configschema imports this module for its checks
    from taskmasterd.programschema import ProgramConfig

Graph = Mapping[str, Sequence[str]]  # program -> the programs it starts after, in file order
NOT_CONFIGURED = "not configured"
MAX_SHOWN = 8  # programs of a cycle's path named in its error


def after_problems(graph: Graph) -> list[tuple[str, int, str]]:
    """(program, index of the `after` item, message) for every unknown name,
    name listed twice, program after itself, and cycle (reported at the item
    that closes it, with its path), in file order."""
    known = tuple(graph)
    out: list[tuple[str, int, str]] = []
    for program, names in graph.items():
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                out.append((program, i, f"'{name}' is listed twice in after"))
            elif name == program:
                out.append((program, i, f"program '{program}' cannot start after itself "
                                        f"(cycle: {program} -> {program})"))
            elif name not in graph:
                out.append((program, i, _unknown(name, known)))
            seen.add(name)
    out += _cycles(graph)
    order = {p: n for n, p in enumerate(known)}
    return sorted(out, key=lambda x: (order[x[0]], x[1]))


def _unknown(name: str, known: tuple[str, ...]) -> str:
    msg = f"unknown program '{name}'"
    guess = suggest(name, known)
    if guess is not None:
        return f"{msg} (did you mean '{guess}'?)"
    return f"{msg}; the programs are: {', '.join(known) or 'none'}"


def _cycles(graph: Graph) -> list[tuple[str, int, str]]:
    """Each edge that closes a cycle in a depth-first walk (file order), with
    the cycle's path. Iterative: a chain of 1000 programs is no recursion."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    out: list[tuple[str, int, str]] = []
    for root in graph:
        if color[root] != WHITE:
            continue
        path: list[str] = [root]
        color[root] = GREY
        stack: list[int] = [0]  # next item of after to look at, per node on the path
        while path:
            node = path[-1]
            names = graph[node]
            i = stack[-1]
            if i >= len(names):
                color[node] = BLACK
                path.pop()
                stack.pop()
                continue
            stack[-1] += 1
            nxt = names[i]
            if nxt == node or nxt not in graph or nxt in names[:i]:
                continue  # self, unknown, duplicate: told by after_problems
            if color[nxt] == GREY:
                cycle = path[path.index(nxt):]
                if len(cycle) > MAX_SHOWN:
                    cycle = [*cycle[:MAX_SHOWN - 2], f"... ({len(cycle)} programs)", cycle[-1]]
                out.append((node, i, f"cycle {' -> '.join([*cycle, nxt])}; "
                                     "a program cannot (indirectly) start after itself"))
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                stack.append(0)
    return out


def blockers(program: ProgramConfig,
             states_by_program: Mapping[str, Sequence[State]]) -> list[tuple[str, str]]:
    """The programs `program` starts after that are not RUNNING (all their
    processes), each with the state shown for it: the worst of its
    processes' (("db", "STOPPED")), NOT_CONFIGURED if it has none."""
    out: list[tuple[str, str]] = []
    for name in program.after:
        states = states_by_program.get(name, ())
        if not states:
            out.append((name, NOT_CONFIGURED))
        elif any(s is not State.RUNNING for s in states):
            worst = max((s for s in states if s is not State.RUNNING), key=SEVERITY.__getitem__)
            out.append((name, worst.value))
    return out


def waiting_text(blocked: Sequence[tuple[str, str]]) -> str:
    """`waiting for db (STOPPED), cache (STARTING)`."""
    return "waiting for " + ", ".join(f"{n} ({s})" for n, s in blocked)


def dependents(graph: Graph) -> dict[str, set[str]]:
    """program -> every program that starts after it, directly or not."""
    direct: dict[str, set[str]] = {p: set() for p in graph}
    for program, names in graph.items():
        for name in names:
            direct.setdefault(name, set()).add(program)
    out: dict[str, set[str]] = {}
    for program in direct:
        seen: set[str] = set()
        todo = list(direct[program])
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo += direct.get(p, ())
        seen.discard(program)
        out[program] = seen
    return out


def stop_waits(graph: Graph, stopping: Collection[str]) -> dict[str, set[str]]:
    """For each program of `stopping` (stopped in one request), the programs
    of `stopping` that must be down before it is stopped: its dependents,
    direct or through programs not in the request. Empty sets for programs
    nothing in the request depends on (they stop at once)."""
    every = dependents(graph)
    chosen = set(stopping)
    return {p: every.get(p, set()) & chosen for p in stopping}


def stop_order(graph: Graph, stopping: Sequence[str]) -> list[str]:
    """`stopping` with every program after its dependents (dependents first),
    otherwise in the order given. Kahn's walk of the whole graph (dependents
    through programs not in `stopping` count too), O(programs + edges)."""
    rank = {p: i for i, p in enumerate(dict.fromkeys(stopping))}
    nodes = list(dict.fromkeys([*stopping, *graph]))
    pos = {p: i for i, p in enumerate(nodes)}
    direct: dict[str, list[str]] = {p: [] for p in nodes}  # program -> its direct dependents
    waiting = dict.fromkeys(nodes, 0)  # how many of its direct dependents are not placed yet
    for program, names in graph.items():
        for name in dict.fromkeys(names):
            if name in direct and name != program:
                direct[name].append(program)
                waiting[name] += 1
    later = len(rank)
    ready = [(rank.get(p, later), i, p) for i, p in enumerate(nodes) if waiting[p] == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, _, program = heapq.heappop(ready)
        out.append(program)
        for name in graph.get(program, ()):
            if name in waiting and name != program:
                waiting[name] -= 1
                if waiting[name] == 0:
                    heapq.heappush(ready, (rank.get(name, later), pos[name], name))
    placed = set(out)
    out += [p for p in nodes if p not in placed]  # a cycle (the config refuses them): as given
    return [p for p in out if p in rank]


def longest_stop(graph: Graph, stoptimes: Mapping[str, float]) -> float:
    """How long stopping every program of `stoptimes` (program -> its
    longest stoptime) can take when each waits for its dependents: the
    sum of stoptimes along the longest chain."""
    order = stop_order(graph, list(dict.fromkeys([*graph, *stoptimes])))
    direct: dict[str, list[str]] = {}
    for program, names in graph.items():
        for name in names:
            direct.setdefault(name, []).append(program)
    total: dict[str, float] = {}
    for program in order:  # dependents come first: theirs are known
        before = max((total.get(d, 0.0) for d in direct.get(program, ())), default=0.0)
        total[program] = stoptimes.get(program, 0.0) + before
    return max(total.values(), default=0.0)
