"""The ``jepa`` command: ``train``, ``evaluate``, ``config``."""

from jepa.cli.main import main

__all__ = ["main"]
