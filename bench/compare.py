"""Compare two benchmark runs (bench/results/*.json), measure by measure.

    python bench/compare.py                 # the two newest runs in bench/results
    python bench/compare.py OLD.json NEW.json

Prints, for each measure in either run and each daemon, the old and new
medians and the change in percent, marked better/worse by the measure's own
direction ("better": lower or higher). A change within the noise of this
kind of machine (see bench/README.md) is not a regression: look at min–max
in the runs themselves before concluding anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DAEMONS = ("taskmasterd", "supervisord")


def newest_two(directory: Path) -> tuple[Path, Path]:
    runs = sorted(p for p in directory.glob("*.json") if p.name != "latest.json")
    if len(runs) < 2:
        raise SystemExit(f"compare: need two runs in {directory}, found {len(runs)}")
    return runs[-2], runs[-1]


def change(old: float, new: float, better: str) -> str:
    if not old:
        return ""
    pct = (new - old) / old * 100
    if abs(pct) < 0.5:
        return "same"
    improved = pct < 0 if better == "lower" else pct > 0
    return f"{pct:+.0f}% ({'better' if improved else 'worse'})"


def compare(old: dict, new: dict) -> list[list[str]]:
    rows = [["measure", "unit", "daemon", "old", "new", "change"]]
    names = list(old["results"]) + [n for n in new["results"] if n not in old["results"]]
    for name in names:
        a, b = old["results"].get(name, {}), new["results"].get(name, {})
        unit = b.get("unit") or a.get("unit", "")
        better = b.get("better") or a.get("better", "lower")
        for daemon in DAEMONS:
            x, y = a.get(daemon, {}).get("median"), b.get(daemon, {}).get("median")
            if x is None and y is None:
                continue
            rows.append([name, unit, daemon, "-" if x is None else f"{x:.4g}",
                         "-" if y is None else f"{y:.4g}",
                         change(x, y, better) if x is not None and y is not None else ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="OLD.json NEW.json (default: the newest two)")
    a = ap.parse_args(argv)
    if len(a.runs) not in (0, 2):
        ap.error("give two result files, or none")
    old_path, new_path = a.runs if a.runs else newest_two(RESULTS)
    old, new = (json.loads(p.read_text()) for p in (old_path, new_path))
    print(f"old: {old_path.name} ({old.get('timestamp', '?')}, {'quick' if old.get('quick') else 'full'})")
    print(f"new: {new_path.name} ({new.get('timestamp', '?')}, {'quick' if new.get('quick') else 'full'})")
    rows = compare(old, new)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `compare.py | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
