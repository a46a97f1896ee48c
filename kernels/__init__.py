"""jepa.kernels: device code shipped with the wheel (this folder is installed as ``jepa/kernels``).

- ``jepa.kernels.triton``: Triton kernels, one module per op, imported lazily by :mod:`jepa.ops`.
- ``kernels/cuda/*.cu``: CUDA sources compiled into the extension ``jepa._C`` when CMake finds a CUDA
  toolkit (they are not importable Python).

Only :mod:`jepa.ops` imports from here; see kernels/README.md for how to add an op.
"""
