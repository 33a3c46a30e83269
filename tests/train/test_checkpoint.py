import pytest
import torch

from protoprune.config import load_config
from protoprune.errors import CheckpointError
from protoprune.models.factory import build_model
from protoprune.train.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_state,
    model_from_checkpoint,
    save_checkpoint,
)

NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def test_round_trip_gives_identical_logits(tmp_path):
    cfg = load_config(None)
    model = build_model(cfg, 7).eval()
    path = save_checkpoint(tmp_path / "c.pt", model, cfg, NAMES, epoch=3)
    raw = torch.load(path, weights_only=True)  # plain data only: no pickled code
    assert raw["class_names"] == NAMES and raw["epoch"] == 3 and raw["format_version"] == FORMAT_VERSION
    again = model_from_checkpoint(path)
    x = torch.randn(4, 3, 28, 28)
    assert torch.equal(model(x), again(x))


def test_wrong_architecture_or_class_count_fails_clearly(tmp_path):
    cfg = load_config(None)
    path = save_checkpoint(tmp_path / "c.pt", build_model(cfg, 7), cfg, NAMES)
    ckpt = load_checkpoint(path)
    vgg = build_model(load_config(None, ["model.arch=vgg11"]), 7)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_state(vgg, ckpt)
    with pytest.raises(CheckpointError, match="of another shape"):
        load_state(build_model(cfg, 3), ckpt)


def test_newer_format_and_foreign_files_are_refused(tmp_path):
    cfg = load_config(None)
    path = save_checkpoint(tmp_path / "c.pt", build_model(cfg, 7), cfg, NAMES)
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    torch.save(ckpt, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="upgrade protoprune"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a protoprune checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_code_is_never_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format_version": 1, "state_dict": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(tmp_path / "evil.pt")


def test_checkpoint_config_applies_overrides_and_validates_them(tmp_path):
    from protoprune.errors import ConfigError
    from protoprune.train.checkpoint import checkpoint_config

    cfg = load_config(None, ["train.epochs=4"])
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.pt", build_model(cfg, 7), cfg, NAMES))
    assert checkpoint_config(ckpt).train.epochs == 4
    changed = checkpoint_config(ckpt, ["data.root=/data/ham", "prune_filters.total_pr=0.3"])
    assert (changed.data.root, changed.prune_filters.total_pr, changed.train.epochs) == ("/data/ham", 0.3, 4)
    with pytest.raises(ConfigError, match="total_pr"):
        checkpoint_config(ckpt, ["prune_filters.total_pr=2"])
