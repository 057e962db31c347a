"""Shared by every report section: one headless backend, one seaborn theme, atomic figure saves,
markdown escaping."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on compute nodes
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lmfeatures.store.report import write_png  # noqa: E402


def set_theme() -> None:
    sns.set_theme(style="whitegrid", context="notebook")


def save_figure(fig: plt.Figure, path: str | Path, dpi: int) -> None:
    """Write `fig` as PNG (atomically) and close it."""
    write_png(fig, path, dpi)
    plt.close(fig)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt) + "\n"


def md_cell(text: str) -> str:
    """Text that stays inside one markdown table cell: pipes escaped, newlines shown as ↵."""
    return text.replace("\n", "↵").replace("|", "\\|")


def md_code(text: str) -> str:
    """Text as inline code in a markdown table cell, shown exactly. Inside a backtick span pandoc
    shows an escaped pipe as the two characters \\|, so this is an HTML <code> whose content is
    markdown-inert: every ASCII punctuation character as a numeric entity (no pipe splits the row, no
    _ or * emphasises), spaces as no-break spaces (markdown collapses runs of spaces), newlines as ↵."""
    if not text.strip():
        return "<code>(whitespace)</code>"
    inert = "".join(
        "\u00a0" if c == " " else c if c.isalnum() or not c.isascii() else f"&#{ord(c)};"
        for c in text.replace("\n", "↵")
    )
    return f"<code>{inert}</code>"
