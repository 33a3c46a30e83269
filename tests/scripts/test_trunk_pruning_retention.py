"""scripts/trunk_pruning_retention.py on a constructed study folder: finished units only, the
equal-MACs difference by hand, the figure, and bad input exits 2 with error/fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..study.test_retention_table import _results
from .loading import SCRIPTS

SCRIPT = SCRIPTS / "trunk_pruning_retention.py"


def _study(root: Path, finished: bool = True) -> Path:
    for res in _results()[:-1]:
        first = res["curves"][0]
        for r in res["curves"]:
            r["pruned_ratio"], r["localisation_on_lesion_chance"] = 0.2 * r["step"], 0.3
        unit = root / "runs" / "resnet18" / f"seed{first['seed']}" / f"protopnet-filter-{first['method']}"
        unit.mkdir(parents=True)
        (unit / "result.json").write_text(json.dumps(res))
        if finished or first["seed"] < 2:
            (unit / "done.json").write_text("{}")
    return root


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_tables_and_figure_of_finished_units(tmp_path: Path) -> None:
    study = _study(tmp_path / "study", finished=False)  # seed 2 still running: left out
    out = _run(study, "--macs", "0.8,0.5", "--figure", tmp_path / "front.png")
    assert out.returncode == 0, out.stderr
    assert "lrp: seeds 0, 1; random: seeds 0, 1" in out.stdout
    shifts = np.array([0.0, 0.02])  # seeds 0 and 1 at 50 % MACs, as in test_retention_table
    d = ((0.6 - shifts) - (0.2 - shifts) / 4) - (0.5 - (0.2 + shifts) * 2 / 3)
    got = re.search(r"\| lrp - random \(paired, n = 2\) \| ([+-][0-9.]+) \[", out.stdout)
    assert got and float(got.group(1)) == pytest.approx(d.mean(), abs=6e-4)  # printed to 3 decimals
    assert "(lrp higher)" in out.stdout
    assert "**80% of the unpruned MACs**: no criterion has pruned steps on both sides" in out.stdout
    assert (tmp_path / "front.png").stat().st_size > 10_000


def test_bad_input_exits_2_with_error_and_fix(tmp_path: Path) -> None:
    for args in ((tmp_path,), (_study(tmp_path / "s"), "--macs", "80%"), (tmp_path / "s", "--macs", "1.5")):
        out = _run(*args)
        assert out.returncode == 2 and out.stderr.startswith("error:") and "fix:" in out.stderr
        assert "Traceback" not in out.stderr


def test_the_repair_control_is_shown_beside_each_step(tmp_path: Path) -> None:
    study = _study(tmp_path / "study")
    for s in (0, 1, 2):
        unit = study / "runs" / "resnet18" / f"seed{s}" / "protopnet-repair-control"
        unit.mkdir(parents=True)
        rows = [{"arch": "resnet18", "seed": s, "step": k, "arm": "repair_control", "method": "repair only",
                 "test_balanced_accuracy": 0.7, "retention_topk_jaccard": [None, 0.9, 0.85][k]}
                for k in (0, 1, 2)]  # fmt: skip
        (unit / "result.json").write_text(json.dumps({"curves": rows}))
        (unit / "done.json").write_text("{}")
    out = _run(study, "--macs", "0.5")
    assert out.returncode == 0, out.stderr
    assert "| repair only (control) | 1 | 3 | 0.700 ± 0.000 | 0.900 ± 0.000 |" in out.stdout
    d = (0.8 - np.array([0.0, 0.02, 0.07])) - 0.9  # lrp's step 1 − the control after 1 repair
    assert "| lrp − control (paired, n = 3) | 1 | | " in out.stdout and f"{d.mean():+.3f} [" in out.stdout


def test_the_repair_control_script_refuses_bad_input_before_any_work(tmp_path: Path) -> None:
    script = SCRIPTS / "repair_control.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path), "--seeds", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "study.yaml" in out.stderr
    from protoprune.demo import packaged_config

    (tmp_path / "study.yaml").write_text(packaged_config("study_quick.yaml").read_text())
    out = subprocess.run([sys.executable, str(script), str(tmp_path), "--seeds", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "no ProtoPNet checkpoint for seed 0" in out.stderr and "fix:" in out.stderr
    assert not (tmp_path / "runs").exists()
