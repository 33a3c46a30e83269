"""Catalogue of bad inputs: each gives a ProtopruneError naming the problem and its fix, and the
failing call writes, overwrites or moves nothing (the whole tmp folder is compared byte for byte).

Policy on classes missing from a split: a class with no TRAIN images is an error for training
(its output unit would never be trained yet be scored); a class missing from val/test is a loud
warning only (the run is sound, only that class's metrics are undefined).
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from protoprune.cli import main
from protoprune.config import load_config
from protoprune.data import build_splits
from protoprune.data.base import FileImageDataset, open_rgb
from protoprune.data.registry import bundled_path
from protoprune.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    OutputExistsError,
    ProtopruneError,
)
from protoprune.models.backbones import build_classifier
from protoprune.models.factory import build_model
from protoprune.train.checkpoint import FORMAT_VERSION, load_checkpoint, load_state, save_checkpoint
from protoprune.train.run import run_training
from tests.conftest import tiny_overrides

HAM = bundled_path("ham10000")
NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


# --- helpers that build the bad inputs -----------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders): a failed call must not change it."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def jpeg_bytes(size=(32, 24), color=(200, 80, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def ham_copy(tmp: Path) -> Path:
    """The bundled 21-image HAM10000 folder, copied so its metadata can be broken."""
    return Path(shutil.copytree(HAM, tmp / "ham"))


def edit_metadata(root: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = root / "HAM10000_metadata.csv"
    edit(pd.read_csv(path)).to_csv(path, index=False)


def ham_cfg(root: Path, *extra: str):
    return load_config(
        None, tiny_overrides(**{"data.dataset": "ham10000", "data.root": str(root)}) + list(extra)
    )


def existing_run(tmp: Path) -> Path:
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text('{"test": {"accuracy": 0.9}}')
    (run / "checkpoints" / "best.pt").write_bytes(b"weights of an earlier run")
    return run


@functools.cache
def _checkpoint_bytes() -> bytes:
    """One untrained resnet18 checkpoint for all cases (building and saving 11M weights is slow)."""
    cfg = load_config(None)
    with tempfile.TemporaryDirectory() as tmp:
        return save_checkpoint(Path(tmp) / "c.pt", build_model(cfg, 7), cfg, NAMES).read_bytes()


def small_checkpoint(tmp: Path) -> Path:
    path = tmp / "resnet18-7.pt"
    path.write_bytes(_checkpoint_bytes())
    return path


# --- the cases: setup(tmp) -> the failing call ---------------------------------------------------


def corrupt_jpeg(tmp):
    (tmp / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return lambda: open_rgb(tmp / "bad.jpg")


def truncated_jpeg(tmp):
    (tmp / "half.jpg").write_bytes(jpeg_bytes()[:300])
    return lambda: open_rgb(tmp / "half.jpg")


def missing_image(tmp):
    ds = FileImageDataset([tmp / "ISIC_0000000.jpg"], [0], NAMES)
    return lambda: ds[0]


def image_path_is_folder(tmp):
    (tmp / "ISIC_0000001.jpg").mkdir()
    ds = FileImageDataset([tmp / "ISIC_0000001.jpg"], [0], NAMES)
    return lambda: ds.load_image(0)


def empty_imagefolder(tmp):
    (tmp / "images").mkdir()
    cfg = load_config(None, ["data.dataset=imagefolder", f"data.root={tmp / 'images'}"])
    return lambda: build_splits(cfg.data, 0)


def imagefolder_class_without_images(tmp):
    for cls in ("benign", "malignant"):
        (tmp / "images" / cls).mkdir(parents=True)
    (tmp / "images" / "benign" / "a.jpg").write_bytes(jpeg_bytes())
    cfg = load_config(None, ["data.dataset=imagefolder", f"data.root={tmp / 'images'}"])
    return lambda: build_splits(cfg.data, 0)


def metadata_missing_column(tmp):
    root = ham_copy(tmp)
    edit_metadata(root, lambda df: df.drop(columns=["dx"]))
    cfg = ham_cfg(root)
    return lambda: build_splits(cfg.data, 0)


def unknown_dx_label(tmp):
    root = ham_copy(tmp)
    edit_metadata(root, lambda df: df.assign(dx=df["dx"].replace("nv", "naevus")))
    cfg = ham_cfg(root)
    return lambda: build_splits(cfg.data, 0)


def duplicate_image_ids(tmp):
    root = ham_copy(tmp)
    edit_metadata(root, lambda df: pd.concat([df, df.iloc[[3]]], ignore_index=True))
    cfg = ham_cfg(root)
    return lambda: build_splits(cfg.data, 0)


def class_absent_from_train(tmp):
    """A split file that sends every vasc image to test: training must refuse."""
    meta = pd.read_csv(HAM / "HAM10000_metadata.csv")
    split = meta[["image_id", "dx"]].assign(
        split=["test" if d == "vasc" else "train" for d in meta["dx"]]
    )
    split.loc[split.index[(split["dx"] != "vasc")][:3], "split"] = "val"
    split.to_csv(tmp / "split.csv", index=False)
    cfg = ham_cfg(HAM, f"data.split_file={tmp / 'split.csv'}")
    return lambda: run_training(cfg, tmp / "out")


def image_size_zero(tmp):
    return lambda: load_config(None, ["data.image_size=0"])


def image_size_too_small_for_architecture(tmp):
    # DenseNet's standard stem and three transitions shrink 16 px to 0 px before the last pool
    cfg = load_config(
        None,
        tiny_overrides(
            **{"model.arch": "densenet121", "data.image_size": 16, "model.small_input": "false"}
        ),
    )
    return lambda: run_training(cfg, tmp / "out")


def negative_total_pr(tmp):
    return lambda: load_config(None, ["prune_filters.total_pr=-0.2"])


def total_pr_above_one(tmp):
    return lambda: load_config(None, ["prune_filters.total_pr=1.5"])


def pr_step_above_one(tmp):
    return lambda: load_config(None, ["prune_filters.pr_step=1.2", "prune_filters.total_pr=0.5"])


def pr_step_larger_than_total(tmp):
    return lambda: load_config(None, ["prune_filters.total_pr=0.3", "prune_filters.pr_step=0.5"])


def k_below_threshold(tmp):
    return lambda: load_config(None, ["prune_prototypes.k=2", "prune_prototypes.threshold=3"])


def unknown_architecture(tmp):
    cfg = load_config(None, tiny_overrides(**{"model.arch": "resnet19"}))
    return lambda: run_training(cfg, tmp / "out")


def unknown_dataset(tmp):
    cfg = load_config(None, ["data.dataset=ham1000"])
    return lambda: build_splits(cfg.data, 0)


def dataset_root_not_set(tmp):
    cfg = load_config(None, ["data.dataset=ham10000"])
    return lambda: build_splits(cfg.data, 0)


def bad_yaml(tmp):
    (tmp / "bad.yaml").write_text("data:\n  image_size: [28\n  batch_size: 4\n")
    return lambda: load_config(tmp / "bad.yaml")


def yaml_key_given_twice(tmp):
    (tmp / "twice.yaml").write_text("seed: 1\ntrain:\n  lr: 0.001\nseed: 2\n")
    return lambda: load_config(tmp / "twice.yaml")


def yaml_bytes_not_text(tmp):
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00seed: 1")
    return lambda: load_config(tmp / "binary.yaml")


def study_yaml_key_given_twice(tmp):
    from protoprune.study.config import load_study_config

    (tmp / "study.yaml").write_text("seeds: [0]\nrun:\n  train:\n    epochs: 1\n    epochs: 2\n")
    return lambda: load_study_config(tmp / "study.yaml")


def study_negative_seed(tmp):
    from protoprune.study.config import load_study_config

    return lambda: load_study_config(None, ["seeds=[0,-3]"])


def learning_rate_not_finite(tmp):
    return lambda: load_config(None, ["train.lr=.nan"])


def std_not_finite(tmp):
    return lambda: load_config(None, ["data.std=[0.2,.inf,0.2]"])


def negative_seed(tmp):
    return lambda: load_config(None, ["seed=-1"])


def seed_beyond_the_generators(tmp):
    return lambda: load_config(None, [f"seed={2**32}"])


def image_size_beyond_any_image(tmp):
    return lambda: load_config(None, ["data.image_size=100000"])


def unknown_config_key(tmp):
    (tmp / "c.yaml").write_text("train:\n  epoch: 3\n")
    return lambda: load_config(tmp / "c.yaml")


def wrong_value_type(tmp):
    return lambda: load_config(None, ["train.epochs=three"])


def bad_split_ratios(tmp):
    return lambda: load_config(None, ["data.split_ratios=[0.8,0.3,0.1]"])


def checkpoint_of_another_architecture(tmp):
    ckpt = load_checkpoint(small_checkpoint(tmp))
    model = build_classifier("vgg11", 7, small_input=True)
    return lambda: load_state(model, ckpt)


def checkpoint_of_another_class_count(tmp):
    ckpt = load_checkpoint(small_checkpoint(tmp))
    model = build_classifier("resnet18", 3, small_input=True)
    return lambda: load_state(model, ckpt)


def checkpoint_from_newer_format(tmp):
    ckpt = torch.load(small_checkpoint(tmp), weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    torch.save(ckpt, tmp / "future.pt")
    return lambda: load_checkpoint(tmp / "future.pt")


def truncated_checkpoint(tmp):
    path = small_checkpoint(tmp)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return lambda: load_checkpoint(path)


def output_folder_exists(tmp):
    run = existing_run(tmp)
    cfg = load_config(None, tiny_overrides())
    return lambda: run_training(cfg, run)


def output_parent_is_a_file(tmp):
    (tmp / "results").write_text("a file where a folder should be")
    cfg = load_config(None, tiny_overrides())
    return lambda: run_training(cfg, tmp / "results" / "run")


def output_in_proc(tmp):
    cfg = load_config(None, tiny_overrides())
    return lambda: run_training(cfg, Path("/proc/protoprune-test-run"))


# --- issue 20: labels, counts and devices that were accepted, and checks that came late ---------


def bundled_arrays() -> dict:
    import numpy as np

    with np.load(bundled_path("dermamnist_subset.npz")) as npz:
        return {k: npz[k] for k in npz.files}


def write_npz(path: Path, **changes) -> Path:
    import numpy as np

    np.savez(path, **{**bundled_arrays(), **changes})
    return path


def medmnist_cfg(path: Path, *extra: str):
    return load_config(None, ["data.dataset=medmnist", f"data.root={path}", *extra])


def dermamnist_label_outside_its_classes(tmp):
    labels = bundled_arrays()["train_labels"].copy()
    labels[0] = 7  # DermaMNIST has 7 classes: this would have trained as 8, renamed 0..7
    cfg = medmnist_cfg(write_npz(tmp / "dermamnist_edited.npz", train_labels=labels))
    return lambda: build_splits(cfg.data, 0)


def check_data_on_a_label_outside_its_classes(tmp):
    from protoprune.data.checks import check_data

    labels = bundled_arrays()["test_labels"].copy()
    labels[-1] = 9
    cfg = medmnist_cfg(write_npz(tmp / "dermamnist_edited.npz", test_labels=labels))
    return lambda: check_data(cfg.data, open_images=False, progress=False)  # said "result: OK"


def fractional_labels(tmp):
    labels = bundled_arrays()["train_labels"].astype(float) + 0.5  # 0.5 .. 6.5, truncated before
    cfg = medmnist_cfg(write_npz(tmp / "dermamnist_float.npz", train_labels=labels))
    return lambda: build_splits(cfg.data, 0)


def unknown_npz_class_missing_from_val(tmp):
    import numpy as np

    val = bundled_arrays()["val_labels"]
    cfg = medmnist_cfg(write_npz(tmp / "lesions.npz", val_labels=np.where(val == 3, 2, val)))
    return lambda: build_splits(cfg.data, 0)


def truncated_npz(tmp):
    raw = bundled_path("dermamnist_subset.npz").read_bytes()
    (tmp / "dermamnist_half.npz").write_bytes(raw[: len(raw) // 2])  # BadZipFile before
    cfg = medmnist_cfg(tmp / "dermamnist_half.npz")
    return lambda: build_splits(cfg.data, 0)


def five_channel_images(tmp):
    import numpy as np

    images = bundled_arrays()["train_images"]
    images = np.concatenate([images, images[..., :2]], -1)
    cfg = medmnist_cfg(write_npz(tmp / "dermamnist_5ch.npz", train_images=images))
    return lambda: build_splits(cfg.data, 0)


def npz_images_that_differ_in_size(tmp):
    import numpy as np

    images = list(bundled_arrays()["train_images"])
    images[3] = np.zeros((32, 32, 3), np.uint8)  # one image of another size: a ragged object array
    ragged = np.empty(len(images), dtype=object)
    ragged[:] = images
    cfg = medmnist_cfg(write_npz(tmp / "dermamnist_ragged.npz", train_images=ragged))
    return lambda: build_splits(cfg.data, 0)


def check_data_on_npz_images_that_differ_in_size(tmp):
    from protoprune.data.checks import check_data

    npz_images_that_differ_in_size(tmp)  # writes the ragged npz
    cfg = medmnist_cfg(tmp / "dermamnist_ragged.npz")
    return lambda: check_data(cfg.data, progress=False)


def array_images_that_differ_in_size(tmp):
    import numpy as np

    from protoprune.data.base import ArrayImageDataset

    images = [np.zeros((28, 28, 3), np.uint8)] * 3 + [np.zeros((30, 28, 3), np.uint8)]
    return lambda: ArrayImageDataset(images, [0, 1, 0, 1], ["a", "b"])


def medmnist_root_is_a_folder(tmp):
    (tmp / "dermamnist.npz").mkdir()
    cfg = medmnist_cfg(tmp / "dermamnist.npz")
    return lambda: build_splits(cfg.data, 0)


def data_env_points_nowhere(tmp):
    """The shipped configs read ${PROTOPRUNE_DATA}/...: the fix names the variable."""
    import os

    from protoprune.demo import packaged_config

    old = os.environ.get("PROTOPRUNE_DATA")
    os.environ["PROTOPRUNE_DATA"] = str(tmp / "nowhere")
    try:
        cfg = load_config(packaged_config("dermamnist_resnet18.yaml"))
    finally:
        os.environ.pop("PROTOPRUNE_DATA") if old is None else os.environ.update(PROTOPRUNE_DATA=old)
    return lambda: build_splits(cfg.data, 0)


def config_path_is_a_folder(tmp):
    (tmp / "run.yaml").mkdir()
    return lambda: load_config(tmp / "run.yaml")


def run_folder_without_checkpoint(tmp):
    (tmp / "run").mkdir()
    return lambda: load_checkpoint(tmp / "run")


def classifier_zero_epochs(tmp):
    return lambda: load_config(None, ["train.epochs=0"])  # exited 0 with an untrained model


def protopnet_zero_epochs(tmp):
    return lambda: load_config(
        None, ["model.type=protopnet", "protopnet.warm_epochs=0", "protopnet.joint_epochs=0"]
    )


def max_per_split_zero(tmp):
    return lambda: load_config(None, ["data.max_per_split=0"])  # a scikit-learn traceback before


def unknown_train_device(tmp):
    return lambda: load_config(None, ["train.device=gpu0"])


def absent_train_device(tmp):
    cfg = load_config(None, tiny_overrides(**{"train.device": "cuda:99"}))
    return lambda: run_training(cfg, tmp / "out")  # a traceback at the first tensor moved


def negative_finetune_iterations_in_config(tmp):
    return lambda: load_config(None, ["prune_prototypes.finetune_iterations=-5"])


def cli(argv: list[str]) -> Callable[[], int]:
    """The command's own execute(): the error it raises is what main() prints with exit 2."""
    from protoprune.cli import build_parser

    args = build_parser().parse_args(argv)
    return lambda: args.execute(args)


def cli_negative_finetune_iterations(tmp):
    # the run does not exist: the option is refused before anything is loaded or searched
    return cli(["prune-prototypes", str(tmp / "no-run"), "--finetune-iterations", "-5"])


def cli_negative_min_per_class(tmp):
    return cli(["prune-prototypes", str(tmp / "no-run"), "--min-per-class", "-2"])


@functools.cache
def _protopnet_checkpoint_bytes() -> bytes:
    cfg = load_config(None, ["model.type=protopnet", "protopnet.prototypes_per_class=2",
                             "protopnet.prototype_dim=16"])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        return save_checkpoint(Path(tmp) / "p.pt", build_model(cfg, 7), cfg, NAMES).read_bytes()


def k_above_the_training_images(tmp):
    from protoprune.protopnet.prototype_pruning import prune_prototypes

    (tmp / "run" / "checkpoints").mkdir(parents=True)
    path = tmp / "run" / "checkpoints" / "best.pt"
    path.write_bytes(_protopnet_checkpoint_bytes())
    # the bundled data has 1000 training images, one patch each: k = 5000 cannot be met
    return lambda: prune_prototypes(path, k=5000, threshold=3, device="cpu")


def cli_explain_top_negative(tmp):
    return cli(["explain", str(tmp / "none.pt"), "--top", "-1"])  # "all but one" before


def cli_explain_top_zero(tmp):
    return cli(["explain", str(tmp / "none.pt"), "--top", "0"])


def cli_explain_missing_image_before_rendering(tmp):
    # the checkpoint does not exist either: the image is checked first, before any loading
    return cli(["explain", str(tmp / "none.pt"), str(tmp / "lesion.jpg")])


def cli_explain_mask_folder_without_masks(tmp):
    # an empty mask folder is refused before the (missing) checkpoint is even read
    (tmp / "masks").mkdir()
    return cli(["explain", str(tmp / "none.pt"), "--masks", str(tmp / "masks")])


def cli_evaluate_existing_out_before_evaluating(tmp):
    run = existing_run(tmp)
    # the checkpoint does not exist: the refusal comes before any loading or evaluating
    return cli(["evaluate", str(tmp / "none.pt"), "--out", str(run)])


def cli_unknown_device(tmp):
    return cli(["evaluate", str(tmp / "none.pt"), "--device", "tpu"])


def cli_absent_device(tmp):
    return cli(["push", str(tmp / "none.pt"), "--device", "cuda:99"])


def min_retention_on_a_classifier(tmp):
    return cli(["prune-filters", str(small_checkpoint(tmp)), "--min-retention", "0.9", "--no-export",
                "--out", str(tmp / "p")])  # fmt: skip


def export_normalised_tensors(tmp):
    import torch

    from protoprune.data.export import write_image_folder

    return lambda: write_image_folder({"train": [(torch.full((3, 4, 4), -1.5), 0)]}, tmp / "out", ["a"])


def export_into_a_used_folder(tmp):
    import numpy as np

    from protoprune.data.export import write_image_folder

    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("a user's file")
    return lambda: write_image_folder({"train": [(np.zeros((4, 4, 3), np.uint8), 0)]}, tmp / "mine", ["a"])


CASES = [
    # (setup, error type, problem pattern, fix pattern)
    (min_retention_on_a_classifier, ConfigError, r"min_retention needs a ProtoPNet checkpoint",
     r"leave min_retention unset"),  # fmt: skip
    (export_normalised_tensors, DataError, r"looks normalised", r"without its Normalize"),
    (export_into_a_used_folder, DataError, r"exists and is not empty", r"choose a new folder"),
    (corrupt_jpeg, DataError, r"bad\.jpg is corrupt or truncated", r"re-download|re-export"),
    (truncated_jpeg, DataError, r"half\.jpg is corrupt or truncated", r"re-download|re-export"),
    (missing_image, DataError, r"ISIC_0000000\.jpg is missing", r"restore the file"),
    (image_path_is_folder, DataError, r"is a folder, not an image", r"image file itself"),
    (empty_imagefolder, DataError, r"no class folders", r"<root>/<class>/<image>"),
    (imagefolder_class_without_images, DataError, r"malignant", r"put the images of each class"),
    (
        metadata_missing_column,
        DataError,
        r"lacks the column\(s\) dx",
        r"official HAM10000_metadata\.csv",
    ),
    (unknown_dx_label, DataError, r"unknown dx label\(s\) 'naevus'", r"HAM10000 codes akiec"),
    (duplicate_image_ids, DataError, r"more than once: ISIC_", r"one row per image"),
    (class_absent_from_train, DataError, r"vasc have no images in the train split", r"every class"),
    (image_size_zero, ConfigError, r"image_size = 0 is too small", r"at least 8 pixels"),
    (
        image_size_too_small_for_architecture,
        ConfigError,
        r"image_size = 16 is too small for classifier densenet121",
        r"larger data\.image_size",
    ),
    (
        negative_total_pr,
        ConfigError,
        r"total_pr = -0\.2 must be in \[0, 1\)",
        r"fraction of filters",
    ),
    (
        total_pr_above_one,
        ConfigError,
        r"total_pr = 1\.5 must be in \[0, 1\)",
        r"fraction of filters",
    ),
    (pr_step_above_one, ConfigError, r"pr_step = 1\.2 must be in \(0, 1\]", r"pr-step"),
    (
        pr_step_larger_than_total,
        ConfigError,
        r"pr_step = 0\.5 is larger than total_pr = 0\.3",
        r"at most the total",
    ),
    (k_below_threshold, ConfigError, r"k = 2, threshold = 3", r"k = 6 nearest patches"),
    (
        unknown_architecture,
        ConfigError,
        r"unknown architecture 'resnet19'",
        r"did you mean 'resnet18'",
    ),
    (unknown_dataset, ConfigError, r"unknown dataset 'ham1000'", r"ham10000"),
    (dataset_root_not_set, ConfigError, r"data\.root is not set", r"HAM10000_metadata\.csv"),
    (bad_yaml, ConfigError, r"bad\.yaml is not valid YAML", r"YAML syntax"),
    (yaml_key_given_twice, ConfigError, r"key 'seed' is given twice .*lines 1 and 4", r"keep one"),
    (yaml_bytes_not_text, ConfigError, r"binary\.yaml is not UTF-8 text", r"YAML text file"),
    (study_yaml_key_given_twice, ConfigError, r"key 'epochs' is given twice", r"keep one"),
    (study_negative_seed, ConfigError, r"each seed must be an integer in 0 \.\. 2\*\*32 - 1", r"seeds: \[0, 1, 2\]"),
    (learning_rate_not_finite, ConfigError, r"train\.lr must be a finite number", r"real number"),
    (std_not_finite, ConfigError, r"data\.std must be a finite number", r"real number"),
    (negative_seed, ConfigError, r"seed = -1 is outside 0 \.\. 2\*\*32 - 1", r"seed such as"),
    (seed_beyond_the_generators, ConfigError, r"seed = 4294967296 is outside", r"seed such as"),
    (image_size_beyond_any_image, ConfigError, r"image_size = 100000 is beyond any image", r"28, 224"),
    (
        unknown_config_key,
        ConfigError,
        r"unknown config key train\.epoch",
        r"did you mean train\.epochs",
    ),
    (wrong_value_type, ConfigError, r"train\.epochs must be an integer", None),
    (bad_split_ratios, ConfigError, r"split_ratios .* summing to 1", r"0\.7,0\.15,0\.15"),
    (
        checkpoint_of_another_architecture,
        CheckpointError,
        r"resnet18.* does not fit this model",
        r"architecture",
    ),
    (
        checkpoint_of_another_class_count,
        CheckpointError,
        r"7 classes\) does not fit.*fc\.weight: \(7, 512\) vs \(3, 512\)",
        r"class count",
    ),
    (
        checkpoint_from_newer_format,
        CheckpointError,
        rf"format {FORMAT_VERSION + 1}, newer",
        r"upgrade protoprune",
    ),
    (truncated_checkpoint, CheckpointError, r"cannot load checkpoint", r"truncated, corrupt"),
    (output_folder_exists, OutputExistsError, r"already holds results", r"--resume .* --force"),
    (output_parent_is_a_file, ProtopruneError, r"results is a file, not a folder", r"--out"),
    (
        output_in_proc,
        ProtopruneError,
        r"cannot write to run folder /proc/",
        r"writable output folder",
    ),
    # issue 20
    (
        dermamnist_label_outside_its_classes,
        DataError,
        r"holds label 7, but DermaMNIST has 7 classes \(0\.\.6: akiec",
        r"fix the labels",
    ),
    (check_data_on_a_label_outside_its_classes, DataError, r"holds label 9", r"class_names"),
    (fractional_labels, DataError, r"train_labels: 1000 labels are not whole numbers", r"integer"),
    (
        unknown_npz_class_missing_from_val,
        DataError,
        r"class\(es\) 3 of 0\.\.6 have no images in the val split",
        r"class_names array",
    ),
    (truncated_npz, DataError, r"dermamnist_half\.npz is not a readable npz", r"re-download"),
    (five_channel_images, DataError, r"train_images: image array has 5 channels", r"RGB"),
    (npz_images_that_differ_in_size, DataError, r"train_images is an object array, e\.g\. images "
     r"that differ in size", r"one uint8 array \(N, H, W, 3\)"),  # fmt: skip
    (check_data_on_npz_images_that_differ_in_size, DataError, r"train_images is an object array",
     r"equal-sized images"),  # fmt: skip
    (array_images_that_differ_in_size, DataError, r"differ in size within one split: image 0 is "
     r"\(28, 28, 3\), image 3 is \(30, 28, 3\)", r"resize them to one size"),  # fmt: skip
    (medmnist_root_is_a_folder, DataError, r"dermamnist\.npz is a folder, not a file", r"data\.root"),
    (data_env_points_nowhere, DataError, r"nowhere/dermamnist/dermamnist\.npz does not exist",
     r"PROTOPRUNE_DATA to the folder holding your data sets"),  # fmt: skip
    (config_path_is_a_folder, ConfigError, r"run\.yaml is a folder, not a file", r"YAML file"),
    (run_folder_without_checkpoint, CheckpointError, r"holds no checkpoints/best\.pt", r"\.pt file"),
    (classifier_zero_epochs, ConfigError, r"train\.epochs = 0: the classifier would be tested untrained",
     r"1 or more"),  # fmt: skip
    (protopnet_zero_epochs, ConfigError, r"joint_epochs = 0: the ProtoPNet", r"1 or more"),
    (max_per_split_zero, ConfigError, r"data\.max_per_split = 0 must be >= 1", r"null"),
    (unknown_train_device, ConfigError, r"train\.device = 'gpu0' is not a device", r"cuda:N"),
    (absent_train_device, ConfigError, r"train\.device = 'cuda:99' is absent", r"auto or cpu"),
    (negative_finetune_iterations_in_config, ConfigError, r"finetune_iterations = -5 must be >= 0",
     r"default 100"),  # fmt: skip
    (cli_negative_finetune_iterations, ConfigError, r"--finetune-iterations = -5 must be 0 or more",
     r"whole number >= 0"),  # fmt: skip
    (cli_negative_min_per_class, ConfigError, r"--min-per-class = -2 must be 0 or more", r">= 0"),
    (k_above_the_training_images, ConfigError,
     r"k = 5000 nearest patches, but the search set has 1000 training images", r"k <= 1000"),  # fmt: skip
    (cli_explain_top_negative, ConfigError, r"--top = -1 must be 1 or more", r">= 1"),
    (cli_explain_top_zero, ConfigError, r"--top = 0 must be 1 or more", r">= 1"),
    (cli_explain_missing_image_before_rendering, DataError, r"lesion\.jpg is missing", None),
    (cli_explain_mask_folder_without_masks, ConfigError, r"has no <image_id>_segmentation\.png",
     r"ISIC 2018 Task 1 layout"),
    (cli_evaluate_existing_out_before_evaluating, OutputExistsError, r"already holds results",
     r"^pass --force to replace it"),  # fmt: skip  (evaluate has no --resume to advise)
    (cli_unknown_device, ConfigError, r"--device = 'tpu' is not a device", r"cuda:N"),
    (cli_absent_device, ConfigError, r"--device = 'cuda:99' is absent", r"auto or cpu"),
]


@pytest.mark.parametrize(
    ("setup", "error", "problem", "fix"), CASES, ids=[c[0].__name__ for c in CASES]
)
def test_bad_input_fails_clearly_and_changes_nothing(tmp_path, setup, error, problem, fix):
    call = setup(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        call()
    exc = info.value
    assert isinstance(exc, ProtopruneError)
    assert exc.problem, "the error names no problem"
    assert re.search(problem, exc.problem), exc.problem
    if fix is not None:
        assert exc.fix and re.search(fix, exc.fix), exc.fix
    assert "fix:" in str(exc) or fix is None
    assert snapshot(tmp_path) == before, "a failed call changed files"
    assert not Path("/proc/protoprune-test-run").exists()


def test_class_missing_from_val_or_test_only_warns(caplog):
    from protoprune.data.loaders import check_class_coverage

    splits = build_splits(ham_cfg(HAM).data, 0)  # 21 images: some classes miss val/test
    assert (splits.train.class_counts() > 0).all()
    with caplog.at_level("WARNING"):
        check_class_coverage(splits)
    assert (
        "no images in the val split" in caplog.text or "no images in the test split" in caplog.text
    )


def test_resnet_standard_stem_on_8px_trains():
    """8 px through the standard ResNet stem leaves a 1x1 grid: it must still train."""
    cfg = load_config(None, ["data.image_size=8", "model.small_input=false"])
    model = build_model(cfg, 7)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and model.fc.weight.grad is not None


# --- the same problems through the command line: status 2, "error: ...", no traceback ----------


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_cli_unknown_architecture(tmp_path, capsys):
    code, err = run_cli(
        ["train", "--set", "model.arch=resnet19", "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2 and err.startswith("error: unknown architecture 'resnet19'") and "fix:" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_cli_bad_yaml(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: {arch: resnet18\n")
    code, err = run_cli(
        ["train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2 and err.startswith("error: config file") and "not valid YAML" in err
    assert "Traceback" not in err


def test_cli_existing_output_folder_is_kept(tmp_path, capsys):
    run = existing_run(tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli(
        ["train", *sum((["--set", o] for o in tiny_overrides()), []), "--out", str(run)], capsys
    )
    assert (
        code == 2 and "already holds results" in err and "--force" in err and "Traceback" not in err
    )
    assert snapshot(tmp_path) == before


def test_cli_truncated_checkpoint(tmp_path, capsys):
    path = small_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:4096])
    code, err = run_cli(["evaluate", str(path)], capsys)
    assert code == 2 and err.startswith("error: cannot load checkpoint") and "truncated" in err
    assert "Traceback" not in err


def test_cli_pr_step_larger_than_total(tmp_path, capsys):
    path = small_checkpoint(tmp_path)
    code, err = run_cli(
        [
            "prune-filters",
            str(path),
            "--total-pr",
            "0.2",
            "--pr-step",
            "0.4",
            "--out",
            str(tmp_path / "p"),
        ],
        capsys,
    )
    assert (
        code == 2
        and "pr_step = 0.4 is larger than total_pr = 0.2" in err
        and "Traceback" not in err
    )
    assert not (tmp_path / "p").exists()


def test_cli_reference_schedule_without_a_step(tmp_path, capsys):
    """The reference's step count int(int(N / int(N * 0.15)) * 0.15) is 0: refused, nothing written."""
    path = small_checkpoint(tmp_path)
    code, err = run_cli(["prune-filters", str(path), "--total-pr", "0.15", "--pr-step", "0.15",
                         "--set", "prune_filters.schedule=reference", "--out", str(tmp_path / "p")],
                        capsys)  # fmt: skip
    assert code == 2 and "runs no step" in err and "schedule=cumulative" in err
    assert "Traceback" not in err and not (tmp_path / "p").exists()


def test_cli_output_under_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = run_cli(["train", "--out", str(tmp_path / "f" / "run")], capsys)
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("command", ["evaluate", "explain", "report", "prune-prototypes", "push",
                                     "export-onnx", "study", "prune-filters", "prune-curve"])  # fmt: skip
def test_cli_command_without_the_file_it_needs(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    try:
        code, err = run_cli([command], capsys)
    except SystemExit as exc:  # argparse's missing positional argument, in protoprune's format
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and "error:" in err and "fix:" in err and "Traceback" not in err
    assert f"protoprune {command} " in err.split("fix:")[1]  # an example call of this command
    assert not any(tmp_path.iterdir()), "nothing is written"
