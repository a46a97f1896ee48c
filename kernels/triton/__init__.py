"""Triton kernels of jepa, one module per op (``jepa.kernels.triton.<op>``).

Modules here import ``triton`` at import time, so only :mod:`jepa.ops` imports them, lazily, when the
``triton`` backend is selected: ``attention`` (flash attention forward/backward), ``jepa_loss``,
``info_nce`` and ``ema`` (multi-tensor EMA); see kernels/README.md.
"""
