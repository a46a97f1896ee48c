"""The documentation builds with warnings as errors (`sphinx-build -W`), from the installed package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from doc_blocks import DOCS

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("furo")


def test_sphinx_build_has_no_warnings(tmp_path):
    # Run from tmp_path with PYTHONSAFEPATH (tests/conftest.py): autodoc imports the installed jepa,
    # never the source tree, as docs/conf.py promises.
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, f"sphinx-build -W failed:\n{out.stderr[-6000:]}"
    html = tmp_path / "html"
    for page in ("index", "training-api/v0", "training-api/v1", "api/jepa.trainer", "api/jepa.hub", "guides/kernels"):
        assert (html / f"{page}.html").is_file(), page
    # the API was rendered from the code: the trainer's class and a hub function have their entries
    assert 'id="jepa.trainer.JEPATrainer"' in (html / "api/jepa.trainer.html").read_text()
    assert 'id="jepa.hub.from_transformers"' in (html / "api/jepa.hub.html").read_text()
    # the included README and kernels/README sections made it in
    assert "How to add an op" in (html / "guides/kernels.html").read_text()
    assert "crash-safe saves" in (html / "guides/reliability.html").read_text()
