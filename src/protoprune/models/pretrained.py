"""Pretrained backbones as torchvision users name them, from torch's hub cache.

`model.weights` is `imagenet` (the architecture's default torchvision weights, torchvision's
`DEFAULT`), a weights name (`ResNet18_Weights.IMAGENET1K_V1`, or `IMAGENET1K_V1` for the
configured architecture) or a local state_dict file. Names resolve through torchvision's weights
API; the file lives in torch's hub cache (`$TORCH_HOME/hub/checkpoints`, as torchvision keeps
it). It is downloaded when missing and the network is reachable; otherwise a ConfigError names
the file and the folder to put it in, before any data is read or a run folder is made.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from ..config import RunConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_NAMES = ("imagenet", "default")  # case-insensitive: the architecture's DEFAULT weights


def weights_name(weights: WeightsEnum) -> str:
    """The full torchvision name, e.g. ResNet18_Weights.IMAGENET1K_V1 (what a run records)."""
    return f"{type(weights).__name__}.{weights.name}"


def torchvision_weights(arch: str, spec: str | os.PathLike | None) -> WeightsEnum | None:
    """The torchvision weights `spec` names for `arch`; None when `spec` is empty or a path.

    Names win over files: a state_dict file called `imagenet` is given as `./imagenet`.
    """
    if spec is None or not isinstance(spec, str):
        return None
    try:
        enum = tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        return None  # not a torchvision builder: only paths
    if spec.lower() in DEFAULT_NAMES:
        return enum.DEFAULT
    if spec in enum.__members__:
        return enum[spec]
    if "_Weights." not in spec:
        return None
    available = ", ".join(weights_name(w) for w in enum)
    try:
        weights = tvm.get_weight(spec)
    except (ValueError, KeyError):
        raise ConfigError(
            f"model.weights = {spec!r} is not a torchvision weights name",
            f"use imagenet or one of {available} (or a local state_dict file)",
        ) from None
    if type(weights) is not enum:
        raise ConfigError(
            f"model.weights = {spec!r} are weights of another architecture than {arch!r}",
            f"use imagenet or one of {available}, or set model.arch to match",
        )
    return weights


def cached_file(weights: WeightsEnum) -> Path:
    """Where torch's hub keeps the weights file: <torch.hub.get_dir()>/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def ensure_cached(weights: WeightsEnum, progress: bool = True) -> Path:
    """The cached weights file, downloaded first if missing (hash-checked, as torchvision does).

    Offline and not cached: a ConfigError with the URL, the file name and the folder.
    """
    path = cached_file(weights)
    if path.is_file():
        return path
    log.info("downloading %s to %s", weights.url, path)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            weights.url, str(path), match.group(1) if match else None, progress=progress
        )
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"model.weights {weights_name(weights)}: {path.name} is not in torch's hub cache "
            f"({path.parent}) and cannot be downloaded from {weights.url} ({reason})",
            f"download {weights.url} elsewhere and copy it to {path} (TORCH_HOME moves the cache "
            "folder), or set model.weights to a local state_dict file",
        ) from None
    return path


def weights_normalization(weights: WeightsEnum) -> tuple[list[float], list[float]]:
    """Mean and std of the weights' own preprocessing (`weights.transforms()`)."""
    transform = weights.transforms()
    return [float(m) for m in transform.mean], [float(s) for s in transform.std]


def resolve_pretrained(cfg: RunConfig) -> RunConfig:
    """`cfg` with torchvision weights made definite: the full weights name in model.weights and
    the weights' mean/std in data.mean/std (a copy; `cfg` itself is returned when unchanged).

    The weights file is fetched into the cache now (or the offline error raised), so a run
    fails before any long work rather than when the model is built.
    """
    weights = torchvision_weights(cfg.model.arch, cfg.model.weights)
    if weights is None:
        return cfg
    ensure_cached(weights, progress=cfg.train.progress)
    out = copy.deepcopy(cfg)
    out.model.weights = weights_name(weights)
    mean, std = weights_normalization(weights)
    if [float(m) for m in cfg.data.mean] != mean or [float(s) for s in cfg.data.std] != std:
        log.warning("data.mean/std %s/%s replaced by those of %s: %s/%s", cfg.data.mean,
                    cfg.data.std, out.model.weights, mean, std)  # fmt: skip
    out.data.mean, out.data.std = mean, std
    return out.validate()
