"""jepa.hub without transformers: importing it costs nothing, and the converters say what to install."""

import subprocess
import sys

import pytest

from jepa.hub import from_pretrained, from_transformers, to_transformers
from jepa.models.vision import VisionTransformer


def test_importing_jepa_hub_does_not_import_transformers():
    code = "import sys, jepa.hub; print('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_missing_transformers_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    vit = VisionTransformer(image_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    with pytest.raises(ImportError, match=r"pip install 'jepa-torch\[hf\]'"):
        to_transformers(vit)
    with pytest.raises(ImportError, match=r"jepa-torch\[hf\]"):
        from_transformers(object())
    (tmp_path / "config.json").write_text('{"model_type": "ijepa"}')
    with pytest.raises(ImportError, match=r"jepa-torch\[hf\]"):
        from_pretrained(tmp_path)
