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
