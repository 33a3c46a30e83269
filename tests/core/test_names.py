"""One source of names: the declared names, the registries that implement them, and the config's,
CLI's and study's choices agree, and a registry refuses a name nobody declared."""

from __future__ import annotations

import pytest

import protoprune.protopnet.model  # noqa: F401  (registers the protopnet model type)
from protoprune import names
from protoprune.cli import build_parser
from protoprune.config import _CHOICES, FilterPruningConfig
from protoprune.explain.retention import RETENTION_MEASURES, retention
from protoprune.models.factory import MODEL_TYPES
from protoprune.prune.importance import CRITERIA, build_importance
from protoprune.registry import Registry
from protoprune.study.config import CRITERIA as STUDY_CRITERIA
from protoprune.train.run import TRAINERS


def test_every_declared_name_is_implemented_and_offered():
    assert set(CRITERIA) == set(names.CRITERION_NAMES)
    assert set(MODEL_TYPES) == set(TRAINERS) == set(names.MODEL_TYPE_NAMES)
    assert _CHOICES["prune_filters.method"] == names.CRITERION_NAMES == STUDY_CRITERIA
    assert _CHOICES["model.type"] == names.MODEL_TYPE_NAMES
    assert _CHOICES["prune_filters.retention_measure"] == RETENTION_MEASURES


def test_retention_computes_exactly_the_declared_measures():
    import numpy as np

    from protoprune.explain.retention import ExplanationSnapshot

    snap = ExplanationSnapshot(np.array([0]), np.array([[0, 0]]), np.array([[0]]),
                               np.random.default_rng(0).random((1, 3, 3)), np.array([0]))  # fmt: skip
    assert tuple(retention(snap, snap)) == names.RETENTION_MEASURE_NAMES


def test_the_cli_offers_the_declared_criteria():
    sub = build_parser()._subparsers._group_actions[0].choices["prune-filters"]
    (method,) = [a for a in sub._actions if "--method" in a.option_strings]
    assert tuple(method.choices) == names.CRITERION_NAMES


def test_each_criterion_builds_itself_from_the_config():
    cfg = FilterPruningConfig(normalize="reference", group_reduction="mean", norm=2,
                              lrp_output="logit", score_batchnorm="train")  # fmt: skip
    lrp = build_importance(cfg, "lrp", bounds=(-1.0, 2.0))
    # "reference": the reference's --norm per criterion (per-layer sum for lrp, L2 for taylor)
    assert (lrp.normalize, lrp.group_reduction, lrp.output) == ("sum", "mean", "logit")
    assert build_importance(cfg, "weight").p == 2
    taylor = build_importance(cfg, "taylor")
    assert (taylor.normalize, taylor.batchnorm) == ("l2", "train")
    assert build_importance(cfg, "random", seed=7).seed == 7


def test_a_registry_refuses_an_undeclared_name():
    reg: Registry[int] = Registry("thing", ("a", "b"))
    reg.register("a", 1)
    with pytest.raises(ValueError, match="declare it in protoprune.names"):
        reg.register("c", 2)
