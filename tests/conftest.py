import os

import pytest
import torch

# Subprocesses started by tests (python -c, -m jepa.cli, torchrun) must import the installed jepa
# (with its compiled jepa._C and jepa.kernels), not the source tree that the current directory holds
# when pytest runs from the repository root: Python >= 3.11 then leaves the cwd off sys.path.
os.environ.setdefault("PYTHONSAFEPATH", "1")

# Without a GPU, Triton kernels are tested on CPU tensors through Triton's interpreter. It must be
# switched on before triton is first imported, so here, not in a test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Small, deterministic and quick: the suite runs on 2 CPU cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def pair_loader():
    """A tiny TensorDataset of (state_t, state_t1) pairs shaped (N, T, D)."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 5, 16, generator=g)
    y = x.roll(1, dims=1) + 0.1 * torch.randn(48, 5, 16, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
