"""The study's ProtoPNet trunk pruning by several criteria (`protopnet_criteria`): one unit per
criterion after the seed's ProtoPNet, and the LRP unit's fingerprint as it was without the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from protoprune.demo import packaged_config
from protoprune.errors import ConfigError
from protoprune.study import load_study_config, plan_units
from protoprune.study.units import fingerprint, unit_config

BASE = ["seeds=[0,1]", "arms=[baseline,protopnet,protopnet_filter_pruning]"]


def _units(extra: list[str]) -> list[str]:
    return [u.key for u in plan_units(load_study_config(packaged_config("study_quick.yaml"), BASE + extra))]


def test_one_trunk_pruning_unit_per_criterion_after_the_protopnet() -> None:
    keys = _units(["protopnet_criteria=[lrp,weight,taylor,random]"])
    for seed in (0, 1):
        mine = [k for k in keys if k.startswith(f"resnet18/seed{seed}/")]
        trunk = [k for k in mine if "/protopnet-filter-" in k]
        assert [k.rsplit("-", 1)[1] for k in trunk] == ["lrp", "weight", "taylor", "random"]
        assert mine.index(f"resnet18/seed{seed}/protopnet") < min(mine.index(k) for k in trunk)
    assert [k for k in _units([]) if "protopnet-filter" in k] == [
        "resnet18/seed0/protopnet-filter-lrp", "resnet18/seed1/protopnet-filter-lrp"]  # the default


def test_adding_criteria_leaves_the_lrp_units_fingerprint() -> None:
    prints = []
    for extra in ([], ["protopnet_criteria=[lrp,random]"]):
        study = load_study_config(packaged_config("study_quick.yaml"), BASE + extra)
        unit = next(u for u in plan_units(study) if u.kind == "protopnet_filter" and u.method == "lrp")
        prints.append(fingerprint(study, unit, unit_config(study, unit, Path("/unused")), {}))
    assert prints[0] == prints[1]


@pytest.mark.parametrize("bad", ["protopnet_criteria=[lrp,shapley]", "protopnet_criteria=[]",
                                 "protopnet_criteria=[lrp,lrp]", "protopnet_criteria=lrp"])  # fmt: skip
def test_bad_protopnet_criteria_are_refused(bad) -> None:
    with pytest.raises(ConfigError):
        load_study_config(packaged_config("study_quick.yaml"), BASE + [bad])
