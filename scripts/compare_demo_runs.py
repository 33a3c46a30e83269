"""Are two demo folders the same result? For refactors that must not change behaviour.

    protoprune demo --out runs/demo-before    # at the old commit
    protoprune demo --out runs/demo-after     # at the new one
    python scripts/compare_demo_runs.py runs/demo-before runs/demo-after

Compares the per-stage metrics, each stage's metrics and tables (timing columns and keys left
out, the folder's own path replaced) and the checkpoints' weights bit for bit; exits 1 on any
difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

TABLES = ["baseline/metrics.json", "protopnet/metrics.json", "prune-filters-lrp/results.csv",
          "prune-curve/curve.csv", "protopnet/prototype_pruning/prototype_pruning.json",
          "protopnet/report/explain/explanations.json",
          "protopnet/report/explain/quality/summary.json",
          "protopnet/report/explain/quality/prototype_quality.csv"]  # fmt: skip
CHECKPOINTS = ["baseline/checkpoints/best.pt", "protopnet/checkpoints/best.pt",
               "protopnet/prototype_pruning/checkpoints/best.pt"]  # fmt: skip


def _timeless(o):
    if isinstance(o, dict):
        return {k: _timeless(v) for k, v in o.items() if "seconds" not in k and "time" not in k}
    return [_timeless(v) for v in o] if isinstance(o, list) else o


def same_table(a: Path, b: Path, rel: str) -> bool:
    if rel.endswith(".csv"):
        da, db = pd.read_csv(a / rel), pd.read_csv(b / rel)
        drop = [c for c in da.columns if "seconds" in c or "latency" in c]
        return da.drop(columns=drop).equals(db.drop(columns=drop, errors="ignore"))
    load = lambda root: _timeless(json.loads((root / rel).read_text().replace(str(root), "RUN")))  # noqa: E731
    return load(a) == load(b)


def same_weights(a: Path, b: Path, rel: str) -> bool:
    wa = torch.load(a / rel, map_location="cpu", weights_only=False)["state_dict"]
    wb = torch.load(b / rel, map_location="cpu", weights_only=False)["state_dict"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def main() -> int:
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    stages = [json.loads((d / "summary.json").read_text())["stages"] for d in (a, b)]
    checks = {"summary.json stages": stages[0] == stages[1]}
    checks.update({rel: same_table(a, b, rel) for rel in TABLES if (a / rel).exists()})
    checks.update({f"{rel} weights": same_weights(a, b, rel) for rel in CHECKPOINTS if (a / rel).exists()})
    for name, ok in checks.items():
        print(f"{'identical' if ok else 'DIFFERS  '}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
