"""Checkpoints: state_dict + config + class names + version, safe to load with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..config import RunConfig, apply_override, config_from_dict
from ..errors import CheckpointError, ProtopruneError
from ..io import atomic_torch_save

FORMAT_VERSION = 1
# the separate file format of pruned classifiers before every pruned model became a regular
# checkpoint with `pruned_filters: True`; such files still load (`_from_legacy_pruned`)
LEGACY_PRUNED_FORMAT = "protoprune-pruned-classifier"


def save_checkpoint(path: str | Path, model: nn.Module, cfg: RunConfig, class_names: list[str], **extra: Any) -> Path:
    """Write a checkpoint atomically; `extra` holds plain data (epoch, phase, optimizer state, ...)."""
    ckpt = {
        "format_version": FORMAT_VERSION,
        "protoprune_version": __version__,
        "model_type": cfg.model.type,
        "arch": cfg.model.arch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "class_names": list(class_names),
        **extra,
    }
    return atomic_torch_save(ckpt, path)


# what only resuming reads: dropped from last.pt once its run has ended (two thirds of the file;
# Adam keeps two tensors per weight)
RESUME_ONLY = ("optimizer", "optimizers", "scheduler", "scaler")


def finish_checkpoint(path: str | Path) -> Path:
    """Mark the last.pt of an ended run finished and drop its optimiser state.

    The final weights, history, progress and random states stay (reports and the resume tests
    compare them); only the state nothing reads after the last epoch goes.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in RESUME_ONLY:
        ckpt.pop(key, None)
    ckpt["finished"] = True
    return atomic_torch_save(ckpt, path)


def checkpoint_finished(path: str | Path) -> bool:
    """Whether `path` is the last.pt of an ended run (finish_checkpoint): nothing resumes from it."""
    return bool(load_checkpoint(path).get("finished"))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a protoprune checkpoint with weights_only=True (no pickled code is ever executed)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "best.pt"):
            if candidate.is_file():
                path = candidate
                break
    if not path.is_file():
        raise CheckpointError(
            f"folder {path} holds no checkpoints/best.pt (not a finished run folder)"
            if path.is_dir()
            else f"checkpoint {path} does not exist",
            "give a .pt file written by protoprune (e.g. runs/<name>/checkpoints/best.pt) or its run folder",
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise CheckpointError(
            f"cannot load checkpoint {path}: {str(exc).splitlines()[0]}",
            "the file is truncated, corrupt or not a protoprune checkpoint (only weights-only files load)",
        ) from None
    if isinstance(ckpt, dict) and ckpt.get("format") == LEGACY_PRUNED_FORMAT:
        ckpt = _from_legacy_pruned(ckpt, path)
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a protoprune checkpoint (no format_version/state_dict)",
            "train a model with `protoprune train`, or import a plain state_dict with model.weights: PATH",
        )
    if ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt['format_version']}, newer than this protoprune "
            f"{__version__} reads ({FORMAT_VERSION})",
            "upgrade protoprune to the version that wrote it "
            f"({ckpt.get('protoprune_version', 'unknown')})",
        )
    ckpt["path"] = str(path)
    return ckpt


def _from_legacy_pruned(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A pruned classifier in the old separate format, as the regular checkpoint it now is."""
    if "config" not in data:  # the oldest files: no config to rebuild the model from
        raise CheckpointError(
            f"{path} is a pruned classifier written before pruned models recorded their config",
            "rerun prune-filters on its source checkpoint to write a current file",
        )
    extra = {k: v for k, v in data.items() if k not in ("format", "num_classes", "small_input")}
    names = list(data.get("class_names") or [str(c) for c in range(int(data["num_classes"]))])
    return {**extra, "class_names": names, "format_version": 1, "model_type": "classifier",
            "pruned_filters": True, "stage": "prune_filters"}  # fmt: skip


def checkpoint_config(ckpt: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """The config a checkpoint was trained with, with `section.key=value` overrides applied."""
    try:
        cfg = config_from_dict(ckpt["config"])
    except ProtopruneError as exc:
        raise CheckpointError(f"the config stored in {ckpt.get('path')} is invalid: {exc.problem}", exc.fix) from None
    if not overrides:
        return cfg
    data = cfg.to_dict()
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


def load_state(model: nn.Module, ckpt: dict[str, Any]) -> nn.Module:
    """Load a checkpoint's weights, failing with a clear message when architectures differ."""
    state = ckpt["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            details.append(f"{len(shape)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(
            f"checkpoint {ckpt.get('path', '')} ({ckpt.get('model_type')}/{ckpt.get('arch')}, "
            f"{len(ckpt.get('class_names', []))} classes) does not fit this model: " + "; ".join(details),
            "load it with the architecture, model type, class count and input variant it was trained with "
            "(model_from_checkpoint rebuilds it from the stored config)",
        )
    model.load_state_dict(state)
    return model


def model_from_checkpoint(ckpt: dict[str, Any] | str | Path) -> nn.Module:
    """Rebuild the model a checkpoint was trained as and load its weights (eval mode)."""
    from ..models.factory import build_model

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = checkpoint_config(ckpt)
    cfg.model.weights = None  # the checkpoint holds all weights; do not read the init file again
    model = build_model(cfg, len(ckpt["class_names"]))
    if ckpt.get("pruned_filters"):  # a trunk narrowed by prune-filters: resize layers to the saved shapes
        from ..models.resize import resize_to_state_dict

        resize_to_state_dict(model, ckpt["state_dict"])
    return load_state(model, ckpt).eval()


def require_protopnet(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint, or a clear error when it holds another model type than a ProtoPNet."""
    if ckpt.get("model_type") != "protopnet":
        raise CheckpointError(
            f"{ckpt.get('path')} holds a {ckpt.get('model_type')!r} model, not a ProtoPNet",
            "give a checkpoint of a run trained with model.type: protopnet",
        )
    return ckpt


def require_same_classes(ckpt: dict[str, Any], class_names: list[str], action: str) -> None:
    """Refuse data whose classes are not the checkpoint's (`action`: what the user tried)."""
    if list(class_names) != list(ckpt["class_names"]):
        raise CheckpointError(
            f"checkpoint classes {ckpt['class_names']} differ from the data's {class_names}",
            f"{action} with the data set the model was trained on (--data-root / --set data.dataset=...)",
        )


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint: the parent of `checkpoints/`, else the file's folder."""
    ckpt_path = Path(ckpt_path)
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
