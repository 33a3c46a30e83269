"""The SHA-256 of a checkpoint's weights (every state_dict tensor's bytes, in key order).

A study spread over sessions retrains its starting models when their checkpoints are gone; runs
kept from an earlier session pair with the new ones only if the retrained weights are bit for bit
the same, which this digest shows (training on CPU is deterministic on one kind of machine, but
bfloat16 kernels differ between CPU kinds).

Usage: python scripts/weights_digest.py CHECKPOINT [CHECKPOINT ...]   (prints one JSON line each)
"""

from __future__ import annotations

import hashlib
import json
import sys

import torch


def digest(path: str) -> str:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(json.dumps({"checkpoint": path, "weights_sha256": digest(path)}))
