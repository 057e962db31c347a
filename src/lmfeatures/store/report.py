"""results/report/: the report's pieces (markdown, PNG figures, CSV and JSON tables), each section's
under results/report/{section}/, and the rendered index.html. Written atomically."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from lmfeatures.io import atomic_path, write_json


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_png(fig, path: str | Path, dpi: int) -> None:
    """A matplotlib figure as PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_numbers(path: str | Path, numbers: Any) -> None:
    """A section's numbers as JSON (e.g. the alignment section's metrics.json)."""
    write_json(path, numbers)


def install(built: str | Path, path: str | Path) -> None:
    """Copy a file built elsewhere (the rendered report) to `path`."""
    with atomic_path(path) as tmp:
        shutil.copy2(built, tmp)
