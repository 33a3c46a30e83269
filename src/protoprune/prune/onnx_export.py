"""ONNX export that users can run: torch's current exporter, checked by onnxruntime.

`torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript) is tried first; where it fails
on a model, or its graph disagrees with torch, the legacy TorchScript exporter is used with a
warning. Every file is then run by onnxruntime on real images (bundled DermaMNIST test images,
resized to the model's input) and compared with torch: a difference above `atol` (1e-4 in
float32) times the output's scale (its largest magnitude, at least 1) is an error, so a written
.onnx computes what the model computes. The scale: a ProtoPNet's logits reach tens (similarities
up to log(1 / 1e-4) = 9.2 summed over the prototypes), where float32's rounding of two different
summation orders alone differs by more than 1e-4 (1.07e-4 measured on an AVX-512 CPU). A ProtoPNet exports
two outputs, `logits` and `similarities` (the last layer's input, one per prototype).
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ProtopruneError
from ..io import atomic_write_bytes

log = logging.getLogger(__name__)

ATOL = 1e-4  # max abs difference onnxruntime vs torch, float32, per unit of the output's scale
EXPORTERS = ("dynamo", "legacy")  # tried in this order; the first whose graph matches torch wins
PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class OnnxExportError(ProtopruneError):
    """An exported graph that cannot be made to compute what the model computes."""


def require_onnx_packages() -> None:
    """Fail now, with the fix, when the ONNX packages are missing (before any long work)."""
    import importlib.util

    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ProtopruneError(
            f"ONNX export needs the packages {', '.join(missing)}",
            "pip install 'protoprune[onnx]' (onnx, onnxscript, onnxruntime), or skip the export "
            "(prune-filters --no-export)",
        )


class ProtoPNetOutputs(nn.Module):
    """A ProtoPNet as ONNX sees it: image -> (logits, similarities)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.forward_details(image)
        return out.logits, self.model.distance_to_similarity(out.min_distances)


def exportable(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A CPU eval copy of `model` in its export form and its output names."""
    from ..protopnet.model import ProtoPNet

    cpu = copy.deepcopy(model).to("cpu").eval()
    if isinstance(cpu, ProtoPNet):
        return ProtoPNetOutputs(cpu).eval(), ["logits", "similarities"]
    return cpu, ["logits"]


def sample_images(
    image_size: int,
    n: int = 8,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> torch.Tensor:
    """`n` real images (bundled DermaMNIST test split) resized and normalised: (n, 3, S, S)."""
    from ..data.medmnist import load_medmnist
    from ..data.registry import bundled_path
    from ..data.transforms import build_transform

    test = load_medmnist(bundled_path("dermamnist_subset.npz")).test
    transform = build_transform(image_size, mean, std, train=False)
    step = max(len(test) // n, 1)
    return torch.stack([transform(test.load_image(i)) for i in range(0, step * n, step)][:n])


def onnx_max_abs_diff(model: nn.Module, path: str | Path, images: torch.Tensor) -> dict[str, float]:
    """Run the .onnx file with onnxruntime on `images`; max |onnx - torch| per output."""
    return _max_abs_diff(*exportable(model), path, images)[0]


def _max_abs_diff(
    module: nn.Module, names: list[str], path: str | Path, images: torch.Tensor
) -> tuple[dict[str, float], dict[str, float]]:
    """Per output: the largest |onnxruntime - torch| and the output's scale (max |torch|, >= 1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.float().cpu().numpy()}
    got = session.run(None, feed)
    with torch.no_grad():
        expected = module(images.float().cpu())
    expected = expected if isinstance(expected, tuple) else (expected,)
    diff = {name: float(np.abs(g - e.numpy()).max()) for name, g, e in zip(names, got, expected)}
    scale = {name: max(1.0, float(e.abs().max())) for name, e in zip(names, expected)}
    return diff, scale


def _dynamo_bytes(module: nn.Module, example: torch.Tensor, names: list[str]) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]  # INFO per pass
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export's notes on its own internals
            program = torch.onnx.export(
                module, (example,), input_names=["image"], output_names=names,
                dynamic_shapes=({0: batch},), dynamo=True, verbose=False,
            )  # fmt: skip
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return program.model_proto.SerializeToString()


def _legacy_bytes(module: nn.Module, example: torch.Tensor, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in ["image", *names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # said once, in our own warning
        torch.onnx.export(
            module, (example,), buffer, input_names=["image"], output_names=names,
            dynamic_axes=axes, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()


def write_onnx(
    model: nn.Module,
    path: str | Path,
    image_size: int,
    images: torch.Tensor | None = None,
    atol: float = ATOL,
) -> dict[str, object]:
    """Export `model` to `path` (dynamic batch), checked with onnx.checker and onnxruntime.

    Returns {"path", "exporter": "dynamo" | "legacy", "max_abs_diff": {output: value},
    "scale": {output: max |torch output|, at least 1}}.
    """
    import onnx

    require_onnx_packages()
    module, names = exportable(model)
    images = sample_images(image_size) if images is None else images
    example = images[:2].float().cpu()
    path = Path(path)
    problems = []
    for exporter in EXPORTERS:
        export = _dynamo_bytes if exporter == "dynamo" else _legacy_bytes
        try:
            data = export(module, example, names)
        except Exception as exc:  # the exporter cannot handle this model
            problems.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            if exporter == "dynamo":
                log.warning("the dynamo ONNX exporter cannot export %s (%s); using the legacy "
                            "TorchScript exporter", path.name, problems[-1])  # fmt: skip
            continue
        atomic_write_bytes(path, data)
        onnx.checker.check_model(onnx.load(str(path)))
        diff, scale = _max_abs_diff(module, names, path, images)
        if all(diff[name] <= atol * scale[name] for name in names):
            log.info("%s (%s exporter): max |onnxruntime - torch| %s", path.name, exporter, diff)
            return {"path": path, "exporter": exporter, "max_abs_diff": diff, "scale": scale}
        problems.append(f"{exporter}: max abs difference {diff} > {atol} x the outputs' scale {scale}")
        if exporter == "dynamo":
            log.warning("the dynamo ONNX export of %s differs from torch (%s); using the legacy "
                        "TorchScript exporter", path.name, diff)  # fmt: skip
    path.unlink(missing_ok=True)
    raise OnnxExportError(
        f"no ONNX export of this model computes what torch computes ({'; '.join(problems)})",
        "report it with the model's config; the model's .pt file is unaffected",
    )


def _saved_model(path: Path) -> tuple[nn.Module, object, Path]:
    """(model, its RunConfig, the file) of a training checkpoint or a pruned classifier file."""
    from ..train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)  # a pruned model's too, in either format
    return model_from_checkpoint(ckpt), checkpoint_config(ckpt), Path(ckpt["path"])


def export_checkpoint_onnx(
    checkpoint: str | Path, out: str | Path | None = None, force: bool = False
) -> dict[str, object]:
    """Export a saved model (a checkpoint, its run folder, or a pruned step_XX.pt) to ONNX, by
    default next to it as .onnx; verified on real images normalised as the model was trained."""
    from ..errors import OutputExistsError

    require_onnx_packages()
    model, cfg, source = _saved_model(Path(checkpoint))
    out = Path(out) if out else source.with_suffix(".onnx")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists", "give another --out, or --force to replace it")
    d = cfg.data
    images = sample_images(d.image_size, mean=d.mean, std=d.std)
    return {"source": str(source), **write_onnx(model, out, d.image_size, images)}
