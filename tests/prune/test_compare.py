"""prune-filters --summarize: runs paired by baseline, accuracy at equal MACs, t intervals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from protoprune.cli import main
from protoprune.report.pruning import summarize_schedules

# (method, seed): (MACs per step, balanced accuracy after fine-tuning, epochs run per tuned step)
RUNS = {
    ("lrp", 0): ([100, 80, 60], [0.60, 0.55, 0.50], [2, 5]),
    ("lrp", 1): ([100, 82, 64], [0.62, 0.58, 0.52], [3, 3]),
    ("lrp", 2): ([100, 78, 58], [0.58, 0.57, 0.49], [5, 5]),
    ("weight", 0): ([100, 90, 70], [0.60, 0.50, 0.45], [4, 2]),
    ("weight", 1): ([100, 85, 66], [0.62, 0.52, 0.50], [5, 2]),
    ("weight", 2): ([100, 88, 68], [0.58, 0.55, 0.40], [3, 3]),
}


def _write(root, method, seed, macs, acc, epochs):
    rd = root / f"s{seed}-{method}"
    rd.mkdir()
    pd.DataFrame({
        "step": [0, 1, 2], "pruned_ratio": [0.0, 0.15, 0.3], "macs": macs,
        "test_balanced_accuracy": acc, "test_balanced_accuracy_pruned": [acc[0], 0.3, 0.2],
        "finetune_epochs": [np.nan, *epochs], "finetune_seconds": [0.0, 1.0, 1.0],
    }).to_csv(rd / "results.csv", index=False)  # fmt: skip
    meta = {"method": method, "normalize": "none", "checkpoint": f"runs/r18-s{seed}/best.pt",
            "epochs": 5, "patience": 2}  # fmt: skip
    (rd / "results.json").write_text(json.dumps(meta))
    (rd / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    return rd


def test_summary_pairs_by_baseline_and_interpolates_at_equal_macs(tmp_path):
    dirs = [_write(tmp_path, m, s, *v) for (m, s), v in RUNS.items()]
    finals = summarize_schedules(dirs, tmp_path / "out").set_index("run")
    common = 70  # the largest final MACs: weight seed 0's
    assert (finals["common_macs"] == common).all()
    # by hand: lrp seed 0 at 70 MACs lies halfway between 80 (0.55) and 60 (0.50)
    assert finals.loc["s0-lrp", "at_common_macs"] == pytest.approx(0.525)
    assert finals.loc["s2-lrp", "at_common_macs"] == pytest.approx(0.57 - 0.08 * 8 / 20)
    assert finals.loc["s0-weight", "at_common_macs"] == pytest.approx(0.45)
    # stopped by patience before the cap of 5 epochs
    assert finals.loc["s0-lrp", "stopped_early"] == 1 and finals.loc["s2-lrp", "stopped_early"] == 0
    # the paired interval of the final accuracy, against scipy's paired t test
    a = [RUNS[("lrp", s)][1][-1] for s in range(3)]
    b = [RUNS[("weight", s)][1][-1] for s in range(3)]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    md = (tmp_path / "out" / "schedules.md").read_text()
    row = next(line for line in md.splitlines() if "lrp − weight" in line and "| final |" in line)
    assert f"{np.mean(np.subtract(a, b)):+.3f}" in row
    assert f"[{ci.low:+.3f}, {ci.high:+.3f}]" in row
    table = md.split("## Paired")[0]
    assert "3 of 6" in table.split("| lrp |")[1].split("\n")[0]  # rounds: 1 + 2 + 0 under the cap
    assert "5 of 6" in table.split("| weight |")[1].split("\n")[0]
    assert (tmp_path / "out" / "schedules.png").stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "out" / "schedules.csv")) == 18


def test_cli_summarize_and_duplicate_runs(tmp_path, capsys):
    dirs = [str(_write(tmp_path, m, s, *v)) for (m, s), v in list(RUNS.items())[:2]]
    assert main(["prune-filters", "--summarize", *dirs, "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "schedules.md").is_file()
    twin = tmp_path / "twin"
    twin.mkdir()
    for f in ("results.csv", "results.json", "config.yaml"):
        (twin / f).write_bytes((tmp_path / "s0-lrp" / f).read_bytes())
    assert main(["prune-filters", "--summarize", dirs[0], str(twin), "--out", str(tmp_path / "o2")]) == 2
    assert "same criterion and baseline" in capsys.readouterr().err
    assert main(["prune-filters", "--summarize", str(tmp_path), "--out", str(tmp_path / "o3")]) == 2


def test_runs_of_one_folder_name_stay_apart_and_unpruned_runs_are_left_out(tmp_path, caplog):
    dirs = []
    for (m, s), v in RUNS.items():  # s0/lrp, s0/weight, s1/lrp, ...: names repeat across seeds
        (tmp_path / f"s{s}").mkdir(exist_ok=True)
        rd = _write(tmp_path / f"s{s}", m, s, *v)
        dirs.append(rd.rename(tmp_path / f"s{s}" / m))
    (tmp_path / "s3").mkdir()
    rd = _write(tmp_path / "s3", "taylor", 3, *RUNS[("lrp", 0)])
    pd.read_csv(rd / "results.csv").iloc[:1].drop(columns="finetune_epochs").to_csv(rd / "results.csv", index=False)
    finals = summarize_schedules(dirs + [rd], tmp_path / "out")
    assert len(finals) == 6 and finals["run"].nunique() == 6  # six runs, none merged
    assert "taylor" not in set(finals["method"]) and "no pruned step" in caplog.text


def test_rounds_flat_at_the_end_are_counted_where_recorded(tmp_path):
    dirs = [_write(tmp_path, m, s, *v) for (m, s), v in RUNS.items()]
    flat = {"s0-lrp": [True, False], "s1-lrp": [True, True], "s2-lrp": [True, False]}
    for rd in dirs:  # lrp runs record it; weight runs predate it (no column)
        if rd.name in flat:
            df = pd.read_csv(rd / "results.csv")
            df["finetune_flat"] = [np.nan, *flat[rd.name]]
            df.to_csv(rd / "results.csv", index=False)
    finals = summarize_schedules(dirs, tmp_path / "out").set_index("run")
    assert finals.loc["s0-lrp", "flat_rounds"] == 1 and finals.loc["s1-lrp", "flat_rounds"] == 2
    table = (tmp_path / "out" / "schedules.md").read_text().split("## Paired")[0]
    assert "| 4 of 6 |" in table.split("| lrp |")[1].split("\n")[0]  # 1 + 2 + 1 flat rounds
    assert "n/a" in table.split("| weight |")[1].split("\n")[0]


def test_retention_is_compared_at_equal_macs_from_the_unpruned_models_one(tmp_path):
    """ProtoPNet runs: step 0's retention is 1 (the model itself); the summary of the retention
    column interpolates it at equal MACs like accuracy (hand count), and the plot gets its panel."""
    retained = {"lrp": [np.nan, 0.9, 0.7], "weight": [np.nan, 0.6, 0.4]}
    dirs = []
    for (method, seed), v in RUNS.items():
        rd = _write(tmp_path, method, seed, *v)
        df = pd.read_csv(rd / "results.csv").assign(retention_topk_jaccard=retained[method])
        df.to_csv(rd / "results.csv", index=False)
        dirs.append(rd)
    finals = summarize_schedules(dirs, tmp_path / "out", "retention_topk_jaccard").set_index("run")
    assert finals.loc["s0-lrp", "at_common_macs"] == pytest.approx(0.8)  # halfway 80 -> 60 MACs
    # weight seed 1 at 70 MACs: between 85 (0.6) and 66 (0.4)
    assert finals.loc["s1-weight", "at_common_macs"] == pytest.approx(0.6 - 0.2 * 15 / 19)
    steps = pd.read_csv(tmp_path / "out" / "schedules.csv")
    assert (steps.loc[steps["step"] == 0, "retention_topk_jaccard"] == 1.0).all()
    summarize_schedules(dirs, tmp_path / "acc")  # accuracy, with the retention panel beside it
    assert (tmp_path / "acc" / "schedules.png").stat().st_size > 0


def test_localisation_starts_from_the_unpruned_models_value(tmp_path):
    """Step 0's localisation is the `_unpruned` column the steps record (and its chance level the
    steps' one); the equal-MACs value interpolates from there (hand count)."""
    dirs = []
    for (method, seed), v in RUNS.items():
        rd = _write(tmp_path, method, seed, *v)
        df = pd.read_csv(rd / "results.csv").assign(
            localisation_on_lesion=[np.nan, 0.5, 0.3], localisation_on_lesion_unpruned=[np.nan, 0.7, 0.7],
            localisation_on_lesion_chance=[np.nan, 0.25, 0.25])  # fmt: skip
        df.to_csv(rd / "results.csv", index=False)
        dirs.append(rd)
    finals = summarize_schedules(dirs, tmp_path / "out", "localisation_on_lesion").set_index("run")
    steps = pd.read_csv(tmp_path / "out" / "schedules.csv")
    zero = steps[steps["step"] == 0]
    assert (zero["localisation_on_lesion"] == 0.7).all() and (zero["localisation_on_lesion_chance"] == 0.25).all()
    # lrp seed 0 at the common 70 MACs: between 80 (0.5) and 60 (0.3) MACs
    assert finals.loc["s0-lrp", "at_common_macs"] == pytest.approx(0.4)
