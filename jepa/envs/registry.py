"""Embedded environments by name (what a config's ``world_model.env`` names)."""

from __future__ import annotations

from typing import Any

from jepa.envs.two_rooms import TwoRooms

#: Environments :func:`make_env` builds, by name.
ENVS = {"two_rooms": TwoRooms}


def make_env(name: str, **kwargs: Any) -> Any:
    """The embedded environment called ``name`` (``"two_rooms"``), built with ``kwargs``."""
    if not isinstance(name, str) or name not in ENVS:
        raise ValueError(f"make_env: unknown environment {name!r}; expected one of {', '.join(sorted(ENVS))}")
    return ENVS[name](**kwargs)
