"""The README's layout block names the tree as it is: every top-level folder, and no file that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout() -> dict[str, str]:
    """Each top-level folder of the layout block -> the text that describes it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    folder = ""
    for line in block.splitlines():
        head = re.match(r"^([\w./-]+/)\s", line)
        if head:
            folder = head.group(1).split("/")[0]
            entries[folder] = line[head.end():]
        elif folder:
            entries[folder] += " " + line.strip()
    return entries


def test_every_top_level_folder_is_in_the_layout() -> None:
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "var"))}
    folders -= {"imagegen.egg-info", "build", "dist", "__pycache__"}
    assert folders <= set(_layout()), f"missing from the README layout: {folders - set(_layout())}"


def test_every_file_the_layout_names_exists() -> None:
    for folder, text in _layout().items():
        for name in re.findall(r"[\w/]+\.(?:py|md)\b", text):
            if name.endswith(".md") and folder == "docs":
                assert (ROOT / "docs" / name).exists(), f"docs/{name}"
            elif name.endswith(".py"):
                assert list((ROOT / folder).rglob(Path(name).name)), f"{folder}/ has no {name}"
