"""Triton kernels of jepa, one module per op (``jepa.kernels.triton.<op>``).

Modules here import ``triton`` at import time, so only :mod:`jepa.ops` imports them, lazily, when the
``triton`` backend is selected. No op has a Triton kernel yet: ``ema_update`` is C++/CUDA (jepa._C).
"""
