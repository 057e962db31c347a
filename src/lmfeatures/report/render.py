"""Render report/report.qmd into one self-contained HTML file, with the sections the registry lists.

`report/report.qmd` holds the title and the introduction and includes `_sections.md`, which is
written here from the section registry (workflow/rules/report.smk): for each section its title
and either its text, report/sections/{name}.md, or, when the config switches it off, one line
saying so. A section's text includes the tables and figures its rule wrote, by paths relative to
the report root (e.g. `dreaming/summary.md`). Quarto renders it when on PATH; otherwise pandoc
(shipped by the pypandoc-binary wheel), for which the include shortcodes are expanded here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lmfeatures.store.report import install

INCLUDE = re.compile(r"\{\{<\s*include\s+(\S+)\s*>\}\}")
SECTIONS_FILE = "_sections.md"


def expand_includes(text: str, base: Path, depth: int = 0) -> str:
    """Inline Quarto include shortcodes for renderers that lack them. As in Quarto, every path,
    also in an included file, is relative to `base`, the main document's folder."""
    if depth > 5:
        raise ValueError("include shortcodes nested more than 5 deep")

    def inline(m: re.Match) -> str:
        path = base / m.group(1)
        if not path.is_file():
            raise FileNotFoundError(f"report include {m.group(1)!r} not found at {path}")
        return expand_includes(path.read_text(), base, depth + 1)

    return INCLUDE.sub(inline, text)


def sections_markdown(sections: list[dict]) -> str:
    """The body of the report from the registry: sections are dicts with name, title, on, off."""
    parts = []
    for s in sections:
        body = f"{{{{< include sections/{s['name']}.md >}}}}" if s["on"] else s["off"]
        parts.append(f"# {s['title']}\n\n{body}\n")
    return "\n".join(parts)


def report_path(piece: str | Path) -> str:
    """How the report refers to a piece a section's rule wrote under results/report/{section}/."""
    piece = Path(piece)
    return f"{piece.parent.name}/{piece.name}"


def choose_renderer(renderer: str = "auto") -> str:
    if renderer == "auto":
        return "quarto" if shutil.which("quarto") else "pandoc"
    if renderer == "quarto" and not shutil.which("quarto"):
        raise RuntimeError("report.renderer: quarto, but no quarto on PATH; install Quarto or use renderer: auto")
    return renderer


def render(
    report_dir: str, assets: dict[str, str], out_html: str, renderer: str = "auto", sections: list[dict] | None = None
) -> str:
    """Render report_dir/report.qmd into one self-contained HTML file; returns the renderer used.

    `assets` maps a path inside the build directory (as the .qmd refers to it) to a file or
    folder written by a rule; `sections` is the registry (None: the .qmd includes no sections
    file). Rendering happens in a per-job copy, so Quarto's .quarto/ and any half-written output
    never land next to the source or the results.
    """
    renderer = choose_renderer(renderer)
    with tempfile.TemporaryDirectory(prefix="report-build-") as build:
        build = Path(build)
        shutil.copytree(report_dir, build, dirs_exist_ok=True)
        if sections is not None:
            (build / SECTIONS_FILE).write_text(sections_markdown(sections))
        for rel, src in assets.items():
            dest = build / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, dest)
        if renderer == "quarto":
            cmd = ["quarto", "render", "report.qmd", "--to", "html", "--output", "index.html"]
            subprocess.run(cmd, cwd=build, check=True)
        else:
            import pypandoc

            md = expand_includes((build / "report.qmd").read_text(), build)
            (build / "report.md").write_text(md)
            cmd = [
                pypandoc.get_pandoc_path(),
                "report.md",
                "--from",
                "markdown",
                "--to",
                "html5",
                "--standalone",
                "--embed-resources",
                "--toc",
                "--toc-depth=3",
                "--mathml",
                "--number-sections",
                "--css",
                "style.css",
                "--output",
                "index.html",
            ]
            subprocess.run(cmd, cwd=build, check=True)
        install(build / "index.html", out_html)
    return renderer
