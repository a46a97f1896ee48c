"""The installed distribution: its name on PyPI, its import name, and what a plain install brings."""

import importlib.metadata as md
import re

import jepa

DIST = "jepa-torch"


def _requirements(extra=None):
    """Requirement names of the distribution, without an extra (extra=None) or of one extra."""
    names = set()
    for req in md.requires(DIST) or []:
        spec, _, marker = req.partition(";")
        in_extra = re.search(r'extra\s*==\s*"([^"]+)"', marker)
        if (in_extra.group(1) if in_extra else None) == extra:
            names.add(re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0].lower())
    return names


def test_distribution_is_jepa_torch_imported_as_jepa():
    dist = md.distribution(DIST)
    assert dist.metadata["Name"] == DIST and dist.version == jepa.__version__
    assert dist.entry_points.select(group="console_scripts", name="jepa")  # the `jepa` command


def test_plain_install_brings_matplotlib_for_history_png():
    assert {"torch", "numpy", "matplotlib"} <= _requirements()
    assert {"transformers", "wandb", "tensorboard"}.isdisjoint(_requirements())  # optional stay optional


def test_extras():
    assert _requirements("hf") == {"transformers"}
    assert _requirements("docs") == {"sphinx", "myst-parser", "furo"}
    assert {"pytest", "transformers", "wandb", "sphinx", "myst-parser", "furo"} <= _requirements("test")
