"""The study's pruning_curve arm: prune-curve on every seed's baseline, pooled into the report."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from protoprune.cli import main
from protoprune.demo import packaged_config
from protoprune.errors import ConfigError
from protoprune.study import StudyLog, load_study_config, plan_units, run_study
from protoprune.study.units import Unit, fingerprint, unit_config

OVERRIDES = ["seeds=[0,1]", "arms=[baseline,pruning_curve]", "criteria=[lrp,weight,random]",
             "curve.ratios=[0.1,0.3]", "curve.normalize=[none]"]  # fmt: skip


@pytest.fixture(scope="module")
def curve_study(module_tmp):
    cfg = load_study_config(packaged_config("study_quick.yaml"), OVERRIDES)
    out = module_tmp / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_study(cfg, out, progress=False)
        yield cfg, out
    finally:
        torch.set_num_threads(threads)


def test_a_curve_unit_per_seed_after_its_baseline(curve_study):
    cfg, _ = curve_study
    units = plan_units(cfg)
    assert [u.kind for u in units] == ["baseline", "curve", "baseline", "curve"]
    assert cfg.curve["ref_seeds"] == 2 and cfg.curve["splits"] == ["test"]  # defaults kept


def test_pooled_curve_pairs_seed_and_draw_and_is_in_the_report(curve_study):
    _, out = curve_study
    pooled = pd.read_csv(out / "results" / "pruning_curve" / "curves.csv")
    # 2 seeds x (lrp, weight, random) x 2 draws x (ratio 0 + two cuts)
    assert len(pooled) == 2 * 3 * 2 * 3 and pooled["run"].nunique() == 2
    md = (out / "results" / "pruning_curve" / "curve.md").read_text()
    assert "lrp/none - weight/none" in md and "| area | 2 |" in md  # unit: the seed, its 2 draws averaged
    html = (out / "index.html").read_text()
    assert "Pruning curve without fine-tuning" in html and 'src="pruning_curve.png"' in html
    assert (out / "pruning_curve.png").stat().st_size > 0


def test_the_arm_computes_what_prune_curve_computes_on_that_baseline(curve_study, tmp_path):
    _, out = curve_study
    base = out / "runs" / "resnet18" / "seed1" / "baseline" / "checkpoints" / "best.pt"
    torch.set_num_threads(1)
    assert main(["prune-curve", str(base), "--methods", "lrp,weight,random", "--ratios", "0.1,0.3",
                 "--ref-seeds", "2", "--splits", "test", "--out", str(tmp_path / "c")]) == 0  # fmt: skip
    direct = pd.read_csv(tmp_path / "c" / "curve.csv")
    unit = pd.read_csv(out / "runs" / "resnet18" / "seed1" / "curve" / "curve.csv")
    cols = ["method", "ref_seed", "ratio", "filters_removed", "test_balanced_accuracy"]
    pd.testing.assert_frame_equal(unit[cols], direct[cols])


def test_a_rerun_skips_the_curve_and_other_units_keep_their_fingerprints(curve_study):
    cfg, out = curve_study
    run_study(cfg, out, progress=False)
    last = [e for e in StudyLog(out).events() if e["unit"].endswith("/curve")][-2:]
    assert [e["event"] for e in last] == ["skipped", "skipped"]
    plain = load_study_config(packaged_config("study_quick.yaml"), OVERRIDES[:1] + ["arms=[baseline]"])
    unit = Unit("resnet18", 0, "baseline")
    assert fingerprint(plain, unit, unit_config(plain, unit, out), {}) == fingerprint(
        cfg, unit, unit_config(cfg, unit, out), {})


@pytest.mark.parametrize("bad", ["curve.ref_seeds=0", "curve.ratios=[1.5]", "curve.steps=3",
                                 "curve.normalize=[max]", "curve.normalize=max", "curve.ratios=abc",
                                 "curve.splits=[val]", "curve.ref_seeds=two"])  # fmt: skip
def test_bad_curve_settings_are_refused_before_any_work(bad):
    with pytest.raises(ConfigError):
        load_study_config(packaged_config("study_quick.yaml"), OVERRIDES + [bad])


def test_a_changed_curve_setting_reruns_only_the_curve_units(tmp_path):
    cfg = load_study_config(packaged_config("study_quick.yaml"), OVERRIDES)
    more = load_study_config(packaged_config("study_quick.yaml"), OVERRIDES + ["curve.ref_seeds=3"])
    for kind, changes in (("curve", True), ("baseline", False)):
        unit = Unit("resnet18", 0, kind)
        deps = {d.key: "id" for d in unit.deps()}
        same = fingerprint(cfg, unit, unit_config(cfg, unit, tmp_path), deps) == fingerprint(
            more, unit, unit_config(more, unit, tmp_path), deps)
        assert same is not changes, kind
    assert load_study_config(packaged_config("study_quick.yaml"), OVERRIDES + ["curve.ratios=0.2"]).curve_settings().ratios == [0.2]
