"""The push: own-class nearest patches (checked by brute force), provenance, rendering, flags."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from protoprune.data.base import ArrayImageDataset
from protoprune.data.transforms import build_transform
from protoprune.models.backbones import Features
from protoprune.protopnet.model import ProtoPNet
from protoprune.protopnet.push import push_prototypes
from protoprune.protopnet.training import similarity_vectors

CLASSES = ["a", "b", "c", "d"]  # class "d" has no push images


def tiny_model(k: int = 1, similarity: str = "log") -> ProtoPNet:
    torch.manual_seed(0)
    trunk = Features(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)), 8)
    return ProtoPNet(
        trunk,
        len(CLASSES),
        prototypes_per_class=2,
        prototype_dim=5,
        prototype_size=k,
        similarity=similarity,
    ).eval()


def tensor_loader(n: int = 11, size: int = 12, batch: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % 3  # classes a, b, c only
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


@pytest.mark.parametrize("k", [1, 2])
def test_push_picks_true_nearest_own_class_patch(k: int) -> None:
    model = tiny_model(k)
    loader = tensor_loader()
    x, y = loader.dataset.tensors
    old = model.prototype_vectors.detach().clone()
    with torch.no_grad():
        z = model.conv_features(x)
    result = push_prototypes(model, loader, "cpu", CLASSES, progress=False)
    new = model.prototype_vectors.detach()
    h_out, w_out = z.shape[2] - k + 1, z.shape[3] - k + 1
    for rec in result.prototypes:
        j = rec["prototype"]
        if rec["class"] == "d":
            assert not rec["pushed"] and j in result.unpushed
            torch.testing.assert_close(new[j], old[j])  # kept unchanged
            continue
        i, r, c = rec["image_index"], rec["latent_h"], rec["latent_w"]
        assert int(y[i]) == rec["class_index"]  # an image of the prototype's own class
        patch = z[i, :, r : r + k, c : c + k]
        torch.testing.assert_close(new[j], patch)  # the prototype IS that latent patch
        # brute force: distances of the old prototype to every own-class patch
        best = float("inf")
        for ii in torch.nonzero(y == rec["class_index"]).flatten().tolist():
            for rr in range(h_out):
                for cc in range(w_out):
                    d = ((z[ii, :, rr : rr + k, cc : cc + k] - old[j]) ** 2).sum().item()
                    best = min(best, d)
        chosen = ((patch - old[j]) ** 2).sum().item()
        assert chosen == pytest.approx(best, abs=1e-4)
        assert rec["distance"] == pytest.approx(best, abs=1e-4)
    assert len(result.unpushed) == 2


def test_pushed_prototype_has_zero_distance_and_max_similarity_on_its_source() -> None:
    model = tiny_model()
    loader = tensor_loader()
    x, _ = loader.dataset.tensors
    result = push_prototypes(model, loader, "cpu", CLASSES, progress=False)
    with torch.no_grad():
        out = model.forward_details(x)
        sim = model.distance_to_similarity(out.distances)
    for rec in result.prototypes:
        if not rec["pushed"]:
            continue
        j, i = rec["prototype"], rec["image_index"]
        assert out.distances[i, j, rec["latent_h"], rec["latent_w"]].item() == pytest.approx(
            0, abs=1e-4
        )
        assert sim[i, j, rec["latent_h"], rec["latent_w"]] == sim[:, j].max()
        # box in input pixels, inside the image, non-empty
        assert 0 <= rec["box_y0"] < rec["box_y1"] <= 12 and 0 <= rec["box_x0"] < rec["box_x1"] <= 12
    # the cached similarity vectors are exactly the pushed model's last-layer inputs
    with torch.no_grad():
        torch.testing.assert_close(
            result.similarities, model.similarity_vectors(x), atol=1e-5, rtol=1e-5
        )
    acc = (out.logits.argmax(1) == loader.dataset.tensors[1]).float().mean().item()
    assert result.accuracy_after == pytest.approx(acc)


def test_push_renders_winners_and_index(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(9, 20, 20, 3), dtype=np.uint8)
    targets = np.arange(9) % 3
    ds = ArrayImageDataset(images, targets, CLASSES, image_ids=[f"img{i}" for i in range(9)])
    ds = ds.with_transform(build_transform(16, [0.5] * 3, [0.25] * 3, train=False))
    loader = DataLoader(ds, batch_size=4, shuffle=False)
    model = tiny_model()
    out = tmp_path / "protos"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")  # a previous push's folder is replaced as a whole
    result = push_prototypes(model, loader, "cpu", CLASSES, out_dir=out, progress=False)
    assert not (out / "stale.png").exists()
    table = pd.read_csv(out / "prototypes.csv")
    assert len(table) == model.num_prototypes
    assert table["pushed"].sum() == 6
    index = json.loads((out / "prototypes.json").read_text())
    assert index["input_size"] == [16, 16]
    for rec in result.prototypes:
        if not rec["pushed"]:
            assert rec["files"] == {}
            continue
        assert rec["image_id"] == f"img{rec['image_index']}"
        src = np.asarray(Image.open(out / rec["files"]["source"]))
        crop = np.asarray(Image.open(out / rec["files"]["crop"]))
        heat = np.asarray(Image.open(out / rec["files"]["heatmap"]))
        assert src.shape == heat.shape == (16, 16, 3)
        assert crop.shape == (rec["box_y1"] - rec["box_y0"], rec["box_x1"] - rec["box_x0"], 3)
        # the crop is the source image (resized to the input size) inside the box
        resized = np.asarray(ds.load_image(rec["image_index"]).resize((16, 16), Image.BILINEAR))
        np.testing.assert_array_equal(
            crop, resized[rec["box_y0"] : rec["box_y1"], rec["box_x0"] : rec["box_x1"]]
        )
        assert (src[rec["box_y0"], rec["box_x0"]] == [255, 255, 0]).all()  # box outline drawn


def test_push_rejects_shuffled_loader() -> None:
    from protoprune.errors import DataError

    loader = tensor_loader()
    shuffled = DataLoader(loader.dataset, batch_size=4, shuffle=True)
    with pytest.raises(DataError, match="shuffle"):
        push_prototypes(tiny_model(), shuffled, "cpu", CLASSES, progress=False)


def test_asynchronous_rendering_writes_the_same_images(tmp_path) -> None:
    """render_async returns before the PNGs exist; after wait_rendered they equal a synchronous push's."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(9, 20, 20, 3), dtype=np.uint8)
    ds = ArrayImageDataset(images, np.arange(9) % 3, CLASSES).with_transform(
        build_transform(16, [0.5] * 3, [0.25] * 3, train=False)
    )
    loader = DataLoader(ds, batch_size=4, shuffle=False)
    sync = push_prototypes(tiny_model(), loader, "cpu", CLASSES, tmp_path / "sync", progress=False)
    result = push_prototypes(tiny_model(), loader, "cpu", CLASSES, tmp_path / "async",
                             progress=False, render_async=True)  # fmt: skip
    assert result.rendering is not None
    result.wait_rendered()
    assert result.rendering is None and "render_wait" in result.timings
    assert torch.equal(result.similarities, sync.similarities)
    names = sorted(p.name for p in (tmp_path / "sync").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "async").iterdir()) and len(names) > 2
    for name in names:
        assert (tmp_path / "sync" / name).read_bytes() == (tmp_path / "async" / name).read_bytes()
    assert "files" not in result.prototypes[0]  # the writer worked on its own copy


@pytest.mark.parametrize("push_amp", [False, True])
def test_push_inside_cpu_autocast_pushes_the_evaluated_models_patches(push_amp: bool) -> None:
    """Called inside a bfloat16 autocast region, the push still computes in float32, as evaluation
    does: every pushed prototype is bit for bit its source patch in the evaluated model, its
    distance there is the smallest of all patches (0 up to float32 rounding) and the cached
    similarity vectors are evaluation's exactly. `push_amp` (autocast, like the float16 push on
    CUDA before) breaks all three, which shows the check can fail."""
    model = tiny_model()
    loader = tensor_loader()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = push_prototypes(model, loader, "cpu", CLASSES, progress=False, amp=push_amp)
        cached, _ = similarity_vectors(model, loader, torch.device("cpu"), amp=push_amp)
    with torch.no_grad():  # evaluation: float32, the loader's batches
        z = torch.cat([model.conv_features(x) for x, _ in loader])
        d = torch.cat([model.prototype_distances(model.conv_features(x)) for x, _ in loader])
        sims = torch.cat([model.similarity_vectors(x) for x, _ in loader])
    exact, at_min, far = [], [], []
    for rec in result.prototypes:
        if not rec["pushed"]:
            continue
        j, i, r, c = rec["prototype"], rec["image_index"], rec["latent_h"], rec["latent_w"]
        exact.append(torch.equal(model.prototype_vectors[j, :, 0, 0], z[i, :, r, c]))
        at_min.append(bool(d[i, j, r, c] == d[:, j].min()))
        far.append(float(d[i, j, r, c]))
    assert len(exact) == 6
    if not push_amp:
        assert all(exact) and all(at_min) and max(far) < 1e-6
        assert torch.equal(result.similarities, sims) and torch.equal(cached, sims)
    else:
        assert not any(exact) and max(far) > 1e-6
        assert not torch.equal(result.similarities, sims) and not torch.equal(cached, sims)


def test_rendered_images_match_a_per_prototype_composition(tmp_path) -> None:
    """More prototypes than one writer chunk, several sharing a source image: each PNG equals the
    image composed for that prototype alone (source resized to the input size; heatmap 0.6 x image
    + 0.4 x jet(map scaled to 0..255) x 255, rounded; box outline in yellow)."""
    from matplotlib import colormaps

    from protoprune.protopnet.push import RENDER_CHUNK, render_prototypes

    rng = np.random.default_rng(5)
    n_protos, size = 2 * RENDER_CHUNK + 7, (16, 16)
    ds = ArrayImageDataset(rng.integers(0, 256, (12, 20, 20, 3), dtype=np.uint8), np.arange(12) % 3, CLASSES)
    maps = rng.random((n_protos, *size), dtype=np.float32)
    records = []
    for j in range(n_protos):
        y0, x0 = rng.integers(0, 8, 2)
        records.append({"prototype": j, "class": CLASSES[j % 3], "pushed": j % 9 != 4,
                        "image_index": int(rng.integers(0, 12)), "box_y0": int(y0), "box_y1": int(y0) + 6,
                        "box_x0": int(x0), "box_x1": int(x0) + 5})  # fmt: skip
    render_prototypes(records, maps, ds, size, tmp_path / "out")
    jet = colormaps["jet"]
    for r in records:
        if not r["pushed"]:
            assert r["files"] == {}
            continue
        image = np.asarray(ds.load_image(r["image_index"]).resize((16, 16), Image.BILINEAR)).astype(float)
        m = maps[r["prototype"]]
        level = np.round((m - m.min()) / (m.max() - m.min()) * 255).astype(int)
        heat = np.array([jet(v / 255)[:3] for v in range(256)], dtype=np.float32)[level] * 255
        overlay = np.round(0.6 * image + 0.4 * heat)
        framed = image.copy()
        y0, y1, x0, x1 = r["box_y0"], r["box_y1"], r["box_x0"], r["box_x1"]
        for a in (framed, overlay):
            a[[y0, y1 - 1], x0:x1] = (255, 255, 0)
            a[y0:y1, [x0, x1 - 1]] = (255, 255, 0)
        read = {k: np.asarray(Image.open(tmp_path / "out" / f)).astype(float) for k, f in r["files"].items()}
        np.testing.assert_array_equal(read["source"], framed)
        np.testing.assert_array_equal(read["crop"], image[y0:y1, x0:x1])
        assert np.abs(read["heatmap"] - overlay).max() <= 1  # float64 here, float32 there


@pytest.mark.parametrize("k", [1, 2])
def test_push_provenance_holds_each_prototypes_receptive_field(k: int) -> None:
    """Trunk conv3 (pad 1) + max-pool 2: latent cell h sees input rows 2h - 1 .. 2h + 2 (by hand),
    a k x k prototype 2 (k - 1) rows more; clipped to the 12 px image."""
    model = tiny_model(k)
    result = push_prototypes(model, tensor_loader(), "cpu", CLASSES, progress=False)
    for rec in result.prototypes:
        if not rec["pushed"]:
            assert rec["rf_y0"] == -1
            continue
        h, w = rec["latent_h"], rec["latent_w"]
        expect = [max(0, 2 * h - 1), min(12, 2 * h + 3 + 2 * (k - 1)),
                  max(0, 2 * w - 1), min(12, 2 * w + 3 + 2 * (k - 1))]  # fmt: skip
        assert [rec[f"rf_{c}"] for c in ("y0", "y1", "x0", "x1")] == expect
        area = (expect[1] - expect[0]) * (expect[3] - expect[2])
        assert rec["rf_fraction"] == pytest.approx(area / 144, abs=1e-4)
