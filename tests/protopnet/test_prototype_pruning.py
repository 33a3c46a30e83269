"""Prototype pruning: k-nearest with one patch per image, threshold, duplicate merging, reload."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from protoprune.errors import OutputExistsError
from protoprune.explain.nearest import k_nearest_patches
from protoprune.protopnet.prototype_pruning import (
    PruningPlan,
    apply_plan,
    find_duplicates,
    protect_classes,
    prune_prototypes,
    select_low_purity,
)
from protoprune.train.checkpoint import load_checkpoint, model_from_checkpoint
from tests.explain.fixtures import identity_protopnet, trained_run


def _images(values: list[list[tuple[int, int, float]]], size: int = 4) -> torch.Tensor:
    """Images of value 10 everywhere except the listed (row, col, value) pixels (all channels)."""
    x = torch.full((len(values), 3, size, size), 10.0)
    for i, pixels in enumerate(values):
        for r, c, v in pixels:
            x[i, :, r, c] = v
    return x


def test_k_nearest_takes_at_most_one_patch_per_image() -> None:
    # image 0 holds the two nearest patches (both exact matches); image 1 the third nearest
    x = _images([[(0, 0, 0.0), (3, 3, 0.0)], [(1, 2, 0.5)], [(2, 2, 1.0)]])
    y = torch.tensor([0, 1, 0])
    model = identity_protopnet(torch.zeros(1, 3), [0], 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=2)  # the best spans two batches
    nearest = k_nearest_patches(model, loader, k=2, progress=False)
    assert nearest.image_index[0].tolist() == [0, 1]
    assert nearest.distances[0].tolist() == pytest.approx([0.0, 3 * 0.25])
    assert nearest.image_class[0].tolist() == [0, 1]
    assert nearest.position[0, 1].item() == 1 * 4 + 2  # row 1, col 2
    # k larger than the data set: missing neighbours are marked, not invented
    more = k_nearest_patches(model, loader, k=5, progress=False)
    assert more.image_index[0].tolist() == [0, 1, 2, -1, -1]
    assert more.own_class_count(torch.tensor([0])).item() == 2


def test_prunes_exactly_the_prototypes_below_the_threshold() -> None:
    # colours 0, 5, 20: images of class 0 near colour 0, class 1 near colour 5
    x = _images([[(0, 0, 0.0)], [(0, 0, 0.1)], [(0, 0, 0.2)], [(0, 0, 5.0)], [(0, 0, 5.1)]])
    y = torch.tensor([0, 0, 0, 1, 1])
    # prototype 0 (class 0, colour 0): 3 own-class neighbours; prototype 1 (class 0, colour 5):
    # 2 of class 1 nearest, then 1 of class 0 -> 1 own; prototype 2 (class 1, colour 5): 2 own
    model = identity_protopnet(torch.tensor([[0.0] * 3, [5.0] * 3, [5.1] * 3]), [0, 0, 1], 2)
    nearest = k_nearest_patches(
        model, DataLoader(TensorDataset(x, y), batch_size=5), k=3, progress=False
    )
    own = nearest.own_class_count(model.prototype_classes)
    assert own.tolist() == [3, 1, 2]
    assert select_low_purity(own, 2) == [1]
    assert select_low_purity(own, 3) == [1, 2]
    assert select_low_purity(own, 0) == []


def test_merging_duplicates_keeps_logits_and_shrinks_the_model() -> None:
    torch.manual_seed(0)
    protos = torch.rand(5, 3)
    protos[3] = protos[1]  # pushed onto the same patch: identical vectors, same class
    protos[4] = protos[0]  # identical to prototype 0 but another class: not a duplicate
    model = identity_protopnet(protos, [0, 1, 2, 1, 2], 3)
    with torch.no_grad():
        model.last_layer.weight.copy_(torch.randn(3, 5))
    x = torch.rand(6, 3, 5, 5)
    before = model(x)
    merge = find_duplicates(model.prototype_vectors.detach(), model.prototype_classes, exclude=[])
    assert merge == {3: 1}
    apply_plan(model, PruningPlan(prune=[], merge=merge, num_prototypes=5))
    assert model.num_prototypes == 4 and model.prototype_vectors.shape[0] == 4
    assert model.prototype_classes.tolist() == [0, 1, 2, 2]
    assert model.prototype_class_identity.shape == (4, 3)
    torch.testing.assert_close(model(x), before)
    # a duplicate of a pruned prototype is not merged into it
    assert (
        find_duplicates(protos.view(5, 3, 1, 1), torch.tensor([0, 1, 2, 1, 2]), exclude=[1]) == {}
    )


def test_prune_prototypes_end_to_end_reloads_smaller(tmp_path) -> None:
    run = trained_run()
    out = tmp_path / "pruned"
    summary = prune_prototypes(
        run, out_dir=out, k=6, threshold=4, finetune_iterations=2, progress=False
    )
    n_before = summary["prototypes_before"]
    removed = summary["pruned"] + summary["merged"]
    assert n_before == 14
    assert summary["prototypes_after"] == n_before - removed
    assert sum(r["pruned"] for r in summary["per_class"]) == summary["pruned"]
    statuses = [r["status"] for r in summary["prototypes"]]
    assert statuses.count("pruned") == summary["pruned"]
    for r in summary["prototypes"]:  # the criterion, re-checked from the written records
        assert (r["status"] == "pruned") == (r["own_class_neighbours"] < 4)
    for stage in ("before", "after_pruning", "after_finetuning"):
        for split in ("val", "test"):
            assert 0 <= summary["headline"][stage][split]["balanced_accuracy"] <= 1
    on_disk = json.loads((out / "prototype_pruning.json").read_text())
    assert on_disk["kept_indices"] == summary["kept_indices"]
    assert (out / "prototype_pruning.md").read_text().startswith("# Prototype pruning")

    ckpt = load_checkpoint(out / "checkpoints" / "pruned.pt")
    model = model_from_checkpoint(ckpt)
    assert model.num_prototypes == n_before - removed
    assert model.last_layer.weight.shape == (7, n_before - removed)
    original = model_from_checkpoint(load_checkpoint(run))
    kept = torch.tensor(summary["kept_indices"])
    torch.testing.assert_close(model.prototype_vectors, original.prototype_vectors[kept])
    assert model.prototype_classes.tolist() == original.prototype_classes[kept].tolist()

    with pytest.raises(OutputExistsError):
        prune_prototypes(run, out_dir=out, finetune_iterations=1, progress=False)


def test_min_per_class_spares_the_best_prototypes_of_an_emptied_class() -> None:
    classes = torch.tensor([0, 0, 0, 1, 1])
    own = torch.tensor([0, 2, 1, 5, 0])
    pruned = select_low_purity(own, 3)  # [0, 1, 2, 4]: class 0 would lose everything
    assert pruned == [0, 1, 2, 4]
    assert protect_classes(pruned, own, classes, 0) == pruned  # the original criterion
    assert protect_classes(pruned, own, classes, 1) == [0, 2, 4]  # spares prototype 1 (2 own)
    # two per class: class 0 also keeps prototype 2, class 1 tops up with prototype 4
    assert protect_classes(pruned, own, classes, 2) == [0]
