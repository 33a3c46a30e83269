"""Device names (train.device, --device): misspelt or absent ones fail before any work starts."""

from __future__ import annotations

import re

from .errors import ConfigError


def device_syntax_ok(name: str) -> bool:
    """auto | cpu | mps | cuda | cuda:N (whether the device is present is checked on use)."""
    return re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(name)) is not None


DEVICE_FORMS = "auto, cpu, cuda or cuda:N (N: the index of a visible GPU)"


def check_device(name: str, what: str = "train.device") -> str:
    """Refuse a device that is misspelt or absent now, not at the first tensor moved to it."""
    import torch

    if not device_syntax_ok(name):
        raise ConfigError(f"{what} = {name!r} is not a device", f"use {DEVICE_FORMS}")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(
                f"{what} = {name!r} is absent: torch sees {count} CUDA GPU(s) on this machine",
                f"use auto or cpu{f', or cuda:0..cuda:{count - 1}' if count else ''}",
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{what} = 'mps' is absent on this machine", "use auto or cpu")
    return name
