"""Interrupted runs: a training process killed with SIGKILL mid-epoch resumes with --resume and
finishes exactly like an uninterrupted run; files are written atomically, so a kill never leaves a
half-written file that later loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from protoprune.cli import main
from protoprune.errors import CheckpointError
from protoprune.train.checkpoint import load_checkpoint

# tiny but real: 40 bundled DermaMNIST images per split at 16 px, ResNet18 (small-image variant),
# 3 epochs;
# threads fixed (this process's count: one under the README's two xdist workers) so the subprocess
# and this process do the same floating-point reductions
TINY = [
    "seed=0",
    "data.max_per_split=40",
    "data.image_size=16",
    "data.batch_size=20",
    "train.epochs=3",
    "train.progress=false",
    "train.device=cpu",
    f"train.threads={torch.get_num_threads()}",
    "model.arch=resnet18",
]


def cli_args(settings: list[str]) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


def start_training(out: Path, settings: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "protoprune", "train", *cli_args(settings), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def kill_after_first_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    """SIGKILL the run as soon as checkpoints/last.pt exists, i.e. while the next epoch trains."""
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + timeout
    while not last.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"training exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def final_metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    keys = ("confusion_matrix", "accuracy", "balanced_accuracy", "auroc_macro")
    return {split: {k: m[split][k] for k in keys} for split in ("val", "test")} | {
        "best_epoch": m["best_epoch"]
    }


def leftover_tmp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == ".write-test"]


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(tmp_path, capsys):
    killed = tmp_path / "killed"
    proc = start_training(killed, TINY)
    kill_after_first_checkpoint(proc, killed)

    # killed during epoch 2: the checkpoint is epoch 1's, complete and loadable; no results yet
    last = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert last["epoch"] == 0 and len(last["history"]) == 1
    assert not (killed / "metrics.json").exists()

    # without --resume the half-done run is protected; with it, training continues at epoch 2
    assert main(["train", *cli_args(TINY), "--out", str(killed)]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert main(["train", *cli_args(TINY), "--out", str(killed), "--resume"]) == 0

    reference = tmp_path / "reference"
    assert main(["train", *cli_args(TINY), "--out", str(reference)]) == 0

    assert final_metrics(killed) == final_metrics(reference)
    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for run in (killed, reference):
        assert leftover_tmp_files(run) == []
        assert (run / "split.csv").read_text() == (reference / "split.csv").read_text()


def test_half_written_checkpoint_never_loads(tmp_path, capsys):
    """What a non-atomic writer would leave after a kill: a truncated last.pt. It must be refused
    clearly (not loaded as garbage), and --resume must say what to do."""
    from protoprune.config import load_config
    from protoprune.models.factory import build_model
    from protoprune.train.checkpoint import save_checkpoint

    cfg = load_config(None, TINY)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(last, build_model(cfg, 7), cfg, list("abcdefg"), stage="fit", epoch=0)
    data = last.read_bytes()
    for cut in (len(data) // 2, 100):
        last.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="cannot load checkpoint") as info:
            load_checkpoint(last)
        assert "truncated" in info.value.fix
    assert main(["train", *cli_args(TINY), "--out", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load checkpoint") and "Traceback" not in err


def test_atomic_writes_leave_no_partial_file_when_interrupted(tmp_path):
    """An exception (or kill) inside the write keeps the previous file whole and leaves no .tmp."""
    from protoprune.io import atomic_torch_save, atomic_write_json

    target = tmp_path / "report.json"
    atomic_write_json(target, {"accuracy": 0.5})

    class Boom:
        def __reduce__(self):  # fails while torch.save is half-way through the file
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": torch.zeros(1000), "b": Boom()}, tmp_path / "ckpt.pt")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"accuracy": object()})
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
