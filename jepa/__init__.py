"""jepa: fast training of Joint-Embedding Predictive Architectures with PyTorch."""

__version__ = "0.1.0"
