"""ImageFolder, CIFAR-10 (python pickle batches) and CUB-200-2011 (with box crops) in their real layouts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from protoprune.config import DataConfig
from protoprune.data import build_splits
from protoprune.data.folders import cub200_splits, imagefolder_splits, load_cifar10, load_cub200
from protoprune.errors import DataError

# --- ImageFolder -----------------------------------------------------------------------------


def write_folder(root, classes, per_class, fmt="png"):
    for k, name in enumerate(classes):
        for i in range(per_class):
            path = root / name / f"{name}_{i}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * k, 10 * i, 0)).save(path)


def test_imagefolder_single_folder_is_split_stratified(tmp_path):
    write_folder(tmp_path, ["cat", "dog", "fox"], 20)
    splits = imagefolder_splits(tmp_path, (0.6, 0.2, 0.2), seed=0)
    assert splits.class_names == ["cat", "dog", "fox"]
    assert [len(splits.train), len(splits.val), len(splits.test)] == [36, 12, 12]
    assert splits.test.class_counts().tolist() == [4, 4, 4]
    i = splits.train.image_ids.index("dog/dog_3.png")
    assert splits.train.targets[i] == 1 and np.asarray(splits.train.load_image(i))[
        0, 0
    ].tolist() == [40, 30, 0]
    again = imagefolder_splits(tmp_path, (0.6, 0.2, 0.2), seed=0)
    assert again.test.image_ids == splits.test.image_ids


def test_imagefolder_split_folders_kept_and_val_carved(tmp_path):
    write_folder(tmp_path / "train", ["a", "b"], 20)
    write_folder(tmp_path / "test", ["a", "b"], 3, fmt="jpg")
    splits = imagefolder_splits(tmp_path, (0.7, 0.15, 0.15), seed=0)
    assert sorted(splits.test.image_ids) == sorted(
        f"test/{c}/{c}_{i}.jpg" for c in "ab" for i in range(3)
    )
    assert all(i.startswith("train/") for i in splits.train.image_ids + splits.val.image_ids)
    assert len(splits.val) == 8  # 15/85 of 40, stratified
    assert splits.val.class_counts().tolist() == [4, 4]


def test_imagefolder_train_val_test_folders_used_as_given(tmp_path):
    for split, n in (("train", 5), ("Val", 2), ("test", 3)):
        write_folder(tmp_path / split, ["a", "b"], n)
    splits = build_splits(DataConfig(dataset="imagefolder", root=str(tmp_path)), seed=0)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [10, 4, 6]


def test_imagefolder_errors(tmp_path):
    write_folder(tmp_path / "train", ["a", "b"], 4)
    write_folder(tmp_path / "test", ["a", "c"], 2)
    with pytest.raises(DataError, match="class folder\\(s\\) c"):
        imagefolder_splits(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        imagefolder_splits(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        imagefolder_splits(tmp_path / "empty")


# --- CIFAR-10 --------------------------------------------------------------------------------

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_cifar10(root, per_class_per_batch=2, test_per_class=2):
    """The python version's files: pickled dicts, data (N, 3072) uint8 channel-major, labels list."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": per_class_per_batch for i in range(1, 6)} | {
        "test_batch": test_per_class
    }
    images = {}
    for name, per_class in batches.items():
        labels = [k for k in range(10) for _ in range(per_class)]
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        entry = {
            "batch_label": f"{name} of 5",
            "labels": labels,
            "data": data,
            "filenames": [f"img_{name}_{i}.png" for i in range(len(labels))],
        }
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        images[name] = (data, labels)
    meta = {"num_cases_per_batch": 10000, "label_names": CIFAR_CLASSES, "num_vis": 3072}
    with open(base / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return images


def test_cifar10_reads_pickled_batches(tmp_path):
    written = write_cifar10(tmp_path)
    ds, official = load_cifar10(tmp_path)
    assert ds.class_names == CIFAR_CLASSES
    assert len(ds) == 5 * 20 + 20 and official.count("test") == 20
    # image 3 of batch 1: channel-major rows of 1024 values -> HWC
    data, labels = written["data_batch_1"]
    expected = data[3].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(ds.load_image(3)), expected) and ds.targets[3] == labels[3]
    t_data, t_labels = written["test_batch"]
    j = ds.image_ids.index("test_00005")
    assert np.array_equal(
        np.asarray(ds.load_image(j)), t_data[5].reshape(3, 32, 32).transpose(1, 2, 0)
    )
    # root may also be the batches folder itself
    assert len(load_cifar10(tmp_path / "cifar-10-batches-py")[0]) == len(ds)


def test_cifar10_split_keeps_official_test(tmp_path):
    write_cifar10(tmp_path, per_class_per_batch=4)
    splits = build_splits(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)
    assert sorted(splits.test.image_ids) == sorted(f"test_{i:05d}" for i in range(20))
    # val: 15/85 of the 200 official training images, stratified (3 or 4 of each class)
    assert len(splits.val) == 36 and set(splits.val.class_counts().tolist()) <= {3, 4}
    assert set(splits.val.image_ids).isdisjoint(splits.train.image_ids)
    assert all(i.startswith("train_") for i in splits.val.image_ids)


def test_cifar10_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py") as err:
        load_cifar10(tmp_path)
    assert "data_batch_1" in str(err.value) and "downloads nothing" in err.value.fix
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not readable"):
        load_cifar10(tmp_path)


# --- CUB-200-2011 ----------------------------------------------------------------------------


def write_cub(root, per_class=4):
    """CUB_200_2011/: images/<class>/<name>.jpg + the five index files; the bird is a red box."""
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, labels, split, boxes = [], [], [], []
    image_id = 0
    for k, cls in enumerate(classes, start=1):
        for i in range(per_class):
            image_id += 1
            rel = f"{cls}/{cls.split('.')[1]}_{i:04d}_{image_id}.jpg"
            x, y, w, h = 5.0 + i, 4.0, 20.0, 12.5 + k
            canvas = np.full((40, 50, 3), 255, dtype=np.uint8)
            canvas[int(y) : int(np.ceil(y + h)), int(x) : int(x + w)] = (200, 0, 0)
            path = base / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(canvas).save(path, quality=100, subsampling=0)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {k}")
            split.append(f"{image_id} {int(i < per_class - 1)}")
            boxes.append(f"{image_id} {x} {y} {w} {h}")
    for name, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
        ("classes.txt", [f"{k} {c}" for k, c in enumerate(classes, start=1)]),
    ):
        (base / name).write_text("\n".join(lines) + "\n")
    return base


def test_cub_crop_applies_the_box(tmp_path):
    write_cub(tmp_path)
    ds, official = load_cub200(tmp_path)
    assert ds.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert ds.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert official == (["train"] * 3 + ["test"]) * 3
    assert ds.image_ids[0] == "001.Black_footed_Albatross/Black_footed_Albatross_0000_1"
    crop = np.asarray(ds.load_image(4))  # class 2: box 5,4 size 20 x 14.5 -> 20 x 15 pixels
    assert crop.shape == (15, 20, 3)
    assert (crop[..., 0] > 150).all() and (crop[..., 1] < 60).all()  # only the red bird is left
    full, _ = load_cub200(tmp_path, crop=False)
    assert full.load_image(4).size == (50, 40)


def test_cub_split_keeps_official_test_and_carves_val(tmp_path):
    write_cub(tmp_path, per_class=10)
    splits = cub200_splits(tmp_path / "CUB_200_2011", (0.7, 0.15, 0.15), seed=0)
    assert len(splits.test) == 3 and splits.test.class_counts().tolist() == [1, 1, 1]
    assert len(splits.train) + len(splits.val) == 27 and (splits.val.class_counts() >= 1).all()


def test_cub_missing_files_are_named(tmp_path):
    base = write_cub(tmp_path)
    (base / "bounding_boxes.txt").unlink()
    with pytest.raises(DataError, match="bounding_boxes.txt"):
        load_cub200(tmp_path)
