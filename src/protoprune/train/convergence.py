"""How a validation curve ends: whether a training or fine-tuning budget was long enough.

A comparison of methods is only fair when each one has converged under its budget; "converged"
here means what can be read off the recorded curve: the last `last` evaluations added at most
`tolerance` to the best validation score reached before them (a curve stopped by patience adds
nothing by construction). The rule and its numbers are reported, so a reader can apply another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

LAST = 2  # evaluations at the end of the curve that must not add more than the tolerance
TOLERANCE = 0.01  # one point of (balanced) accuracy on the validation split
RULE = (f"A curve is flat when its last {LAST} evaluations added at most {TOLERANCE:g} to the best "
        "validation score before them (the training's selection metric); a fine-tuning round "
        "stopped by patience is flat by construction.")  # the rule as reports print it


def plateau(values: Sequence[float | None], last: int = LAST, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The curve's length, best evaluation (1-based), what its last `last` evaluations added over
    the best before them (`gain_last`; NaN when the curve is not longer than `last`) and
    `flat` (gain_last <= tolerance)."""
    v = [math.nan if x is None else float(x) for x in values]
    if all(math.isnan(x) for x in v):
        return {"evaluations": len(v), "best_evaluation": None, "gain_last": math.nan, "flat": False}
    best = max(range(len(v)), key=lambda i: -math.inf if math.isnan(v[i]) else v[i])  # first best
    head = [x for x in v[:-last] if not math.isnan(x)]
    tail = [x for x in v[-last:] if not math.isnan(x)]
    gain = max(tail) - max(head) if len(v) > last and head and tail else math.nan
    return {"evaluations": len(v), "best_evaluation": best + 1, "gain_last": gain,
            "flat": bool(not math.isnan(gain) and gain <= tolerance)}  # fmt: skip


__all__ = ["plateau", "LAST", "TOLERANCE", "RULE"]
