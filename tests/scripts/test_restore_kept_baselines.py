"""scripts/restore_kept_baselines.py: a kept baseline unit comes back with the split.csv a training
run writes (prepare_data, what every run does before its first epoch), a finished unit already
there is left alone, and a split that does not match the kept metrics is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from protoprune.config import load_config, save_config
from protoprune.demo import packaged_config
from protoprune.train.run import prepare_data

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "restore_kept_baselines.py"


def _kept_unit(kept: Path, seed: int, test_images: int | None = None) -> tuple[Path, Path]:
    """A kept baseline of the demo config at `seed`, and the split.csv its run wrote."""
    cfg = load_config(packaged_config("demo.yaml"))
    cfg.seed = seed
    written = kept.parent / f"trained-{seed}"
    written.mkdir(parents=True)
    _, splits = prepare_data(cfg, written)
    unit = kept / "runs" / "resnet18" / f"seed{seed}" / "baseline"
    unit.mkdir(parents=True)
    save_config(cfg, unit / "config.yaml", {"split": "split.csv"})
    n = len(splits.test) if test_images is None else test_images
    (unit / "metrics.json").write_text(json.dumps({"test": {"n": n}}))
    (unit / "done.json").write_text(json.dumps({"run_id": f"run-{seed}"}))
    return unit, written / "split.csv"


def _run(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_a_kept_baseline_comes_back_with_its_split(tmp_path):
    kept, study = tmp_path / "kept", tmp_path / "study"
    _, split0 = _kept_unit(kept, 0)
    _kept_unit(kept, 1)
    out = _run(kept, study, "--seeds", "0")
    assert out.returncode == 0, out.stderr
    unit = study / "runs" / "resnet18" / "seed0" / "baseline"
    assert (unit / "split.csv").read_text() == split0.read_text()
    assert json.loads((unit / "done.json").read_text())["run_id"] == "run-0"
    assert not (study / "runs" / "resnet18" / "seed1").exists()
    (unit / "done.json").write_text('{"run_id": "trained here"}')
    assert "left as it is" in _run(kept, study, "--seeds", "0").stdout
    assert json.loads((unit / "done.json").read_text())["run_id"] == "trained here"


def test_a_split_that_does_not_match_the_kept_metrics_is_refused(tmp_path):
    kept, study = tmp_path / "kept", tmp_path / "study"
    _kept_unit(kept, 0, test_images=3)
    out = _run(kept, study)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "fix:" in out.stderr
    assert not (study / "runs").exists()
    assert _run(kept, study, "--seeds", "5").returncode == 2
