import os

import pytest

from protoprune.errors import OutputExistsError, ProtopruneError
from protoprune.io import atomic_write_text, prepare_run_dir


def test_run_folder_is_never_overwritten_without_force(tmp_path):
    run = tmp_path / "run"
    prepare_run_dir(run)
    (run / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="--force"):
        prepare_run_dir(run)
    prepare_run_dir(run, force=True)
    # the old results are moved aside, not deleted
    assert (tmp_path / "run.old-1" / "metrics.json").read_text() == "{}"
    assert not any(run.iterdir())


def test_resume_keeps_the_folder(tmp_path):
    run = tmp_path / "run"
    prepare_run_dir(run)
    (run / "a").write_text("x")
    prepare_run_dir(run, resume=True)
    assert (run / "a").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ProtopruneError, match="cannot write"):
        prepare_run_dir(ro / "run")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from protoprune import io

    def failing(p):
        p.write_text("half")
        raise Boom

    with pytest.raises(Boom):
        io._atomic(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
