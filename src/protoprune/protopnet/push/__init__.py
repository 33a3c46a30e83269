"""The push: replace every prototype by its nearest latent patch of its own class, with provenance.

One pass over the push set (training images, no augmentation) finds each prototype's nearest
own-class patch (`search`); under torchrun the ranks' winners are merged (`merge`); the winners
replace the prototypes (`projection`); each gets a provenance record and box (`records`) and, with
an output folder, its images (`images`). No per-prototype Python loop and no file I/O inside the
pass. The latent maps of the pass are kept, so afterwards the pushed model's similarity vectors of
the whole push set (for the accuracy after the push and the cached last-layer stage) and the
winners' heatmaps cost no second forward pass. Images are rendered for the final winners only.

Under torchrun each rank searches its shard of the push set (an unshuffled DistributedSampler)
with running minima as above; the global winner per prototype is the smallest (distance, global
image index) over all ranks (the same tie-break as one process, where the first image wins), and
the winner's latent patch and similarity map come from the rank that holds it. Similarity vectors
are gathered in dataset order, so every rank gets the same result as one process; rank 0 renders.

Memory: the kept latents take N x D x H x W floats (e.g. 7,000 images x 128 x 8 x 8 = 229 MB).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ... import distributed
from ...train import precision
from ..model import ProtoPNet
from .images import BOX_COLOR, RENDER_CHUNK, render, render_prototypes
from .projection import project, pushed_similarities
from .records import BOX_PERCENTILE, boxes, provenance_records
from .search import search

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    """What the push did; `similarities` are the pushed model's (N, P) last-layer inputs."""

    prototypes: list[dict[str, Any]]
    accuracy_before: float
    accuracy_after: float
    unpushed: list[int]
    similarities: torch.Tensor
    targets: torch.Tensor
    seconds: float
    out_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    rendering: concurrent.futures.Future | None = None  # with render_async: the image writer

    def wait_rendered(self) -> None:
        """Block until the prototype images are written (re-raises a rendering error)."""
        if self.rendering is not None:
            t0 = time.perf_counter()
            self.rendering.result()
            self.timings["render_wait"] = self.timings.get("render_wait", 0.0) + time.perf_counter() - t0
            self.rendering = None

    def summary(self) -> dict[str, Any]:
        """Plain data for metrics files and checkpoints."""
        return {
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "unpushed": list(self.unpushed),
            "mean_distance": float(
                np.mean([p["distance"] for p in self.prototypes if p["pushed"]] or [float("nan")])
            ),
            "seconds": self.seconds,
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }


@torch.no_grad()
def push_prototypes(
    model: ProtoPNet,
    push_loader: DataLoader,
    device: torch.device | str,
    class_names: Sequence[str],
    out_dir: str | Path | None = None,
    dataset: Any = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    progress: bool = True,
    render_async: bool = False,
    amp: bool = False,
) -> PushResult:
    """Project each prototype onto the nearest latent patch of an image of its own class.

    `dataset` (default: the loader's) supplies image ids and, for rendering, the untransformed
    images (`load_image`); for a plain tensor dataset give the normalisation `mean`/`std`.
    Prototypes of a class without push images are kept unchanged and listed in `unpushed`.
    With `out_dir`, each prototype gets its source image with the box, the crop and the
    similarity heatmap, plus prototypes.csv/json; the folder is replaced as a whole (atomically).
    `render_async` writes them in a background thread so the caller goes on (the training loop
    runs the after-push evaluations meanwhile); call `wait_rendered()` before relying on the
    files. The PNG writes then leave the push's critical path.
    The search runs in float32, the precision evaluation runs in, even inside an autocast region,
    so every pushed prototype is bit for bit its source patch in the evaluated model; `amp`
    (`protopnet.push_amp`) runs it under autocast instead (float16 on CUDA, bfloat16 on CPU), where
    the pushed patch then differs from the evaluated one by the low-precision rounding.
    """
    shard = distributed.ordered_shard(push_loader, "the push loader")  # None in one process
    t_start = time.perf_counter()
    device = torch.device(device)
    dataset = push_loader.dataset if dataset is None else dataset
    was_training = model.training
    model.eval()
    found = search(model, push_loader, device, progress, amp)
    t_loop = time.perf_counter()
    # the whole push set's logits and targets in dataset order (gathered from all ranks)
    logits_all = distributed.gather_in_order(found.logits, push_loader.sampler)
    y_global = distributed.gather_in_order(found.targets, push_loader.sampler)
    win = project(model, found, shard)
    acc_before = (logits_all.argmax(1) == y_global).float().mean().item()
    sims = pushed_similarities(model, found.latents, push_loader)
    with precision.autocast(device, False):  # the evaluated model's logits, as `predict` has them
        acc_after = (model.last_layer(sims).argmax(1) == y_global).float().mean().item()
    boxes_, upsampled = boxes(win.maps, found.input_hw)  # the winners' maps in input pixels -> box
    t_boxes = time.perf_counter()
    records = provenance_records(model, win, boxes_, y_global, class_names, getattr(dataset, "image_ids", None), found.input_hw)
    unpushed = [r["prototype"] for r in records if not r["pushed"]]
    if unpushed:
        missing = sorted({r["class"] for r in records if not r["pushed"]})
        log.warning("push: no push images of class(es) %s; %d prototypes kept unchanged", ", ".join(missing), len(unpushed))
    target = Path(out_dir) if out_dir is not None else None
    rendering = render(records, upsampled, dataset, found.input_hw, target, mean, std, render_async)
    t_end = time.perf_counter()
    model.train(was_training)
    return PushResult(
        prototypes=records, accuracy_before=acc_before, accuracy_after=acc_after, unpushed=unpushed,
        similarities=sims, targets=y_global, seconds=t_end - t_start, out_dir=target, rendering=rendering,
        timings={"search": t_loop - t_start, "project_and_boxes": t_boxes - t_loop, "render": t_end - t_boxes},
    )  # fmt: skip



__all__ = ["BOX_COLOR", "BOX_PERCENTILE", "PushResult", "RENDER_CHUNK", "push_prototypes", "render_prototypes"]
