"""How fast `protoprune --help` and `protoprune CMD --help` answer (target: <= 0.5 s each).

Each is a fresh `python -m protoprune ... --help` process, timed wall-clock, median of
--repeats; the commands import torch and the library only when they run, so help needs neither.
Writes results/bench_cli_help.json and prints a table. Usage:
    python benchmarks/bench_cli_help.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5
COMMANDS = ["", "train", "evaluate", "demo", "check-data", "push", "prune-filters",
            "prune-prototypes", "explain", "report", "study"]  # fmt: skip


def time_help(command: str, repeats: int) -> float:
    argv = [sys.executable, "-m", "protoprune", *([command] if command else []), "--help"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=os.environ.copy())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/bench_cli_help.json")
    args = ap.parse_args()
    rows = {c or "(none)": time_help(c, args.repeats) for c in COMMANDS}
    report = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
        "target_s": TARGET_S,
        "median_s": rows,
        "all_within_target": all(t <= TARGET_S for t in rows.values()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"protoprune [CMD] --help, median of {args.repeats} (target <= {TARGET_S} s)")
    print(f"{'command':<18} {'seconds':>8}  ok")
    for command, seconds in rows.items():
        print(f"{command:<18} {seconds:>8.3f}  {'yes' if seconds <= TARGET_S else 'NO'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
