"""Rules of workflow/rules/report.smk: the "Models" section's pieces and the rendered report."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_path, write_provenance
from ..report.models import model_table, training_curves_figure
from ..report.plotting import markdown_table
from ..report.render import render


def model_summary(*, models: list[str], table: str, csv: str, curves: str) -> None:
    """The model table (markdown + CSV) and the training-curve figure."""
    df = model_table(models)
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(table) as tmp:
        tmp.write_text(markdown_table(df))
    training_curves_figure(models, curves)


def report(
    *,
    source: str,
    pieces: list[str],
    html: str,
    provenance: str,
    sections: list[dict],
    renderer: str,
    config: dict,
    seed: int,
) -> None:
    """Render report/report.qmd with the registry's sections; `pieces` are every switched-on section's
    rule outputs, written under results/report/{section}/ next to `html`."""
    root = Path(html).parent
    assets = {str(Path(p).relative_to(root)): p for p in pieces}
    used = render(str(Path(source).parent), assets, html, renderer, sections)
    write_provenance(Path(provenance).parent, config, seed, renderer=used)
