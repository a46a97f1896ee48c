"""DistributedTrainer: the v0 API's trainer for ``torchrun`` launches.

Published as ``jepa.trainer.distributed.DistributedTrainer`` (where the v0 docs import it) by the
package ``jepa.trainer``: :mod:`jepa.trainer.distributed` holds the DDP glue the trainer imports,
so it cannot import this subclass of the trainer itself.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist

from jepa.trainer.checks import check_int
from jepa.trainer.trainer import JEPATrainer

__all__ = ["DistributedTrainer"]


class DistributedTrainer(JEPATrainer):
    """JEPATrainer for ``torchrun`` launches (v0 API): ``DistributedTrainer(config, world_size, rank)``.

    Builds the trainer of ``config`` with ``distributed=True``: the process group comes from the
    torchrun environment (or the one you already initialised with ``dist.init_process_group``), the
    online encoder and predictor train under ``DistributedDataParallel``, data are sharded with a
    ``DistributedSampler``, and only rank 0 shows progress, logs and writes checkpoints.

    ``rank`` may be the global rank or the local rank (the v0 docs pass ``local_rank``); it is
    checked against the process group. With ``world_size == 1`` and no torchrun environment this is
    an ordinary single-process run.
    """

    def __init__(self, config: Any, world_size: int = 1, rank: int = 0, **kwargs: Any) -> None:
        check_int("world_size", world_size, minimum=1, owner="DistributedTrainer")
        check_int("rank", rank, minimum=0, owner="DistributedTrainer")
        launched = dist.is_available() and (dist.is_initialized() or "WORLD_SIZE" in os.environ)
        if world_size == 1 and not launched:
            if rank != 0:
                raise ValueError(f"DistributedTrainer: rank must be 0 when world_size is 1, got {rank!r}")
            super().__init__(config, **kwargs)
        else:
            super().__init__(config, distributed=True, world_size=world_size, distributed_rank=rank, **kwargs)
        self.world_size = self.dist.world_size if self.dist is not None else 1
        self.rank = self.dist.rank if self.dist is not None else 0
