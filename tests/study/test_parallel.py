"""`run_study(jobs=N)`: seeds side by side in spawned processes give the table one process gives."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from protoprune.cli import main
from protoprune.demo import packaged_config
from protoprune.study import StudyLog, load_study_config, plan_units, run_study
from protoprune.study.runner import seed_groups
from protoprune.study.units import fingerprint, unit_config

# one thread in every unit (the parent and the workers alike), so the two runs compute the same
# curves long enough to end flat or not: 3 training epochs, fine-tuning rounds of at most 3
# evaluations of 2 batches each, stopped by a patience of 1
OVERRIDES = ["seeds=[0,1]", "arms=[baseline,filter_pruning]", "criteria=[weight,random]",
             "latency_batch_sizes=[]", "run.train.threads=1", "run.data.max_per_split=60",
             "run.train.epochs=3", "run.prune_filters.epochs=3", "run.prune_filters.patience=1",
             "run.prune_filters.finetune_batches=2"]  # fmt: skip


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in df.columns if "latency" not in c and "seconds" not in c]
    return df[keep].sort_values(["seed", "arm", "method"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def both(module_tmp):
    cfg = load_study_config(packaged_config("study_quick.yaml"), OVERRIDES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_study(cfg, module_tmp / "serial", progress=False)
        parallel = run_study(cfg, module_tmp / "parallel", progress=False, jobs=2)
    finally:
        torch.set_num_threads(threads)
    return cfg, module_tmp, serial, parallel


def test_parallel_seeds_give_the_serial_table(both):
    _, _, serial, parallel = both
    a, b = _comparable(serial), _comparable(parallel)
    assert list(a.columns) == list(b.columns) and len(a) == 6  # 2 seeds x (baseline + 2 criteria)
    numeric = a.select_dtypes("number").columns
    assert np.allclose(a[numeric].to_numpy(float), b[numeric].to_numpy(float), atol=1e-9, equal_nan=True)
    other = [c for c in a.columns if c not in numeric]
    pd.testing.assert_frame_equal(a[other], b[other])


def test_each_unit_ran_once_in_a_worker_and_the_parent_only_collected(both):
    cfg, tmp, _, _ = both
    events = StudyLog(tmp / "parallel").events()
    ran = [e["unit"] for e in events if e["event"] == "ran"]
    keys = [u.key for u in plan_units(cfg)]
    assert sorted(ran) == sorted(keys)  # every unit once, no line lost by concurrent writers
    by_invocation: dict[str, set] = {}
    for e in events:
        by_invocation.setdefault(e["invocation"], set()).add(e["unit"].split("/")[1])
    last = events[-1]["invocation"]
    assert {e["event"] for e in events if e["invocation"] == last} == {"skipped"}
    workers = [seeds for inv, seeds in by_invocation.items() if inv != last]
    assert sorted(map(sorted, workers)) == [["seed0"], ["seed1"]]  # one process a seed


def test_a_seed_group_has_the_fingerprints_of_the_whole_study(both):
    cfg, tmp, _, _ = both
    out = tmp / "parallel"
    whole = {u.key: u for u in plan_units(cfg)}
    for group in seed_groups(cfg):
        for unit in plan_units(group):
            assert unit in whole.values()
            done = json.loads((out / "runs" / unit.arch / f"seed{unit.seed}" / unit.name / "done.json").read_text())
            if unit.kind == "baseline":  # no dependencies: recomputable without run ids
                assert done["fingerprint"] == fingerprint(cfg, unit, unit_config(cfg, unit, out), {})


def test_bad_jobs_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["study", str(packaged_config("study_quick.yaml")), "--out", str(out), "--jobs", "0"])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "--jobs 0" in err and "fix:" in err


def test_convergence_table_reads_each_curve_as_recorded(both):
    """results/convergence.csv against the runs' own files, recomputed by hand."""
    cfg, tmp, _, _ = both
    out = tmp / "parallel"
    conv = pd.read_csv(out / "results" / "convergence.csv")
    assert len(conv) == 2 + 2 * 2 * 2  # a training curve a baseline, 2 rounds a criterion x seed
    for _, r in conv[conv["arm"] == "baseline"].iterrows():
        h = pd.read_csv(out / "runs" / "resnet18" / f"seed{r['seed']}" / "baseline" / "history.csv")
        v = h["val_balanced_accuracy"].tolist()
        assert r["evaluations"] == len(v) == 3 and r["best_evaluation"] == v.index(max(v)) + 1
        assert r["gain_last"] == pytest.approx(max(v[1:]) - v[0])
        assert bool(r["flat"]) == (max(v[1:]) - v[0] <= 0.01)
    for _, r in conv[conv["arm"] == "filter"].iterrows():
        steps = pd.read_csv(out / "runs" / "resnet18" / f"seed{r['seed']}" / f"filter-{r['method']}" / "results.csv")
        row = steps[steps["step"] == int(r["curve"].split()[1])].iloc[0]
        assert r["evaluations"] == row["finetune_epochs"] <= 3
        assert 1 <= r["best_evaluation"] <= r["evaluations"]
        # patience 1: a round stops after one evaluation without improvement, so a round cut
        # short ended on a non-improving evaluation, and one that ran all 3 improved at the last
        # or the one before
        assert bool(r["stopped_by_patience"]) == (r["evaluations"] < 3)
        if r["stopped_by_patience"]:
            assert r["best_evaluation"] == r["evaluations"] - 1
    html = (out / "index.html").read_text()
    assert "Convergence of each budget" in html and "flat at the end" in html
    md = (out / "results" / "summary.md").read_text().split("## Convergence of each budget")[1]
    baseline = next(line for line in md.splitlines() if line.startswith("| Baseline CNN |"))
    flat = int(conv[conv["arm"] == "baseline"]["flat"].sum())
    assert baseline.split(" | ")[1:3] == ["2", str(flat)]  # curves, flat at the end
