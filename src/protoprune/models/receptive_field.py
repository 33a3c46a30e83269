"""Receptive fields of latent cells: which input pixels a cell of a trunk's output map can see.

Analytic: every layer maps a cell of its output to a window of its input (kernel, stride,
padding, dilation), so per axis a cell i of any tensor sees the input pixels
[start + i * jump, start + i * jump + size) (Araujo et al., Distill 2019). Branches that meet
again (a ResNet block's shortcut, a DenseNet block's concatenation) see the union of their
windows. The arithmetic is written here because no installed library computes it for
torchvision's residual and dense blocks (torchvision, zennit and torch-pruning do not).

Empirical: the support of the input gradient of one latent cell in a linearised copy of the
trunk (activations removed, max-pools made average pools, all weights positive), where no ReLU
or max-pool can hide a path; `tests/models/test_receptive_field.py` checks the two agree.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.densenet import _DenseBlock
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..errors import ConfigError

# layers that never move or widen a window (per-position or per-channel maps)
_POINTWISE = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU,
    nn.Identity, nn.Dropout, nn.Dropout2d,
)  # fmt: skip

LOCALISED_LIMIT = 0.5  # a cell that sees more than this share of the image is not a "part"


@dataclass(frozen=True)
class Window:
    """Per axis: cell i sees input pixels [start + i * jump, start + i * jump + size)."""

    start: int
    jump: int
    size: int

    def then(self, kernel: int, stride: int, padding: int, dilation: int = 1) -> Window:
        """The window after one more layer with these (per-axis) parameters."""
        return Window(
            self.start - padding * self.jump,
            self.jump * stride,
            self.size + (kernel - 1) * dilation * self.jump,
        )

    def union(self, other: Window) -> Window:
        if other.jump != self.jump:
            raise ConfigError(
                f"two branches with different strides ({self.jump} and {other.jump}) meet",
                "the receptive field is defined for branches of one output grid only",
            )
        start = min(self.start, other.start)
        end = max(self.start + self.size, other.start + other.size)
        return Window(start, self.jump, end - start)


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of every cell of a trunk's output map, in input pixels (y, x)."""

    y: Window
    x: Window

    def box(self, h: int, w: int, input_hw: tuple[int, int], cells: int = 1) -> list[int]:
        """(y0, y1, x0, x1), end exclusive, clipped to the image, of the `cells` x `cells` patch
        whose top-left latent cell is (h, w) (a prototype of size `cells`)."""
        y0 = self.y.start + h * self.y.jump
        y1 = self.y.start + (h + cells - 1) * self.y.jump + self.y.size
        x0 = self.x.start + w * self.x.jump
        x1 = self.x.start + (w + cells - 1) * self.x.jump + self.x.size
        hh, ww = input_hw
        return [max(0, y0), min(hh, y1), max(0, x0), min(ww, x1)]

    def fraction(self, h: int, w: int, input_hw: tuple[int, int], cells: int = 1) -> float:
        """Share of the image's pixels inside the (clipped) box."""
        y0, y1, x0, x1 = self.box(h, w, input_hw, cells)
        return (y1 - y0) * (x1 - x0) / float(input_hw[0] * input_hw[1])

    def max_fraction(
        self, positions: tuple[int, int], input_hw: tuple[int, int], cells: int = 1
    ) -> float:
        """The largest share any of the (H', W') patch positions of a distance map sees."""
        return max(
            self.fraction(h, w, input_hw, cells)
            for h in range(positions[0])
            for w in range(positions[1])
        )

    def record(self, h: int, w: int, input_hw: tuple[int, int], cells: int = 1) -> dict:
        """rf_y0, rf_y1, rf_x0, rf_x1 (input pixels, end exclusive) and rf_fraction of a patch."""
        box = self.box(h, w, input_hw, cells)
        out = dict(zip(("rf_y0", "rf_y1", "rf_x0", "rf_x1"), box))
        return {**out, "rf_fraction": round(self.fraction(h, w, input_hw, cells), 4)}


def localisation(
    rf: ReceptiveField | None, positions: tuple[int, int], input_hw: tuple[int, int], cells: int,
    effective: dict | None = None,
) -> dict:  # fmt: skip
    """What a box on this model's explanations can mean: the receptive field per latent cell, the
    largest share of the image a patch can see, and a plain warning when a patch is not a part.

    With `effective` (`effective_receptive_field`'s record) the warning and `localised` use the
    effective field's area share: the analytic field of a deep trunk exceeds the image (ResNet18's
    last stage: 435 px) and would flag every model, while where the gradient mass lies is what
    says whether a prototype can be a part of a lesion. Without it, the analytic share decides."""
    if rf is None and effective is None:
        return {"receptive_field": None, "max_fraction": None, "localised": None, "warning": None}
    out: dict = {"receptive_field": None, "max_fraction": None}
    if rf is not None:
        size = (rf.y.size + (cells - 1) * rf.y.jump, rf.x.size + (cells - 1) * rf.x.jump)
        out["receptive_field"] = {"size": list(size), "stride": [rf.y.jump, rf.x.jump],
                                  "start": [rf.y.start, rf.x.start]}  # fmt: skip
        out["max_fraction"] = round(rf.max_fraction(positions, input_hw, cells), 4)
    if effective is not None:
        out["effective"] = {k: effective[k] for k in ("box", "side_share", "area_share", "mass")}
        share = effective["area_share"]
        what = (f"puts {100 * effective['mass']:.0f} % of its input-gradient mass in a box of "
                f"{100 * share:.0f} % of the {input_hw[0]} x {input_hw[1]} px input (its "
                "effective receptive field)")  # fmt: skip
    else:
        share = out["max_fraction"]
        f = out["receptive_field"]
        what = (f"sees up to {100 * share:.0f} % of the {input_hw[0]} x {input_hw[1]} px input "
                f"(receptive field {f['size'][0]} x {f['size'][1]} px, "
                f"stride {f['stride'][0]} px)")  # fmt: skip
    out["localised"] = share <= LOCALISED_LIMIT
    out["warning"] = None if out["localised"] else (
        f"Each prototype patch of this model {what}: the boxes mark where a similarity peaks, "
        "they are not localised parts of the lesion."
    )  # fmt: skip
    return out


def receptive_field_or_none(model: nn.Module) -> ReceptiveField | None:
    """`receptive_field(model)`, or None for a trunk it cannot trace (explanations go on
    without the receptive-field boxes)."""
    try:
        return receptive_field(model)
    except ConfigError:
        return None


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _layer(rf: ReceptiveField, module: nn.Module) -> ReceptiveField:
    k, s, p = (
        _pair(module.kernel_size),
        _pair(module.stride or module.kernel_size),
        _pair(module.padding),
    )
    d = _pair(getattr(module, "dilation", 1))
    return ReceptiveField(rf.y.then(k[0], s[0], p[0], d[0]), rf.x.then(k[1], s[1], p[1], d[1]))


def _union(a: ReceptiveField, b: ReceptiveField) -> ReceptiveField:
    return ReceptiveField(a.y.union(b.y), a.x.union(b.x))


def _through(rf: ReceptiveField, module: nn.Module) -> ReceptiveField:
    """The receptive field of `module`'s output given that of its input."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return _layer(rf, module)
    if isinstance(module, _POINTWISE):
        return rf
    if isinstance(module, (BasicBlock, Bottleneck)):
        convs = [module.conv1, module.conv2] + (
            [module.conv3] if isinstance(module, Bottleneck) else []
        )
        main = rf
        for conv in convs:
            main = _layer(main, conv)
        short = rf if module.downsample is None else _through(rf, module.downsample)
        return _union(main, short)
    if isinstance(module, _DenseBlock):  # output = concat(input, every layer's output)
        seen = rf
        for layer in module.values():
            seen = _union(seen, _sequence(seen, layer))
        return seen
    if type(module).__name__ == "_DenseLayer" or isinstance(module, nn.Sequential):
        return _sequence(rf, module)  # a dense layer applies its children in order
    if hasattr(module, "body") and hasattr(module, "final_relu"):  # models.backbones.Features
        return _through(rf, module.body)
    raise ConfigError(
        f"cannot compute the receptive field through a {type(module).__name__}",
        "use a trunk built from torchvision ResNet, VGG or DenseNet layers (or nn.Sequential "
        "of Conv2d / pooling / pointwise layers)",
    )


def _sequence(rf: ReceptiveField, module: nn.Module) -> ReceptiveField:
    for child in module.children():
        rf = _through(rf, child)
    return rf


def receptive_field(trunk: nn.Module) -> ReceptiveField:
    """Analytic receptive field of the output cells of `trunk` (a Features, a Sequential, a
    ResNet / DenseNet block, a ProtoPNet: its trunk and 1x1 add-on)."""
    start = ReceptiveField(Window(0, 1, 1), Window(0, 1, 1))
    if hasattr(trunk, "add_on_layers") and hasattr(trunk, "features"):  # a ProtoPNet
        return _through(_through(start, trunk.features), trunk.add_on_layers)
    return _through(start, trunk)


def _linearised(trunk: nn.Module) -> nn.Module:
    """A float64 copy without activations, with average instead of max pools and positive
    weights: its input gradient is non-zero exactly where some path reaches the input."""
    lin = copy.deepcopy(trunk).double().eval()
    for child in list(lin.modules()):
        for cname, sub in list(child.named_children()):
            if isinstance(sub, nn.MaxPool2d):
                setattr(child, cname, nn.AvgPool2d(sub.kernel_size, sub.stride, sub.padding,
                                                   ceil_mode=sub.ceil_mode))  # fmt: skip
            elif isinstance(sub, _POINTWISE) and not isinstance(sub, nn.BatchNorm2d):
                setattr(child, cname, nn.Identity())
    with torch.no_grad():
        for m in lin.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.running_var.fill_(1.0 - m.eps)
    if hasattr(lin, "final_relu"):
        lin.final_relu = False
    return lin


def empirical_boxes(
    trunk: nn.Module, input_hw: tuple[int, int], cells: list[tuple[int, int]]
) -> list[list[int]]:
    """(y0, y1, x0, x1) per latent cell in `cells`: the bounding box of the input pixels with a
    non-zero gradient of that cell in the linearised trunk (its forward takes (1, 3, H, W))."""
    lin = _linearised(trunk)
    x = torch.zeros(1, 3, *input_hw, dtype=torch.float64, requires_grad=True)
    out = lin(x)
    boxes = []
    for cell in cells:
        (grad,) = torch.autograd.grad(out[0, :, cell[0], cell[1]].sum(), x, retain_graph=True)
        seen = grad[0].abs().sum(0) > 0
        rows = seen.any(1).nonzero().flatten()
        cols = seen.any(0).nonzero().flatten()
        boxes.append([int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1])
    return boxes


def effective_receptive_field(
    trunk: nn.Module, images: torch.Tensor, mass: float = 0.9, cell: tuple[int, int] | None = None
) -> dict:
    """What a latent cell effectively depends on (Luo et al. 2016): the |input gradient| of one
    cell's features (summed over channels), summed over `images` (N, 3, H, W), and the smallest
    box centred on the cell's centre that holds `mass` of it.

    The analytic field says which pixels a cell can see (ResNet18's last stage: 435 px, more than
    a 224 px image); the effective field says where its input gradient mass lies, which is what a
    user asking "does a prototype see a part?" needs. `cell` defaults to the map's centre.
    Returns the box (y0, y1, x0, x1) and its side and area as shares of the image.
    """
    trunk = trunk.eval()
    x = images.detach().clone().requires_grad_(True)
    out = trunk(x)
    h, w = out.shape[-2:]
    cy, cx = cell if cell is not None else (h // 2, w // 2)
    (grad,) = torch.autograd.grad(out[:, :, cy, cx].sum(), x)
    density = grad.abs().sum((0, 1)).double()
    H, W = density.shape
    # the cell's centre in input pixels: the same fraction of the image as of the map
    py, px = (cy + 0.5) * H / h, (cx + 0.5) * W / w
    total = float(density.sum())
    box = [0, H, 0, W]
    for r in range(1, max(H, W) + 1):  # grow a square around the centre until it holds `mass`
        y0, y1 = max(0, round(py - r / 2)), min(H, round(py + r / 2))
        x0, x1 = max(0, round(px - r / 2)), min(W, round(px + r / 2))
        if total > 0 and float(density[y0:y1, x0:x1].sum()) >= mass * total:
            box = [y0, y1, x0, x1]
            break
    side = max(box[1] - box[0], box[3] - box[2])
    return {"box": box, "side": side, "side_share": side / max(H, W),
            "area_share": (box[1] - box[0]) * (box[3] - box[2]) / (H * W), "mass": mass,
            "map": (h, w)}  # fmt: skip


def latent_effective_field(model: nn.Module, images: torch.Tensor, mass: float = 0.9) -> dict:
    """`effective_receptive_field` of a ProtoPNet's latent map (its trunk and add-on layers, what
    the prototypes are compared with), computed with gradients on even inside torch.no_grad."""
    with torch.enable_grad():
        trunk = nn.Sequential(model.features, model.add_on_layers)
        return effective_receptive_field(trunk, images, mass)
