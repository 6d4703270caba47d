"""Benchmark taskmasterd against supervisord (issue 7).

    python bench/run.py [--quick] [--only restart,...,tasks,console,remote,web] [--daemons taskmasterd]

Prints a table (measure | taskmasterd | supervisord | ratio | target met?)
and writes bench/results/<UTC timestamp>.json and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consolebench import CPU_TARGET as CONSOLE_CPU
from consolebench import HELD_UP
from drivers import DRIVERS, SUPERVISOR_VERSION, ensure_supervisor, project_python
from measures import MEASURES, summary
from taskbench import TARGET_TEXT as TASKS_TARGET
from taskbench import verdict as tasks_verdict

RESULTS = Path(__file__).resolve().parent / "results"

# measure-name prefix -> (description, predicate on taskmasterd's and supervisord's
# medians (supervisord's None when it was not run), analysis if missed)
TARGETS = [
    ("restart latency", "p50 < 5 ms", lambda m, sv: m < 5,
     "spawn path (fork+exec from Python) or CPU contention with the bench's /proc polling"),
    ("mass start N=1000", "< 1 s", lambda m, sv: m < 1,
     "see the floor rows: fork+exec alone takes most of the budget on this machine; "
     "the rest is interpreter start-up (~0.2 s) and ~0.4 ms of bookkeeping per process "
     "(two log lines, two ProcessStateChanged and a PropertiesChanged through dbus-next, "
     "the pidfd); bench/README.md has the profile"),
    ("status CLI N=1000", "< 150 ms", lambda m, sv: m < 150,
     "see the floor rows and bench/README.md: interpreter start-up, taskctl's imports "
     "(jeepney, argparse), the daemon writing 1000 rows and taskctl reading and printing them"),
    ("idle wakeups/s", "0 /s", lambda m, sv: m < 0.5, "a periodic timer still runs in the daemon"),
    ("output flood: daemon CPU", "~0 %", lambda m, sv: m < 2,
     "the daemon is in the data path or polls"),
    ("rotated flood: CPU per GB", "<= half of supervisord's in the same run",
     lambda m, sv: m <= (sv if sv is not None else 0.9) / 2,
     "what is left is the kernel's cost of putting the bytes in the page cache (ext4 "
     "allocation, memcg charging, freeing the dropped backup), which supervisord pays too; "
     "see bench/README.md"),
    ("console: CPU at 1 MB/s", f"< {CONSOLE_CPU:g} % of a core", lambda m, sv: m < CONSOLE_CPU,
     "the log writer's reads of the terminal (one per line at this pace), its writes to the "
     "file and the ring; see bench/README.md (Consoles)"),
    ("console: the program's slowest write", f"< {HELD_UP * 1000:g} ms",
     lambda m, sv: m < HELD_UP * 1000,
     "the terminal was not drained: the program blocked on a full terminal buffer"),
    ("console: the program behind", f"< {HELD_UP * 1000:g} ms", lambda m, sv: m < HELD_UP * 1000,
     "the program was held up (or did not get the CPU: see the load of the machine)"),
    ("daemon-reexec time", "< 1 s", lambda m, sv: m < 1,
     "see bench/README.md (Re-exec and re-adoption)"),
    ("daemon-reexec restarts", "0", lambda m, sv: m == 0,
     "a process was restarted by the re-exec: see the daemon's log"),
    ("re-adopt second copies", "0", lambda m, sv: m == 0,
     "a process was started again beside its adopted copy: see the daemon's log"),
    ("tasks: wall time / floor", TASKS_TARGET, lambda m, sv: tasks_verdict(m),
     "see the floor rows of the same run: the spawns, and the durable status files (3 writes "
     "per task, group commits) the design asks for; bench/README.md"),
    ("web /metrics", "< 50 ms", lambda m, sv: m < 50,
     "prometheus_client building and encoding 6 series per process (~88 % of a scrape); "
     "see bench/README.md (taskmaster-web)"),
    ("web page load", "< 1 s", lambda m, sv: m < 1000,
     "the first frame: style and layout of 1,000 rows (5,000 buttons logged in); "
     "see bench/README.md (taskmaster-web)"),
    ("web state change", "< 100 ms", lambda m, sv: m < 100,
     "the page's main thread, not the service (its share is in the notes): a signal waits "
     "for the frame the previous change caused; see bench/README.md (taskmaster-web)"),
    ("stop precision", "1000 ms ± 10", lambda m, sv: abs(m - 1000) <= 10,
     "timer slack or stop-request round trip"),
]


def machine() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "supervisor": SUPERVISOR_VERSION,
            "taskmasterd_python": project_python()}


def fmt(s: dict, note: str, unit: str = "") -> str:
    if "median" not in s:
        return note or "-"
    med = s["median"]
    digits = 2 if abs(med) < 10 else 1 if abs(med) < 1000 else 0
    if unit == "programs":  # a count (a median of two may end in .5)
        digits = 0 if float(med).is_integer() else 1
    text = f"{med:.{digits}f}"
    if s["n"] > 1:
        text += f" [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"
    return text + (f" ({note})" if note else "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 5 s idle window, 3 s flood")
    ap.add_argument("--only", default="", help=f"comma list of {','.join(MEASURES)}")
    ap.add_argument("--daemons", default="taskmasterd,supervisord")
    ap.add_argument("--sizes", default="100,500,1000", help="N for the scale measures")
    ap.add_argument("--results", default=str(RESULTS), help="where the JSON files go")
    ap.add_argument("--tasks", type=int, default=1000, help="N for the tasks measure")
    ap.add_argument("--remote", type=int, default=1000,
                    help="N programs for the remote measure (taskctl -H vs systemctl -H)")
    ap.add_argument("--web", type=int, default=1000,
                    help="N programs for the web measure (taskmaster-web, issue 17)")
    a = ap.parse_args()
    opts = argparse.Namespace(
        reps_cheap=3 if a.quick else 7, reps_cli=3 if a.quick else 5,
        reps_restart=5 if a.quick else 15,  # supervisord's is bimodal: more samples
        reps_flood=1 if a.quick else 3,
        sizes=[int(n) for n in a.sizes.split(",")],
        mass_timeout=20.0 if a.quick else 60.0,
        idle_window=5.0 if a.quick else 10.0, idle_reps=1 if a.quick else 3,
        flood_secs=3.0 if a.quick else 5.0,
        console_secs=10.0, reps_console=1 if a.quick else 3,
        fanout_n=500,
        reps_reexec=2 if a.quick else 5, reps_readopt=2 if a.quick else 3,
        tasks_n=a.tasks, tasks_parallel=16, reps_tasks=1 if a.quick else 3,
        tasks_timeout=60.0 if a.quick else 120.0,
        remote_n=a.remote, reps_remote=7 if a.quick else 21,
        web_n=a.web, reps_metrics=7 if a.quick else 21, reps_web_load=3 if a.quick else 10,
        web_cycles=2 if a.quick else 20)
    names = [n for n in (a.only.split(",") if a.only else MEASURES) if n]
    daemons = a.daemons.split(",")
    if "supervisord" in daemons:
        ensure_supervisor()
    results: dict[str, dict[str, dict]] = {}
    order: list[str] = []
    for name in names:
        for dname in daemons:
            print(f"# {name} on {dname} ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            try:
                rows = MEASURES[name](DRIVERS[dname], opts)
            except Exception as e:  # one broken measure must not hide the others
                rows = [{"measure": f"{name} (failed)", "unit": "", "samples": [],
                         "note": f"error: {type(e).__name__}: {e}"[:200], "better": "lower"}]
            print(f"#   {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
            for r in rows:
                key = r["measure"]
                if key not in results:
                    results[key] = {"unit": r["unit"], "better": r["better"]}
                    order.append(key)
                results[key][dname] = {"samples": r["samples"], "note": r["note"],
                                       **summary(r["samples"])}
    # table
    header = ["measure", "unit", "taskmasterd", "supervisord", "ratio sup/tm", "target met?"]
    table = [header]
    misses = []
    for key in order:
        r = results[key]
        tm, sv = r.get("taskmasterd", {}), r.get("supervisord", {})
        ratio = ""
        if tm.get("median") and sv.get("median"):
            ratio = f"{sv['median'] / tm['median']:.1f}x"
        elif tm.get("median") and sv.get("note", "").startswith(">"):
            cap = float(sv["note"].split()[1]) * (1000 if r["unit"] == "ms" else 1)
            ratio = f"> {cap / tm['median']:.0f}x"
        target = ""
        for prefix, text, ok, why in TARGETS:
            if key.startswith(prefix) and "median" in tm:
                met = ok(tm["median"], sv.get("median"))
                target = f"{'yes' if met else 'NO'} ({text})"
                if not met:
                    misses.append(f"{key}: {why}")
                r["target"] = {"text": text, "met": met}
        table.append([key, r["unit"], fmt(tm, tm.get("note", ""), r["unit"]),
                      fmt(sv, sv.get("note", ""), r["unit"]),
                      ratio, target])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    m = machine()
    print(f"\nmachine: {m['nproc']} CPU ({m['cpu']}), kernel {m['kernel']}, Python {m['python']}, "
          f"supervisor {m['supervisor']}; {'quick' if a.quick else 'full'} run; "
          f"cells: median [min–max] over n samples (see JSON for n)")
    print("\n".join(lines))
    if misses:
        print("\nmissed targets (analysis):")
        for line in misses:
            print(f"- {line}")
    results_dir = Path(a.results)
    results_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {"timestamp": stamp, "machine": m, "quick": a.quick, "options": vars(opts),
           "results": {k: results[k] for k in order}, "table": lines}
    text = json.dumps(doc, indent=2, default=str)
    (results_dir / f"{stamp}.json").write_text(text)
    (results_dir / "latest.json").write_text(text)
    print(f"\nwrote {results_dir / (stamp + '.json')} and latest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
