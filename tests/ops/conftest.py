"""Shared fixtures of the jepa.ops tests."""

from __future__ import annotations

import os

import pytest

from jepa.ops import _backend, _native


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def native():
    """The compiled extension jepa._C.

    Skips where it is genuinely absent (e.g. running from a source tree that was never built), but fails
    under CI (``CI`` set) or with ``JEPA_REQUIRE_EXTENSION=1``: there it is always built, so its tests must run.
    """
    mod = _backend.native_module()
    if mod is None:
        try:
            from jepa import _C  # noqa: F401, PLC0415
        except ImportError as exc:
            reason = f"jepa._C is not built ({exc})"
        else:  # pragma: no cover - native_module() and a direct import disagree
            reason = "jepa._C imports but jepa.ops cannot see it"
        if _truthy("CI") or _truthy("JEPA_REQUIRE_EXTENSION"):
            pytest.fail(f"{reason}; it must be built here (pip install .)")
        pytest.skip(reason)
    return mod


@pytest.fixture(autouse=True)
def _clean_backend_state(monkeypatch):
    """Each test starts with no forced backend and an empty plan cache."""
    monkeypatch.delenv("JEPA_BACKEND", raising=False)
    _native.clear_plan_cache()
    yield
    _native.clear_plan_cache()
