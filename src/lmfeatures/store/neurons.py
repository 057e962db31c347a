"""results/neurons/{model}/: the neuron pages, one static HTML file per selected neuron
(L{layer}N{index}.html) and index.html."""

from __future__ import annotations

from pathlib import Path


def write_pages(folder: str | Path, pages: dict[str, str]) -> None:
    """Pages as {file name: html}."""
    for name, text in pages.items():
        (Path(folder) / name).write_text(text, encoding="utf-8")
