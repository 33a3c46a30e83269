import json

import pytest

from protoprune.cli import build_parser, main
from tests.conftest import tiny_overrides


def _sets(**extra):
    return [arg for o in tiny_overrides(**extra) for arg in ("--set", o)]


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("train", "evaluate", "demo", "check-data"):
        assert cmd in out
    assert build_parser().parse_args(["train", "--set", "a.b=1"]).overrides == ["a.b=1"]


def test_train_then_evaluate_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *_sets(**{"train.epochs": 1}), "--out", str(run)]) == 0
    saved = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval")]) == 0
    printed = json.loads(capsys.readouterr().out)
    # evaluating the selected checkpoint reproduces the run's own test metrics
    assert printed["accuracy"] == pytest.approx(saved["test"]["accuracy"])
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    # a second train into the same folder is refused without --force, and nothing is lost
    before = (run / "metrics.json").read_text()
    assert main(["train", *_sets(), "--out", str(run)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (run / "metrics.json").read_text() == before


def test_check_data_on_the_bundled_ham10000_folder(tmp_path, capsys):
    from protoprune.data import bundled_path

    code = main(["check-data", "--set", "data.dataset=ham10000", "--set", f"data.root={bundled_path('ham10000')}",
                 "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["n_images"] == 21 and report["ok"]
    assert "| mel |" in capsys.readouterr().out


def test_user_errors_exit_2_without_traceback(capsys):
    assert main(["train", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key train.epoch") and "Traceback" not in err


# --- help without torch, progress bars, Ctrl-C advice ------------------------------------------


def test_help_imports_no_torch():
    """--help for the command and every subcommand answers without importing torch (or the
    library), which took seconds; what it costs is timed in benchmarks/bench_cli_help.py."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from protoprune.cli import build_parser\n"
        "parser = build_parser()\n"
        "for argv in [['--help']] + [[c, '--help'] for c in sys.argv[1:]]:\n"
        "    try:\n"
        "        parser.parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'torchvision', 'sklearn', 'pandas', 'matplotlib')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy), file=sys.stderr)\n"
    )
    commands = ["train", "evaluate", "demo", "check-data", "push", "prune-filters",
                "prune-prototypes", "explain", "report", "study"]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code, *commands], capture_output=True, text=True, check=True
    )
    assert "usage: protoprune study" in out.stdout  # every help was printed
    assert out.stderr.strip() == "", f"--help imported {out.stderr.strip()}"


def test_no_bars_off_a_terminal_or_after_no_progress(monkeypatch):
    import io

    from protoprune import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(progress, "_switched_off", False)
    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        assert progress.bars_shown() is shown
        list(progress.tqdm(range(3), desc="bar", file=stream))
        assert ("bar" in stream.getvalue()) is shown  # a log file gets no \r lines
    assert build_parser().parse_args(["train", "--no-progress"]).no_progress
    progress.switch_off()
    assert not progress.bars_shown()  # a terminal too, after --no-progress


def test_ctrl_c_advice_names_only_what_exists(tmp_path, monkeypatch, capsys):
    """Ctrl-C: train advises --resume only once a last.pt exists; a command without --resume
    never advises it."""
    import protoprune.cli.push as push_cli
    from protoprune.train.run import interrupt_advice

    run = tmp_path / "run"
    assert "no checkpoint was written" in interrupt_advice(run)
    assert "rerun the same command" in interrupt_advice(run, cleared=True)
    assert "--resume" not in interrupt_advice(run)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    assert "--resume" in interrupt_advice(run)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(push_cli, "execute", interrupted)
    assert main(["push", str(tmp_path / "none.pt")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted:") and "--resume" not in err and "checkpoint" not in err


def test_ctrl_c_during_training_before_the_first_epoch(tmp_path, monkeypatch, capsys):
    import protoprune.train.run as run_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "fit", interrupted)
    out = tmp_path / "run"
    assert main(["train", *_sets(**{"train.epochs": 1}), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "no epoch had finished, so nothing was kept" in err and "--resume" not in err
    assert "rerun the same command" in err and not out.exists()  # nothing blocks the rerun


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing_in_the_way(tmp_path, monkeypatch):
    """A failure inside the first epoch (here a data error) removes the start-up files and the
    folder, so the same command reruns without --force; a folder holding a user's file stays."""
    import protoprune.train.run as run_mod
    from protoprune.errors import DataError

    def broken(*args, **kwargs):
        raise DataError("image 7 is corrupt", "restore it")

    monkeypatch.setattr(run_mod, "fit", broken)
    out = tmp_path / "run"
    assert main(["train", *_sets(**{"train.epochs": 1}), "--out", str(out)]) == 2
    assert not out.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["train", *_sets(**{"train.epochs": 1}), "--out", str(tmp_path / "mine"),
                 "--force"]) == 2  # fmt: skip
    assert (tmp_path / "mine.old-1" / "notes.txt").read_text() == "keep me"
