"""The `rotate` measure with the two daemons alternating rep by rep
(T S, S T, T S ...), so that a change of the machine's load hits both alike;
run.py runs all of one daemon's reps, then the other's.

    .venv/bin/python bench/rotate_ab.py [PAIRS, default 10]

Prints each sample (CPU-s per GB moved, MB/s), then the medians and their ratio.
"""

from __future__ import annotations

import statistics
import sys
import types

from drivers import DRIVERS, ensure_supervisor
from measures import rotated_flood


def main(pairs: int) -> None:
    ensure_supervisor()
    opts = types.SimpleNamespace(flood_secs=5.0, reps_flood=1)
    res: dict[str, list[tuple[float, float]]] = {"taskmasterd": [], "supervisord": []}
    for i in range(pairs):
        order = ("taskmasterd", "supervisord") if i % 2 == 0 else ("supervisord", "taskmasterd")
        for name in order:
            rows = rotated_flood(DRIVERS[name], opts)
            res[name].append((rows[0]["samples"][0], rows[1]["samples"][0]))
            print(f"{name:12} {res[name][-1][0]:.3f} CPU-s/GB  {res[name][-1][1]:.0f} MB/s", flush=True)
    med = {n: statistics.median(x for x, _ in v) for n, v in res.items()}
    for n, v in res.items():
        print(f"{n:12} median {med[n]:.3f} CPU-s/GB, {statistics.median(y for _, y in v):.0f} MB/s")
    print(f"ratio supervisord/taskmasterd: {med['supervisord'] / med['taskmasterd']:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
