"""Mixed precision: float16 with gradient scaling on CUDA, bfloat16 on CPUs that compute it natively.

bfloat16 keeps float32's exponent range, so it needs no GradScaler; on a CPU with AVX512-BF16 or
AMX oneDNN runs convolutions in it about twice as fast as in float32 (ResNet18 at 28 px on 2 cores:
63 -> 139 training images/s). On other CPUs it is emulated and slower, hence opt-in there
(`train.cpu_amp`) and a warning when the CPU lacks it. On CPU only training runs in bfloat16
(autocast, and the matrix products of ProtoPNet's last-layer stage): evaluation and push stay in
float32 on every device, so reported metrics and pushed prototypes do not depend on the setting
beyond the weights that training reached, and a pushed prototype is exactly its source patch in
the evaluated model (`protopnet.push_amp` runs the push under autocast instead; the
nearest-patch search of prototype pruning uses float16 autocast on CUDA). Prototype distances are
float32 always (ProtoPNet).
"""

from __future__ import annotations

import functools
import logging

import torch

from ..config import TrainConfig

log = logging.getLogger(__name__)


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private op: absent in some builds
        return False


def use_amp(tc: TrainConfig, device: torch.device) -> bool:
    """Whether training on `device` runs under autocast: `amp` on CUDA, `cpu_amp` on CPU."""
    if device.type == "cuda":
        return bool(tc.amp)
    if device.type == "cpu" and tc.cpu_amp:
        if not cpu_has_native_bf16():
            # measured on 2 AVX2 cores, a small-image ResNet18 step (128 images, 28 px): 81-82 s
            # under bfloat16 autocast against 5.0-5.4 s in float32
            log.warning("train.cpu_amp: this CPU has no native bfloat16 (AVX512-BF16/AMX), so "
                        "bfloat16 is emulated and training runs many times slower than float32 "
                        "(16x on an AVX2 CPU) - set train.cpu_amp: false")  # fmt: skip
        return True
    return False


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def grad_scaler(tc: TrainConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """float16 needs loss scaling; bfloat16 does not."""
    return torch.amp.GradScaler("cuda") if device.type == "cuda" and use_amp(tc, device) else None


__all__ = ["autocast", "cpu_has_native_bf16", "grad_scaler", "use_amp"]
