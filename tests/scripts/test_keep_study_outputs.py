"""scripts/keep_study_outputs.py: what a study run adds to the kept folder, and what it must not
replace (the kept log's earlier lines, the whole study's study.yaml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "keep_study_outputs.py"


def test_a_partial_run_joins_the_kept_study_without_replacing_it(tmp_path) -> None:
    run, kept = tmp_path / "run", tmp_path / "kept"
    unit = run / "runs" / "resnet18" / "seed1" / "baseline"
    (unit / "checkpoints").mkdir(parents=True)
    (unit / "checkpoints" / "best.pt").write_bytes(b"weights")
    (unit / "metrics.json").write_text('{"test": 1}')
    (unit / "split.csv").write_text("image,split\n")
    (run / "study.yaml").write_text("seeds: [1]\n")
    (run / "results").mkdir()
    (run / "results" / "summary.csv").write_text("arm,seeds\nbaseline,1\n")  # of seed 1 alone
    (run / "study_log.jsonl").write_text('{"unit": "seed0", "event": "ran"}\n{"unit": "seed1", "event": "ran"}\n')
    kept.mkdir()
    (kept / "study.yaml").write_text("seeds: [0, 1, 2]\n")
    (kept / "study_log.jsonl").write_text('{"unit": "seed0", "event": "ran"}\n')
    subprocess.run([sys.executable, str(SCRIPT), str(run), str(kept)], check=True, capture_output=True)
    assert (kept / "study.yaml").read_text() == "seeds: [0, 1, 2]\n"
    assert (kept / "study_log.jsonl").read_text().splitlines() == [
        '{"unit": "seed0", "event": "ran"}', '{"unit": "seed1", "event": "ran"}']
    got = kept / "runs" / "resnet18" / "seed1" / "baseline"
    assert (got / "metrics.json").read_text() == '{"test": 1}'
    assert not (got / "split.csv").exists() and not (got / "checkpoints").exists()
    assert not (kept / "results").exists()
