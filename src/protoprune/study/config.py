"""The study configuration: which arms, seeds and architectures, on top of one shared RunConfig.

A study YAML holds a few study keys (seeds, archs, arms, criteria, external_test, latency
settings) and a `run:` mapping in the usual RunConfig layout (data, model, train, protopnet,
prune_filters, prune_prototypes) that every arm shares, so the arms differ only where the
comparison says they should (model type, pruning criterion).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, apply_override, config_from_dict, expand_data_dir, read_yaml_mapping
from ..errors import ConfigError, not_a_file
from ..models.backbones import ARCHITECTURES
from ..names import CRITERION_NAMES

# arm name -> what it runs (one or more units per arch x seed, see runner.plan_units)
ARMS = {
    "baseline": "the CNN trained from scratch",
    "filter_pruning": "filter pruning of the baseline, one unit per criterion",
    "protopnet": "ProtoPNet on the same backbone, then prototype pruning + last-layer fine-tuning",
    "protopnet_filter_pruning": "filter pruning of the ProtoPNet backbone (protopnet_criteria, LRP by default), "
                                "re-push, last-layer stage",
    "pruning_curve": "the baseline's no-fine-tune pruning curve (prune-curve): every criterion, one-shot cuts",
}
CRITERIA = CRITERION_NAMES  # the registry's names (prune.importance.CRITERIA)
# the pruning_curve arm's settings (study key `curve`): those of `protoprune prune-curve`
CURVE_DEFAULTS = {"ratios": [0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6], "ref_seeds": 2,
                  "normalize": ["none", "reference"], "splits": ["test"], "bn_recalibrate": False}  # fmt: skip


@dataclass
class StudyConfig:
    """One comparison study: every listed arm, for every architecture and seed."""

    name: str = "study"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    archs: list[str] = field(default_factory=lambda: ["resnet18"])
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    criteria: list[str] = field(default_factory=lambda: list(CRITERIA))
    # the criteria that prune the ProtoPNet's trunk (protopnet_filter_pruning arm): LRP alone by
    # default; add weight, taylor and random to ask whether LRP keeps the explanations better
    protopnet_criteria: list[str] = field(default_factory=lambda: ["lrp"])
    external_test: str | None = None  # ISIC 2018 Task 3 folder, evaluated for every final model
    min_prototypes_per_class: int = 0  # prune_prototypes' min_per_class safeguard
    latency_batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    latency_repeats: int = 20
    # test images per prototype in a ProtoPNet arm's explanation metrics (deletion curves, PRP
    # sanity pairs): their cost grows with it; the quick study's test uses 1
    explanation_images: int = 3
    curve: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(CURVE_DEFAULTS))
    run: dict[str, Any] = field(default_factory=dict)  # RunConfig mapping shared by all arms

    def base_config(self) -> RunConfig:
        """The shared RunConfig (validated)."""
        return config_from_dict(copy.deepcopy(self.run))

    def curve_settings(self):
        """The pruning_curve arm's CurveSettings: the study's criteria, the `curve` settings."""
        from ..prune.curve import CurveSettings, parse_ratios

        c = self.curve

        def items(v) -> list:  # a scalar or a comma-separated string is one list
            return [x.strip() for x in v.split(",")] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else [v]

        try:
            ref_seeds = int(c["ref_seeds"])
        except (TypeError, ValueError):
            raise ConfigError(f"curve.ref_seeds = {c['ref_seeds']!r} must be an integer", "e.g. 2") from None
        return CurveSettings(methods=tuple(self.criteria), ratios=parse_ratios(",".join(map(str, items(c["ratios"])))),
                             ref_seeds=ref_seeds, normalizations=tuple(items(c["normalize"])),
                             bn_recalibrate=bool(c["bn_recalibrate"]), splits=tuple(items(c["splits"])))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(cfg: StudyConfig) -> StudyConfig:
    if any(not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**32 for s in cfg.seeds):
        raise ConfigError(f"seeds = {cfg.seeds}: each seed must be an integer in 0 .. 2**32 - 1",
                          "e.g. seeds: [0, 1, 2]")  # fmt: skip
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds = {cfg.seeds} must be a non-empty list of distinct integers",
                          "e.g. seeds: [0, 1, 2]")  # fmt: skip
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in cfg.seeds):
        raise ConfigError(f"seeds = {cfg.seeds} must be integers", "e.g. seeds: [0, 1, 2]")
    for arch in cfg.archs:
        ARCHITECTURES.get(arch)  # unknown names raise a ConfigError listing the valid ones
    if not cfg.archs:
        raise ConfigError(
            "archs is empty", "list at least one architecture, e.g. archs: [resnet18]"
        )
    for arm in cfg.arms:
        if arm not in ARMS:
            close = difflib.get_close_matches(arm, list(ARMS), n=1)
            raise ConfigError(
                f"unknown study arm {arm!r}",
                (f"did you mean {close[0]!r}? " if close else "") + f"arms are: {', '.join(ARMS)}",
            )
    if "baseline" not in cfg.arms and cfg.arms:
        raise ConfigError(
            "the study arms do not include 'baseline'",
            "add baseline: every other arm reuses its split and is compared with it",
        )
    bad = [c for c in cfg.criteria if c not in CRITERIA]
    if bad or ("filter_pruning" in cfg.arms and not cfg.criteria):
        raise ConfigError(
            f"criteria = {cfg.criteria} must be a non-empty subset of {', '.join(CRITERIA)}",
            "e.g. criteria: [lrp, weight, grad, taylor]",
        )
    bad = [c for c in cfg.protopnet_criteria if c not in CRITERIA]
    if bad or not cfg.protopnet_criteria or len(set(cfg.protopnet_criteria)) < len(cfg.protopnet_criteria):
        raise ConfigError(
            f"protopnet_criteria = {cfg.protopnet_criteria} must be a non-empty subset of {', '.join(CRITERIA)}",
            "e.g. protopnet_criteria: [lrp, weight, taylor, random]",
        )
    unknown = set(cfg.curve) - set(CURVE_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown curve setting(s) {sorted(unknown)}",
                          f"the curve section takes: {', '.join(CURVE_DEFAULTS)}")  # fmt: skip
    if "pruning_curve" in cfg.arms:
        if not cfg.criteria:
            raise ConfigError("the pruning_curve arm needs criteria", "e.g. criteria: [lrp, weight, random]")
        cfg.curve_settings().check()
    if any(b < 1 for b in cfg.latency_batch_sizes) or cfg.latency_repeats < 1:
        raise ConfigError(
            "latency_batch_sizes must be positive and latency_repeats >= 1",
            "e.g. latency_batch_sizes: [1, 32], latency_repeats: 20 (an empty list skips latency)",
        )
    if cfg.min_prototypes_per_class < 0:
        raise ConfigError("min_prototypes_per_class must be >= 0", "use 0 to disable the safeguard")
    if cfg.explanation_images < 1:
        raise ConfigError("explanation_images must be >= 1", "e.g. explanation_images: 3 (the default)")
    base = cfg.base_config()  # validates the shared run section (unknown keys, types, choices)
    if base.model.type != "classifier":
        raise ConfigError(
            f"run.model.type = {base.model.type!r}: the study sets the model type per arm",
            "leave run.model.type at classifier (the protopnet arm switches it)",
        )
    return cfg


def study_from_dict(data: dict[str, Any] | None) -> StudyConfig:
    """Build and validate a StudyConfig; unknown keys raise a ConfigError with a suggestion."""
    data = dict(data or {})
    names = [f.name for f in dataclasses.fields(StudyConfig)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            raise ConfigError(
                f"unknown study config key {key!r}",
                f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(names)}",
            )
    if isinstance(data.get("curve"), dict):  # given keys replace the defaults, the rest stay
        data["curve"] = {**CURVE_DEFAULTS, **data["curve"]}
    elif "curve" in data:
        raise ConfigError(f"study key curve must be a mapping, got {data['curve']!r}",
                          "e.g. curve: {ref_seeds: 3, normalize: [none, reference]}")  # fmt: skip
    if data.get("external_test") is not None:
        data["external_test"] = str(data["external_test"])
    if not isinstance(data.get("run", {}), dict):
        raise ConfigError(
            "the study's run section must be a mapping", "see configs/study_quick.yaml"
        )
    for key in ("seeds", "archs", "arms", "criteria", "protopnet_criteria", "latency_batch_sizes"):
        if key in data and not isinstance(data[key], list):
            raise ConfigError(
                f"study key {key} must be a list, got {data[key]!r}", f"e.g. {key}: [...]"
            )
    return _check(StudyConfig(**data))


def load_study_config(
    source: str | Path | StudyConfig | dict | None, overrides: list[str] | None = None
) -> StudyConfig:
    """A StudyConfig from a YAML file, a mapping or an object, with `key=value` overrides.

    Overrides use the dotted syntax of `--set`: `seeds=[0,1]`, `run.train.epochs=2`.
    """
    if isinstance(source, StudyConfig):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
    elif source is None:
        data = {}
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(
                not_a_file("study config", path),
                "give a study YAML, e.g. configs/study_quick.yaml",
            )
        data = read_yaml_mapping(path, "study config", "configs/study_quick.yaml")
    for item in overrides or []:
        apply_override(data, item)
    return study_from_dict(expand_data_dir(data))
