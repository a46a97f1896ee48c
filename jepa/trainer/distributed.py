"""DistributedTrainer (v0 API). Multi-process training lands with the distributed-training issue."""

from __future__ import annotations

from typing import Any

from jepa.trainer.trainer import JEPATrainer

__all__ = ["DistributedTrainer"]


class DistributedTrainer(JEPATrainer):
    """JEPATrainer for ``torchrun`` launches.

    With ``world_size == 1`` this is an ordinary single-process run. With more processes it raises
    ``NotImplementedError`` until DDP support lands (it never silently trains one process alone).
    """

    def __init__(self, config: Any, world_size: int = 1, rank: int = 0, **kwargs: Any) -> None:
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"DistributedTrainer: world_size must be an int >= 1, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"DistributedTrainer: rank must be in [0, world_size={world_size}), got {rank!r}")
        if world_size > 1:
            raise NotImplementedError(
                f"DistributedTrainer(world_size={world_size}): multi-process training is not implemented yet "
                "(it lands with the distributed-training issue)"
            )
        super().__init__(config, **kwargs)
        self.world_size, self.rank = world_size, rank
