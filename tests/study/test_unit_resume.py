"""A study killed inside a training unit continues that training from its last.pt on the next
invocation, and ends exactly where an uninterrupted study ends."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import protoprune.train.loop as loop
from protoprune.demo import packaged_config
from protoprune.study import StudyLog, Unit, can_resume, load_study_config, run_study

OVERRIDES = ["seeds=[0]", "arms=[baseline]", "run.train.epochs=2", "run.data.max_per_split=40"]


def _study():
    return load_study_config(packaged_config("study_quick.yaml"), OVERRIDES)


def _stop_in_second_epoch(monkeypatch):
    real = loop.train_one_epoch
    calls = {"n": 0}

    def counted(*a, **k):
        if calls["n"] == 1:  # epoch 1 and its last.pt are written, epoch 2 is cut off
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_one_epoch", counted)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_interrupted_training_unit_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, one_thread
):
    full = run_study(_study(), tmp_path / "full", progress=False)

    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        _stop_in_second_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            run_study(_study(), out, progress=False)
    unit_dir = out / "runs" / "resnet18" / "seed0" / "baseline"
    assert len(pd.read_csv(unit_dir / "history.csv")) == 1
    assert not (unit_dir / "done.json").exists()

    resumed = run_study(_study(), out, progress=False)

    events = StudyLog(out).events()
    last = [e for e in events if e["invocation"] == events[-1]["invocation"]]
    assert [(e["event"], e["resumed"]) for e in last] == [("started", True), ("ran", True)]
    assert not (unit_dir.parent / "baseline.old-1").exists()  # continued in place, not redone
    assert len(pd.read_csv(unit_dir / "history.csv")) == 2
    a = torch.load(tmp_path / "full" / unit_dir.relative_to(out) / "checkpoints" / "best.pt",
                   weights_only=True)["state_dict"]  # fmt: skip
    b = torch.load(unit_dir / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    cols = ["test_accuracy", "test_balanced_accuracy", "test_auroc_macro"]
    pd.testing.assert_frame_equal(full[cols], resumed[cols])


def test_only_a_same_settings_unfinished_attempt_is_resumed(tmp_path, monkeypatch, one_thread):
    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        _stop_in_second_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            run_study(_study(), out, progress=False)
    unit = Unit("resnet18", 0, "baseline")
    folder = out / "runs" / "resnet18" / "seed0" / "baseline"
    started = StudyLog(out).last_start(unit.key)
    assert started is not None
    assert can_resume(unit, folder, started, started)
    assert not can_resume(unit, folder, started, "another fingerprint")  # settings changed
    assert not can_resume(unit, folder, None, started)  # never started by a study
    assert not can_resume(Unit("resnet18", 0, "filter", "lrp"), folder, started, started)
    torn = tmp_path / "torn"
    (torn / "checkpoints").mkdir(parents=True)
    (torn / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")  # a corrupt or foreign file
    assert not can_resume(unit, torn, started, started)

    # changed settings: the attempt is not continued; it is kept aside and the unit starts over
    changed = load_study_config(packaged_config("study_quick.yaml"), OVERRIDES + ["run.train.lr=0.002"])
    run_study(changed, out, progress=False)
    events = StudyLog(out).events()
    assert [e["resumed"] for e in events if e["event"] == "started"] == [False, False]
    assert (folder.parent / "baseline.old-1" / "checkpoints" / "last.pt").is_file()
    assert not can_resume(unit, folder, StudyLog(out).last_start(unit.key),
                          StudyLog(out).last_start(unit.key))  # finished: nothing to continue  # fmt: skip
