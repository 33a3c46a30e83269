"""Where a training run keeps its state between steps: `last.pt`, `best.pt`, `history.csv`.

The classifier loop (`train.loop.fit`) and the ProtoPNet schedule (`protopnet.training`) both run
through a `Checkpointer`: after every step it writes `checkpoints/last.pt` (the model, whatever the
trainer needs to continue, and every random state, so that `--resume` continues the same random
stream) and `history.csv`; on an improvement on validation it keeps the weights in memory and in
`checkpoints/best.pt`. Without a run folder (fine-tuning between pruning steps) only the memory copy
is kept. Under torchrun rank 0 writes and the others wait.
"""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import distributed
from ..config import RunConfig
from ..errors import CheckpointError
from ..io import atomic_write_text
from .checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Every random state an epoch consumes, so a resumed run continues the same random stream."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
        "loader": generator.get_state() if generator is not None else None,
    }


def rank_rng_states(generator: torch.Generator | None) -> dict[str, Any]:
    """Checkpoint entries for the random states: rank 0's (`rng`) and, under DDP, every rank's.

    A collective: every rank must call it, also those that do not write the checkpoint.
    """
    own = rng_state(generator)
    if not distributed.is_distributed():
        return {"rng": own}
    return {"rng": own, "rng_per_rank": distributed.all_gather_object(own)}


def restore_rank_rng(ckpt: dict[str, Any], generator: torch.Generator | None, seed: int, step: int) -> None:
    """Restore this rank's random state; with another world size, re-derive it from the seed.

    Resume is exact only at the world size that wrote the checkpoint: the random stream of a rank
    that did not exist (or a different sharding) cannot be continued, so it restarts from
    (seed, rank, step), which is reproducible but not the uninterrupted run's stream.
    """
    per_rank = ckpt.get("rng_per_rank")
    size = len(per_rank) if per_rank is not None else 1
    if size == distributed.world_size():
        restore_rng_state(per_rank[distributed.rank()] if per_rank is not None else ckpt["rng"], generator)
        return
    log.warning("resuming a %d-process checkpoint with %d processes: random states re-derived from the seed "
                "(the run continues reproducibly, but not bit-identical to an uninterrupted run)",
                size, distributed.world_size())  # fmt: skip
    distributed.seed_ranks(seed, step, generator, all_ranks=True)


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if generator is not None and state.get("loader") is not None:
        generator.set_state(state["loader"])


class Checkpointer:
    """A run's `last.pt` / `best.pt` / `history.csv`, and the best weights seen so far.

    `stage` names the trainer that writes `last.pt` ("fit", "protopnet"): a resume refuses a
    `last.pt` another trainer wrote, whose entries it could not read.
    """

    def __init__(self, run_dir: str | Path | None, cfg: RunConfig, class_names: list[str], stage: str,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.dir = self.run_dir / "checkpoints" if self.run_dir is not None else None
        self.cfg, self.class_names, self.stage, self.generator = cfg, list(class_names), stage, generator
        self.write = self.dir is not None and distributed.is_main()  # rank 0 writes, the others wait
        self.best_state: dict[str, torch.Tensor] | None = None

    def resume(self, what: str, fix: str) -> dict[str, Any] | None:
        """The `last.pt` to continue from (None when there is none) and the best weights so far.

        Restores the random states only once the trainer calls `restore_rng` (after it has rebuilt
        whatever consumes randomness while loading)."""
        if self.dir is None or not (self.dir / "last.pt").is_file():
            return None
        last = load_checkpoint(self.dir / "last.pt")
        if last.get("stage") != self.stage:
            raise CheckpointError(f"{self.dir / 'last.pt'} is not a {what} checkpoint", fix)
        if (self.dir / "best.pt").is_file():
            self.best_state = load_checkpoint(self.dir / "best.pt")["state_dict"]
        return last

    def restore_rng(self, last: dict[str, Any], step: int) -> None:
        restore_rank_rng(last, self.generator, self.cfg.seed, step)

    def keep_best(self, model: nn.Module, epoch: int, val: dict[str, Any]) -> None:
        """The model improved on validation: keep its weights (memory and `best.pt`)."""
        self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.write:
            save_checkpoint(self.dir / "best.pt", model, self.cfg, self.class_names, stage="best", epoch=epoch, val=val)

    def save_last(self, model: nn.Module, history: list[dict[str, Any]], /, **entries: Any) -> None:
        """After a step: `history.csv` and `last.pt` with `entries` and the random states.

        A collective under torchrun (every rank gathers its random state, then waits for rank 0)."""
        if self.dir is not None:
            rng = rank_rng_states(self.generator)
            if self.write:
                atomic_write_text(self.run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
                save_checkpoint(self.dir / "last.pt", model, self.cfg, self.class_names, stage=self.stage,
                                **entries, **rng)  # fmt: skip
        distributed.barrier()

    def load_best(self, model: nn.Module) -> None:
        """Load the best weights seen into `model` (nothing when none was kept)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
