import pytest
import yaml

from protoprune.config import RunConfig, apply_override, config_from_dict, load_config, save_config
from protoprune.errors import ConfigError


def test_defaults_are_the_papers_values():
    cfg = RunConfig()
    p = cfg.protopnet
    assert (p.prototypes_per_class, p.prototype_dim, p.clst, p.sep, p.l1) == (10, 128, 0.8, -0.08, 1e-4)
    assert (p.warm_epochs, p.last_layer_iterations, p.joint_lr_features) == (5, 20, 1e-4)
    assert (cfg.prune_prototypes.k, cfg.prune_prototypes.threshold) == (6, 3)
    assert (cfg.prune_filters.total_pr, cfg.prune_filters.pr_step) == (0.6, 0.15)


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.epochs=3", "data.split_ratios=[0.6,0.2,0.2]", "model.weights=null", "train.lr=1e-2"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.lr, float) and cfg.train.lr == 0.01
    assert cfg.data.split_ratios == [0.6, 0.2, 0.2]


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match="(?s)unknown config key train.epoch.*did you mean train.epochs"):
        load_config(None, ["train.epoch=3"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.epochs=three", "integer"),
        ("prune_filters.total_pr=1.5", "total_pr"),
        ("prune_filters.total_pr=-0.1", "total_pr"),
        ("prune_filters.pr_step=0.7", "larger than total_pr"),
        ("prune_filters.round_to=0", "round_to"),
        ("prune_prototypes.threshold=7", "threshold"),
        ("data.split_ratios=[0.5,0.5,0.5]", "summing to 1"),
        ("model.type=transformer", "model.type"),
        ("protopnet.add_on_output=tanh", "add_on_output"),
        ("data.image_size=2", "too small"),
    ],
)
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(None, ["seed=7", "train.epochs=4"])
    save_config(cfg, tmp_path / "config.yaml", {"split": "split.csv"})
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["protoprune_version"] and saved["split"] == "split.csv"
    assert config_from_dict(saved) == cfg


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="no '='"):
        apply_override({}, "train.epochs")


def test_data_folder_from_protoprune_data(tmp_path, monkeypatch):
    """The shipped configs name ${PROTOPRUNE_DATA}/<data set>/...: one variable moves them all;
    unset, the repository's own ../shared/data (so saved studies keep their fingerprints)."""
    from protoprune.demo import packaged_config
    from protoprune.study import load_study_config

    monkeypatch.delenv("PROTOPRUNE_DATA", raising=False)
    assert load_config(packaged_config("dermamnist_resnet18.yaml")).data.root == (
        "../shared/data/dermamnist/dermamnist.npz"
    )
    monkeypatch.setenv("PROTOPRUNE_DATA", str(tmp_path / "mine"))
    assert load_config(packaged_config("ham10000_resnet18.yaml")).data.root == str(
        tmp_path / "mine" / "ham10000"
    )
    study = load_study_config(packaged_config("study_full.yaml"))
    assert study.external_test == str(tmp_path / "mine" / "isic2018-task3-test")
    assert study.run["data"]["root"] == str(tmp_path / "mine" / "dermamnist" / "dermamnist.npz")
    # an override may use it too; other dollar signs are left alone
    cfg = load_config(None, ["data.root=$PROTOPRUNE_DATA/x.npz", "name=cost$5"])
    assert cfg.data.root == str(tmp_path / "mine" / "x.npz") and cfg.name == "cost$5"
