"""Run configuration: typed dataclasses loaded from YAML, with dotted CLI overrides.

Every run is driven by one `RunConfig`; it is saved (with the package version, seed and split)
in the run folder so the run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .devices import DEVICE_FORMS, device_syntax_ok
from .errors import ConfigError, not_a_file
from .names import CRITERION_NAMES, MODEL_TYPE_NAMES, RETENTION_MEASURE_NAMES


@dataclass
class DataConfig:
    """Which data set, how it is split, sized, augmented and balanced."""

    dataset: str = "bundled"  # a name in protoprune.data.DATASETS
    root: str | None = None  # folder or file of the data set (bundled: ignored)
    image_size: int = 28
    split_ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    split_file: str | None = None  # reuse a split.csv written by an earlier run
    batch_size: int = 64
    # DataLoader worker processes; None: auto (0 on CPU, where workers compete with the model for
    # the cores; on CUDA up to 8, leaving a core to the main process), with pinned memory on CUDA
    num_workers: int | None = None
    # resized uint8 images kept between epochs: none | memory | disk (a memory-mapped file per
    # split in cache_dir, rebuilt when the files or image_size change); augmentation still per epoch
    cache: str = "none"
    cache_dir: str | None = None  # disk cache folder (None: $XDG_CACHE_HOME/protoprune/images)
    # decode each JPEG at the smallest 1/2, 1/4, 1/8 scale still >= image_size before resizing
    # (PIL draft): 2-8x fewer pixels decoded; pixels then differ slightly from a full decode
    jpeg_draft: bool = False
    balance: str = "oversample"  # none | oversample | weighted_loss (train split only)
    augment: bool = True
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    max_per_split: int | None = None  # cap each split (stratified) for quick runs
    # lesion masks for the explanation metrics, <image_id>_segmentation.png (ISIC 2018 Task 1
    # layout): auto = the data set's own folder if it ships one (HAM10000:
    # HAM10000_segmentations_lesion_tschandl/ under data.root), a folder, or none (Otsu proxy)
    masks: str | None = "auto"


@dataclass
class ModelConfig:
    """The network: a torchvision architecture, optionally wrapped as a ProtoPNet."""

    type: str = "classifier"  # classifier | protopnet
    arch: str = "resnet18"  # a name in protoprune.models.ARCHITECTURES
    small_input: bool | None = None  # 3x3 stem, no max-pool; None: auto (image_size <= 64)
    # backbone init: imagenet (torchvision's default weights), a torchvision weights name
    # (ResNet18_Weights.IMAGENET1K_V1), both from torch's hub cache, or a local state_dict path;
    # a run records the full name, and data.mean/std become the weights' own
    weights: str | None = None


@dataclass
class TrainConfig:
    """Optimisation of a plain classifier (and the fine-tuning between pruning steps)."""

    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | step | none
    step_size: int = 5
    gamma: float = 0.1
    amp: bool = True  # float16 mixed precision on CUDA
    cpu_amp: bool = False  # bfloat16 autocast for training on CPU (fast with AVX512-BF16/AMX)
    channels_last: bool = False  # NHWC weights/activations in training (faster convolutions)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch.set_num_threads on CPU
    select_metric: str = "balanced_accuracy"  # validation metric that picks the best epoch
    progress: bool = True
    # under torchrun: BatchNorm statistics over the global batch (CUDA/nccl only)
    sync_batchnorm: bool = False


@dataclass
class ProtoPNetConfig:
    """ProtoPNet architecture and its training schedule (defaults: Chen et al. 2019)."""

    prototypes_per_class: int = 10
    prototype_dim: int = 128
    prototype_size: int = 1
    add_on: str = "regular"  # regular | bottleneck
    add_on_output: str = "sigmoid"  # sigmoid | linear (the add-on's last activation)
    similarity: str = "log"  # log | cosine
    similarity_scale: float = 1.0  # similarities are multiplied by this before the last layer
    epsilon: float = 1e-4
    # phases
    # epochs that train the trunk as a plain classifier (linear head on pooled features, the
    # train section's optimiser, lr and scheduler) before the warm-up; 0 = the paper, whose trunk
    # comes ImageNet-pretrained. A trunk trained from scratch needs it: see dermamnist_protopnet.yaml
    trunk_epochs: int = 0
    # ResNet stages (layer1..layerN) the trunk keeps; None = all four (the paper). Fewer stages give
    # a finer latent grid and a smaller receptive field per cell (small-image ResNet18: 3 stages
    # give 7 x 7 cells with 53 px fields at 28 px, 2 give 14 x 14 with 25 px, all 4: 4 x 4, 109 px)
    trunk_layers: int | None = None
    warm_epochs: int = 5
    joint_epochs: int = 10
    push_start: int = 10  # epoch (counting trunk and warm-up epochs) of the first push
    push_every: int = 10
    last_layer_iterations: int = 20
    # learning rates
    warm_lr_add_on: float = 3e-3
    warm_lr_prototypes: float = 3e-3
    joint_lr_features: float = 1e-4
    joint_lr_add_on: float = 3e-3
    joint_lr_prototypes: float = 3e-3
    joint_lr_step: int = 5
    joint_lr_gamma: float = 0.1
    # when the joint StepLR steps: "start" = before each joint epoch, as the original's main.py
    # (joint epochs 1..step-1 at the full rate, the step-th at gamma times it); "end" = after it,
    # one epoch later (protoprune before this option existed)
    joint_lr_step_at: str = "start"
    last_layer_lr: float = 1e-4
    # loss coefficients
    crs_ent: float = 1.0
    clst: float = 0.8
    sep: float = -0.08
    l1: float = 1e-4
    save_push_images: bool = True
    # the push's search (and the similarity vectors cached for the last-layer stage) under
    # autocast; off: in float32, as evaluation, so a pushed prototype is exactly its source patch
    # (under CUDA float16 its float32 distance to its source was 4e-5 to 1.5e-4, emulated)
    push_amp: bool = False
    # class index of each prototype after prototype pruning (None: prototypes_per_class each)
    prototype_classes: list[int] | None = None


@dataclass
class FilterPruningConfig:
    """Explanation-guided filter pruning (Yeom et al. 2021)."""

    method: str = "lrp"  # lrp | weight | grad | taylor | random
    total_pr: float = 0.6
    pr_step: float = 0.15
    # cumulative: pr_step, 2 pr_step, ... up to total_pr (departs: the reference's step count,
    # int(int(N / int(N * pr_step)) * total_pr), stops short of total_pr, 0.6 / 0.15 at 45 %, and
    # runs no step when total_pr = pr_step); reference: that count (docs/pruning_criteria.md)
    schedule: str = "cumulative"
    epochs: int = 1  # fine-tuning epochs between steps (the cap when patience is set)
    # fine-tune each step until val balanced accuracy has not improved for this many epochs
    # (at most `epochs`), then keep the best epoch's weights; null: always `epochs` epochs
    patience: int | None = None
    finetune_batches: int | None = None  # cap each fine-tuning epoch at N batches (None: whole)
    # a ProtoPNet's repair after each step: this many joint epochs (then a push and the last-layer
    # stage), fixed, as patience does not apply there; null: `epochs`. Lets a study give the
    # classifier's fine-tuning a long cap under patience without 10 joint epochs a step
    repair_epochs: int | None = None
    finetune_lr: float | None = None  # a classifier's fine-tuning lr (None: train.lr); ProtoPNet: joint lrs
    scope: str = "global"  # global | layer
    # pruned layers keep a multiple of this many filters: CPU/GPU kernels work in blocks of 8-16
    # channels, so without it latency falls slower than MACs (1 = exact ratios)
    round_to: int = 8
    ref_per_class: int = 10
    # The defaults compute what the reference implementation computes; docs/pruning_criteria.md
    # lists each option below against it.
    ratio_unit: str = "filters"  # ratios count conv/linear filters (reference) | group channels
    normalize: str = "none"  # per-layer score normalisation: none | sum | l2 | reference (--norm)
    group_reduction: str = "sum"  # coupled layers' scores of one channel: sum | mean
    lrp_composite: str = "yeom2021"  # the reference's rules, or a zennit composite name
    lrp_output: str = "onehot"  # explained output: onehot (reference) | logit
    norm: int = 1  # weight criterion: 1 or 2
    weight_fuse_batchnorm: bool = True  # weight criterion on BN-fused filters (reference)
    score_batchnorm: str = "eval"  # grad/taylor BatchNorm statistics while scoring: eval | train
    lrp_batchnorm: str = "eval"  # LRP's forward: running statistics | train (the reference's wrapper)
    prune_linear: bool = False  # also score and remove hidden Linear units (the reference: convs only)
    # a ProtoPNet's explanation retention after each step's repair (explain.retention), on this
    # many fixed test images (0: not measured); with min_retention, pruning stops before the first
    # step whose retention_measure falls below it (the step before is the one to keep)
    retention_images: int = 32
    min_retention: float | None = None
    retention_measure: str = "topk_jaccard"


@dataclass
class PrototypePruningConfig:
    """Prototype pruning (ProtoPNet's run_pruning)."""

    k: int = 6
    threshold: int = 3
    finetune_iterations: int = 100


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    protopnet: ProtoPNetConfig = field(default_factory=ProtoPNetConfig)
    prune_filters: FilterPruningConfig = field(default_factory=FilterPruningConfig)
    prune_prototypes: PrototypePruningConfig = field(default_factory=PrototypePruningConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        validate(self)
        return self


_CHOICES = {
    "data.balance": ("none", "oversample", "weighted_loss"),
    "data.cache": ("none", "memory", "disk"),
    "model.type": MODEL_TYPE_NAMES,
    "train.optimizer": ("adam", "sgd"),
    "train.scheduler": ("cosine", "step", "none"),
    "protopnet.add_on": ("regular", "bottleneck"),
    "protopnet.similarity": ("log", "cosine"),
    "protopnet.add_on_output": ("sigmoid", "linear"),
    "protopnet.joint_lr_step_at": ("start", "end"),
    "prune_filters.method": CRITERION_NAMES,
    "prune_filters.scope": ("global", "layer"),
    "prune_filters.ratio_unit": ("filters", "channels"),
    "prune_filters.normalize": ("none", "sum", "l2", "reference"),
    "prune_filters.group_reduction": ("sum", "mean"),
    "prune_filters.lrp_output": ("onehot", "logit"),
    "prune_filters.score_batchnorm": ("eval", "train"),
    "prune_filters.lrp_batchnorm": ("eval", "train"),
    "prune_filters.schedule": ("reference", "cumulative"),
    "prune_filters.retention_measure": RETENTION_MEASURE_NAMES,
}


MAX_IMAGE_SIZE = 2048  # pixels a side; dermoscopy originals are 600 x 450 to 1024 x 768


def validate(cfg: RunConfig) -> None:
    """Reject values that would fail later or silently mean something else."""
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(
                f"config {key} = {value!r} is not one of {', '.join(choices)}",
                f"set {key} to one of: {', '.join(choices)}",
            )
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(
            f"seed = {cfg.seed} is outside 0 .. 2**32 - 1, the range every generator here takes",
            "give a seed such as 0, 1, 2",
        )
    _validate_data(cfg.data)
    _validate_train(cfg)
    _validate_protopnet(cfg)
    _validate_filter_pruning(cfg.prune_filters)
    _validate_prototype_pruning(cfg.prune_prototypes)


def _validate_data(d: DataConfig) -> None:
    if d.image_size < 8:
        raise ConfigError(f"data.image_size = {d.image_size} is too small", "use at least 8 pixels")
    if d.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"data.image_size = {d.image_size} is beyond any image this tool trains on "
            f"(at most {MAX_IMAGE_SIZE} px; one 3-channel float image would take "
            f"{3 * 4 * d.image_size**2 / 2**30:.1f} GiB)",
            "use the size the model is trained at, e.g. 28, 224",
        )
    if len(d.split_ratios) != 3 or any(r < 0 for r in d.split_ratios) or abs(sum(d.split_ratios) - 1) > 1e-6:
        raise ConfigError(
            f"data.split_ratios = {d.split_ratios} must be three non-negative numbers summing to 1",
            "for example --set data.split_ratios=[0.7,0.15,0.15]",
        )
    if len(d.mean) != 3 or len(d.std) != 3 or any(s <= 0 for s in d.std):
        raise ConfigError("data.mean and data.std need three values each (std > 0)", "fix the data section")
    if d.batch_size < 1:
        raise ConfigError(f"data.batch_size = {d.batch_size} must be >= 1", "use a positive batch size")
    if d.max_per_split is not None and d.max_per_split < 1:
        raise ConfigError(
            f"data.max_per_split = {d.max_per_split} must be >= 1",
            "give the most images a split may keep, or null for whole splits",
        )
    if d.num_workers is not None and d.num_workers < 0:
        raise ConfigError(
            f"data.num_workers = {d.num_workers} must be >= 0",
            "give a number of worker processes, or null for the device's default",
        )


def _validate_train(cfg: RunConfig) -> None:
    if cfg.train.epochs < 0 or cfg.train.lr <= 0:
        raise ConfigError("train.epochs must be >= 0 and train.lr > 0", "fix the train section")
    if cfg.model.type == "classifier" and cfg.train.epochs == 0:
        raise ConfigError(
            "train.epochs = 0: the classifier would be tested untrained and no checkpoint written",
            "set train.epochs to 1 or more",
        )
    if not device_syntax_ok(cfg.train.device):
        raise ConfigError(
            f"train.device = {cfg.train.device!r} is not a device",
            f"use {DEVICE_FORMS}",
        )


def _validate_protopnet(cfg: RunConfig) -> None:
    p = cfg.protopnet
    if p.prototypes_per_class < 1 or p.prototype_dim < 1:
        raise ConfigError(
            "protopnet.prototypes_per_class and protopnet.prototype_dim must be >= 1",
            "use positive sizes (defaults: 10 and 128)",
        )
    if min(p.trunk_epochs, p.warm_epochs, p.joint_epochs, p.last_layer_iterations) < 0 or p.push_every < 1:
        raise ConfigError(
            "protopnet epoch counts must be >= 0 and push_every >= 1", "fix the protopnet section"
        )
    if cfg.model.type == "protopnet" and p.trunk_epochs + p.warm_epochs + p.joint_epochs == 0:
        raise ConfigError(
            "protopnet.trunk_epochs + warm_epochs + joint_epochs = 0: the ProtoPNet would be "
            "tested untrained",
            "set protopnet.warm_epochs or joint_epochs to 1 or more",
        )


def _validate_filter_pruning(f: FilterPruningConfig) -> None:
    if f.round_to < 1:
        raise ConfigError(
            f"prune_filters.round_to = {f.round_to} must be >= 1", "use 8 (default), 16 or 1 (off)"
        )
    if not 0 <= f.total_pr < 1:
        raise ConfigError(
            f"prune_filters.total_pr = {f.total_pr} must be in [0, 1)",
            "give the fraction of filters to remove in total, e.g. 0.6",
        )
    if not 0 < f.pr_step <= 1:
        raise ConfigError(
            f"prune_filters.pr_step = {f.pr_step} must be in (0, 1]", "e.g. --pr-step 0.15"
        )
    if f.total_pr > 0 and f.pr_step > f.total_pr + 1e-9:
        raise ConfigError(
            f"prune_filters.pr_step = {f.pr_step} is larger than total_pr = {f.total_pr}",
            "make the step at most the total ratio",
        )
    if f.norm not in (1, 2):
        raise ConfigError(f"prune_filters.norm = {f.norm} must be 1 or 2", "use 1 (L1) or 2 (L2)")
    if f.finetune_batches is not None and f.finetune_batches < 1:
        raise ConfigError(
            f"prune_filters.finetune_batches = {f.finetune_batches} must be >= 1",
            "give a number of batches, or null for whole epochs",
        )
    if f.finetune_lr is not None and not f.finetune_lr > 0:
        raise ConfigError(
            f"prune_filters.finetune_lr = {f.finetune_lr} must be > 0",
            "give a learning rate such as 0.0001, or null to use train.lr",
        )
    if f.repair_epochs is not None and f.repair_epochs < 0:
        raise ConfigError(
            f"prune_filters.repair_epochs = {f.repair_epochs} must be >= 0",
            "give the ProtoPNet's joint epochs a pruning step (0: push and last layer only), or null for epochs",
        )
    if f.patience is not None and f.patience < 1:
        raise ConfigError(
            f"prune_filters.patience = {f.patience} must be >= 1",
            "give a number of epochs without improvement, or null for fixed epochs",
        )
    from zennit.composites import COMPOSITES  # zennit's registry names the composites

    if f.lrp_composite != "yeom2021" and f.lrp_composite not in COMPOSITES:
        raise ConfigError(
            f"unknown LRP composite {f.lrp_composite!r}",
            f"set prune_filters.lrp_composite to one of: {', '.join(sorted({'yeom2021', *COMPOSITES}))}",
        )
    if f.ref_per_class < 1 or f.epochs < 0:
        raise ConfigError("prune_filters.ref_per_class must be >= 1, epochs >= 0", "fix prune_filters")
    if f.retention_images < 0:
        raise ConfigError(f"prune_filters.retention_images = {f.retention_images} must be >= 0",
                          "give a number of test images such as 32, or 0 to skip retention")  # fmt: skip
    if f.min_retention is not None and not (0 < f.min_retention <= 1 and f.retention_images > 0):
        raise ConfigError(
            f"prune_filters.min_retention = {f.min_retention} needs a value in (0, 1] and "
            f"retention_images > 0 (it is {f.retention_images})",
            "e.g. --min-retention 0.9, or leave it null to prune every step",
        )


def _validate_prototype_pruning(q: PrototypePruningConfig) -> None:
    if q.finetune_iterations < 0:
        raise ConfigError(
            f"prune_prototypes.finetune_iterations = {q.finetune_iterations} must be >= 0",
            "give the last-layer iterations after pruning (default 100; 0: no fine-tuning)",
        )
    if q.k < 1 or q.threshold < 0 or q.threshold > q.k:
        raise ConfigError(
            f"prune_prototypes: k = {q.k}, threshold = {q.threshold}: need k >= 1 and 0 <= threshold <= k",
            "the default is k = 6 nearest patches, threshold = 3",
        )


# --- building dataclasses from plain data, with clear errors -------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config section {key!r} must be a mapping, got {value!r}", None)
        return _from_dict(tp, value, key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config {key} must be a list, got {value!r}", f"e.g. {key}=[1,2,3]")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, key) for v in value]
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads "1e-4" as a string
            number = float(value)
        except ValueError:
            raise ConfigError(f"config {key} must be a number, got {value!r}", None) from None
        if not math.isfinite(number):
            raise ConfigError(f"config {key} must be a finite number, got {value!r}", "give a real number")
        return number
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config {key} must be true or false, got {value!r}", None)
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config {key} must be an integer, got {value!r}", None)
    if tp is str and not isinstance(value, str):
        value = str(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"config {key} must be a {_type_name(tp)}, got {value!r}", None)
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {prefix}{key}", hint)
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build and validate a RunConfig; unknown keys and wrong types raise ConfigError."""
    data = dict(data or {})
    for meta in ("protoprune_version", "split"):  # written into saved configs; not settings
        data.pop(meta, None)
    return _from_dict(RunConfig, data).validate()


# the one thing to change for data kept elsewhere: the shipped configs name their files as
# ${PROTOPRUNE_DATA}/<data set>/...; unset, it is this repository's own layout
DATA_ENV = "PROTOPRUNE_DATA"
DEFAULT_DATA_DIR = "../shared/data"
_DATA_VAR = re.compile(r"\$\{" + DATA_ENV + r"\}|\$" + DATA_ENV + r"\b")


def data_dir() -> str:
    """The data folder the shipped configs read: $PROTOPRUNE_DATA, else ../shared/data."""
    return os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR


def expand_data_dir(data: Any) -> Any:
    """Every string in a raw config with ${PROTOPRUNE_DATA} replaced by data_dir()."""
    if isinstance(data, dict):
        return {k: expand_data_dir(v) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_data_dir(v) for v in data]
    if isinstance(data, str):
        return _DATA_VAR.sub(lambda _: data_dir(), data)
    return data


def data_root_fix(what: str) -> str:
    """The fix line of a data set that is not where the config says."""
    return (
        f"set data.root to {what}, or {DATA_ENV} to the folder holding your data sets (the shipped "
        f"configs read ${{{DATA_ENV}}}/<data set>/..., now {data_dir()})"
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (plain PyYAML keeps the
    last silently, so `seed: 1` then `seed: 2` would run seed 2 with no word)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"key {key!r} is given twice in one section (lines {seen[key] + 1} and "
                f"{key_node.start_mark.line + 1})",
                "keep one of them: YAML would silently use the last",
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml_mapping(path: Path, what: str, example: str) -> dict[str, Any]:
    """A YAML file's top-level mapping, refusing what is not UTF-8 text, not YAML, repeats a key
    or is not a mapping; `what` names the file in the error ("config file", "study config")."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})",
            f"give a YAML text file, e.g. {example}",
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level", f"see {example}")
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when path is None) and apply `a.b=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(not_a_file("config file", path), "give the path of a YAML file, e.g. configs/demo.yaml")
        data = read_yaml_mapping(path, "config file", "configs/demo.yaml")
    for item in overrides or []:
        apply_override(data, item)
    return config_from_dict(expand_data_dir(data))


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value` override (value parsed as YAML) to a raw config dict."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} has no '='", "write overrides as --set section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section", None)
    node[parts[-1]] = value


def save_config(cfg: RunConfig, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the config as YAML, stamped with the package version (and e.g. the split file)."""
    from . import __version__
    from .io import atomic_write_text

    data = {"protoprune_version": __version__, **cfg.to_dict(), **(extra or {})}
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
