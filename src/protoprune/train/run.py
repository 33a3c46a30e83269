"""A training run end to end: folder, seed, split, model, training, final test metrics, figures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import distributed
from ..config import RunConfig, save_config
from ..data import build_loaders, build_splits
from ..data.loaders import Loaders, check_class_coverage, loader_settings
from ..errors import CheckpointError, ConfigError, Interrupted
from ..figures import plot_confusion_matrix, plot_training_curves
from ..io import atomic_write_json, atomic_write_text, check_run_dir, prepare_run_dir
from ..metrics import metrics_markdown
from ..models.factory import build_model, small_input
from ..models.pretrained import resolve_pretrained
from ..names import MODEL_TYPE_NAMES
from ..registry import Registry
from ..seed import set_seed
from .checkpoint import (
    checkpoint_config,
    checkpoint_finished,
    finish_checkpoint,
    load_checkpoint,
    load_state,
    model_from_checkpoint,
    require_protopnet,
    require_same_classes,
)
from .evaluate import evaluate_model
from .loop import fit

log = logging.getLogger(__name__)


def default_run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def prepare_data(cfg: RunConfig, run_dir: Path | None = None) -> tuple[Loaders, object]:
    """Seeded split + loaders; the split is written to `run_dir/split.csv` so it can be repeated."""
    generator = set_seed(cfg.seed)
    splits = build_splits(cfg.data, cfg.seed)
    if run_dir is not None:
        atomic_write_text(run_dir / "split.csv", splits.split_table().to_csv(index=False))
    return build_loaders(splits, cfg.data, generator, seed=cfg.seed, device=cfg.train.device), splits


@dataclass
class CheckpointSource:
    """One way in from a checkpoint for every command: the checkpoint and the config it runs under
    (its own, or the caller's), then its data and its model, each when the command needs it (so
    that a command checks its arguments and output folder before the data is read)."""

    ckpt: dict[str, Any]
    cfg: RunConfig

    @property
    def path(self) -> Path:
        return Path(self.ckpt["path"])

    def data(self, action: str | None = None, run_dir: Path | None = None) -> tuple[Loaders, object]:
        """The seeded split and loaders (`prepare_data`); with `action` (what the user is doing,
        for the message), refused when their classes are not the checkpoint's."""
        loaders, splits = prepare_data(self.cfg, run_dir)
        if action is not None:
            require_same_classes(self.ckpt, loaders.class_names, action)
        return loaders, splits

    def model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The model as trained (a pruned one rebuilt at its narrower shapes), in eval mode."""
        return model_from_checkpoint(self.ckpt).to(device)


def open_checkpoint(checkpoint: str | Path | dict, cfg: RunConfig | None = None, *,
                    protopnet: bool = False) -> CheckpointSource:  # fmt: skip
    """Load `checkpoint` (a path, a run folder or a loaded dict) with `cfg` (default: its own);
    `protopnet`: refuse any other model type."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if protopnet:
        require_protopnet(ckpt)
    return CheckpointSource(ckpt, cfg if cfg is not None else checkpoint_config(ckpt))


def write_metrics(run_dir: Path, results: dict[str, dict], title: str, class_names: list[str]) -> None:
    """metrics.json, metrics.md and a confusion-matrix PNG per evaluated split."""
    atomic_write_json(run_dir / "metrics.json", results)
    evaluated = {k: v for k, v in results.items() if isinstance(v, dict) and "confusion_matrix" in v}
    atomic_write_text(run_dir / "metrics.md", metrics_markdown(evaluated, title))
    for name, m in evaluated.items():
        suffix = "" if name == "test" else f"_{name}"
        plot_confusion_matrix(m["confusion_matrix"], class_names, run_dir / f"confusion_matrix{suffix}.png", f"Confusion matrix ({name})")


def run_training(cfg: RunConfig, run_dir: str | Path | None = None, force: bool = False, resume: bool = False) -> dict:
    """Train the configured model in `run_dir`; returns the final metrics (val and test).

    Model selection uses validation only; the test split is evaluated once, with the selected model.
    Under torchrun every rank runs this; rank 0 alone writes the run folder (shared by all ranks
    for --resume across nodes), the others wait for it at barriers.
    """
    device = distributed.init_distributed(cfg.train.device)  # a no-op without torchrun
    # everything that can fail on bad input (folder, config, data, model) is checked before the
    # run folder is touched, so a failed start never leaves a half-made or moved-aside folder
    run_dir = check_run_dir(
        run_dir or default_run_dir(cfg), force=force, resume=resume, resumable=True
    )
    cfg = resolve_pretrained(cfg)  # torchvision weights: cached (or a clear error) and recorded
    if resume:
        _check_resume_config(cfg, run_dir)
        _check_not_finished(run_dir)
    distributed.barrier()  # every rank has checked the folder before rank 0 changes it
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    loaders, splits = prepare_data(cfg)
    check_class_coverage(splits)
    class_names = loaders.class_names
    model = build_model(cfg, len(class_names))
    check_input_size(model, cfg)
    distributed.seed_ranks(cfg.seed, generator=loaders.generator)  # own augmentations per rank
    if distributed.is_main():
        run_dir = prepare_run_dir(run_dir, force=force, resume=resume, resumable=True)
        save_config(cfg, run_dir / "config.yaml", {"split": "split.csv"})
        atomic_write_text(run_dir / "split.csv", splits.split_table().to_csv(index=False))
    distributed.barrier()
    log.info("%s: %s on %s (%s), %d train / %d val / %d test images, device %s", cfg.name, cfg.model.arch,
             cfg.data.dataset, splits.description, len(splits.train), len(splits.val), len(splits.test), device)
    t0 = time.perf_counter()
    try:
        results = _train(model, loaders, cfg, run_dir, device, resume)
    except BaseException as exc:
        cleared = distributed.is_main() and remove_unstarted(run_dir)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(interrupt_advice(run_dir, cleared)) from None
        raise
    results["train_seconds"] = time.perf_counter() - t0
    history = run_dir / "history.csv"
    if distributed.is_main():
        if history.is_file():
            plot_training_curves(pd.read_csv(history), run_dir / "training_curves.png")
        write_metrics(run_dir, results, f"{cfg.name}: {cfg.model.type} {cfg.model.arch}", class_names)
        if (run_dir / "checkpoints" / "last.pt").is_file():
            finish_checkpoint(run_dir / "checkpoints" / "last.pt")
    distributed.barrier()
    log.info("test: accuracy %.4f, balanced accuracy %.4f -> %s", results["test"]["accuracy"],
             results["test"]["balanced_accuracy"], run_dir)
    return results


STARTUP_FILES = ("config.yaml", "split.csv")  # what a run writes before its first epoch


def remove_unstarted(run_dir: Path) -> bool:
    """After a failure before any checkpoint: remove the start-up files this run wrote, and the
    folder once empty, so the same command can simply be rerun (no --force, nothing moved
    aside). A folder with anything else in it is left as it is. True if it was removed."""
    ckpts = run_dir / "checkpoints"
    if not run_dir.is_dir() or (ckpts.is_dir() and any(ckpts.iterdir())):
        return False
    for name in STARTUP_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if ckpts.is_dir():
        ckpts.rmdir()
    if any(run_dir.iterdir()):
        return False
    run_dir.rmdir()
    return True


def interrupt_advice(run_dir: Path, cleared: bool = False) -> str:
    """What to do after Ctrl-C in training: resume from last.pt, or start over when none exists."""
    if cleared:
        return f"no epoch had finished, so nothing was kept ({run_dir} removed); rerun the same command"
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        return (
            f"{last} holds the last finished epoch or stage; rerun the same command with --resume "
            f"--out {run_dir} to continue from it"
        )
    return (
        f"no epoch had finished, so no checkpoint was written; rerun with --force --out {run_dir} "
        "to start over"
    )


def _train(model, loaders: Loaders, cfg: RunConfig, run_dir: Path, device, resume: bool) -> dict:
    """The training proper (ProtoPNet stages, or epochs of a classifier) and its test metrics."""
    return TRAINERS.get(cfg.model.type)(model, loaders, cfg, run_dir, device, resume)


# by model.type; ProtoPNet's trainer registers itself in protopnet.training, a layer above
TRAINERS: Registry[Callable[..., dict]] = Registry("trainer", MODEL_TYPE_NAMES, plugins=("protoprune.protopnet.training",))


@TRAINERS.register("classifier")
def _train_classifier(model, loaders: Loaders, cfg: RunConfig, run_dir: Path, device, resume: bool) -> dict:
    out = fit(model, loaders, cfg, run_dir, resume=resume, device=device)
    test = evaluate_model(model, loaders.test, loaders.class_names, device)
    return {"val": out["val"], "test": test, "best_epoch": out["best_epoch"]}


def check_input_size(model: torch.nn.Module, cfg: RunConfig) -> None:
    """One forward pass on a blank image, so a too-small data.image_size fails now, clearly.

    Each architecture shrinks the image by its own factor (VGG: 32, ResNet: 32 with the standard
    stem); below that a pooling layer gets an empty input and torch fails mid-training with a
    message about kernel sizes. Eval mode and no_grad: no random numbers or statistics change.
    """
    size = cfg.data.image_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except RuntimeError as exc:
        raise ConfigError(
            f"data.image_size = {size} is too small for {cfg.model.type} {cfg.model.arch} "
            f"(small_input={small_input(cfg)}): {str(exc).splitlines()[0]}",
            "use a larger data.image_size (e.g. 28 with model.small_input=true, 224 otherwise), "
            "or model.small_input=true, or a smaller protopnet.prototype_size",
        ) from None
    finally:
        model.train(was_training)


def _check_not_finished(run_dir: Path) -> None:
    """An ended run's last.pt has no optimiser state left (finish_checkpoint): nothing resumes."""
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file() and checkpoint_finished(last):
        raise CheckpointError(
            f"cannot resume {run_dir}: the run has finished (its metrics.json is written)",
            "train further in a new run folder (e.g. model.weights: its checkpoints/best.pt), or "
            "pass --force instead of --resume to train it again (the old folder is kept as .old-N)",
        )


def _check_resume_config(cfg: RunConfig, run_dir: Path) -> None:
    """Resuming with another config would silently mix two experiments: refuse."""
    import yaml

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    old = yaml.safe_load(saved.read_text())
    new = cfg.to_dict()
    diff = [
        f"{section}.{key}"
        for section in ("data", "model", "protopnet")
        for key in new[section]
        if old.get(section, {}).get(key) != new[section][key]
    ] + (["seed"] if old.get("seed") != cfg.seed else [])
    if diff:
        raise CheckpointError(
            f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(diff)}",
            f"resume with the saved config ({saved}) or start a new run folder",
        )


def evaluate_checkpoint(
    checkpoint: str | Path, cfg: RunConfig | None = None, split: str = "test", device: str = "auto"
) -> dict:
    """Metrics of a saved model on a split of its own data set (or of `cfg`'s data set)."""
    from .checkpoint import checkpoint_config, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    data_cfg = cfg if cfg is not None else checkpoint_config(ckpt)
    dev = distributed.resolve_device(device)  # under torchrun: before the loaders, so they shard
    loaders, _ = prepare_data(data_cfg)
    require_same_classes(ckpt, loaders.class_names, "evaluate")
    return evaluate_model(model.to(dev), getattr(loaders, split), ckpt["class_names"], dev)


def evaluate_external_isic2018(checkpoint: str | Path, root: str | Path, device: str = "auto") -> dict:
    """Metrics of a saved model on every image of an ISIC 2018 Task 3 folder (an external test set:
    other patients than HAM10000), each resized to the model's input size and normalised as in training."""
    from torch.utils.data import DataLoader, DistributedSampler

    from ..data.isic2018 import load_isic2018
    from ..data.transforms import build_transform
    from .checkpoint import checkpoint_config, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt)
    data = load_isic2018(root).with_transform(
        build_transform(cfg.data.image_size, cfg.data.mean, cfg.data.std, train=False)
    )
    if list(data.class_names) != list(ckpt["class_names"]):
        raise CheckpointError(
            f"the model's classes {ckpt['class_names']} differ from ISIC 2018's {data.class_names}",
            "evaluate a model trained on HAM10000-class data (DermaMNIST, HAM10000)",
        )
    dev = distributed.resolve_device(device)
    sampler = DistributedSampler(data, shuffle=False) if distributed.is_distributed() else None
    loader = DataLoader(data, batch_size=cfg.data.batch_size, shuffle=False, sampler=sampler,
                        num_workers=loader_settings(cfg.data, dev)["num_workers"])  # fmt: skip
    return evaluate_model(model_from_checkpoint(ckpt).to(dev), loader, ckpt["class_names"], dev)


__all__ = ["run_training", "evaluate_checkpoint", "evaluate_external_isic2018", "prepare_data", "write_metrics", "load_state"]
