"""The commands of the images guide and the README's image section use flags and configs that exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from doc_blocks import DOCS, blocks

from jepa.config import shipped_configs


def _jepa_commands(text: str) -> list[list[str]]:
    lines = [line.split("#")[0].strip() for line in text.replace("\\\n", " ").splitlines()]
    out = []
    for line in lines:
        words = line.split()
        if "jepa.cli" in words:
            out.append(words[words.index("jepa.cli") + 1:])
        elif words[:1] == ["jepa"]:
            out.append(words[1:])
    return out


def test_image_commands_use_existing_flags_and_shipped_configs():
    readme = (DOCS.parent / "README.md").read_text()
    section = readme.split("## Your images (I-JEPA)", 1)[1].split("\n## ", 1)[0]
    readme_bash = [b.split("```", 1)[0] for b in section.split("```bash\n")[1:]]
    commands = _jepa_commands("\n".join(blocks("guides/images.md", "bash") + readme_bash))
    assert len(commands) >= 8
    helps: dict[str, str] = {}
    for words in commands:
        command = words[0]
        if command not in helps:
            out = subprocess.run([sys.executable, "-m", "jepa.cli", command, "--help"], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            helps[command] = out.stdout
        for i, word in enumerate(words[1:], 1):
            if word.startswith("--"):
                assert word in helps[command], f"`jepa {' '.join(words)}`: `jepa {command}` has no {word}"
            if words[i - 1] == "--config":
                assert word in shipped_configs() or Path(word).suffix == ".yaml", word
