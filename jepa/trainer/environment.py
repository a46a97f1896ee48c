"""Reproducibility and what this process computes on (the v0 helpers of :mod:`jepa.trainer.utils`)."""

from __future__ import annotations

import os
import platform
import random
from typing import Any

import numpy as np
import torch

from jepa import ops
from jepa.trainer.checks import check_int

__all__ = ["get_device_info", "setup_reproducibility"]


def setup_reproducibility(seed: int = 42, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (all devices); with ``deterministic`` also ask torch for
    deterministic algorithms (slower, raises on ops without one). Returns the seed."""
    check_int("seed", seed, minimum=0, owner="setup_reproducibility")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def get_device_info() -> dict[str, Any]:
    """What this process can compute on: torch version, CPU threads, CUDA devices, jepa backends."""
    info: dict[str, Any] = {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "devices": [],
        "jepa_backends": ops.available_backends(),
    }
    if torch.cuda.is_available():
        info["cuda_version"] = torch.version.cuda
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["devices"].append(
                {"index": i, "name": props.name, "total_memory_gb": round(props.total_memory / 2**30, 2), "capability": f"{props.major}.{props.minor}"}
            )
    return info


