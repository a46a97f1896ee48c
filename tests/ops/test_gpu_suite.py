"""benchmarks/gpu_suite.sh where CI runs (no GPU): it must parse, say ``no GPU: skipped`` and exit 0, so
that the script the GPU machines run is at least syntactically sound and its skip path honest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the suite would really run")
def test_without_a_gpu_it_skips_and_exits_0(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("no GPU: skipped"), proc.stdout
    assert not out.exists(), "nothing is built or written without a GPU"


def test_unknown_arguments_are_refused(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--outt", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown argument '--outt'" in proc.stderr
