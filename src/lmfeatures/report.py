"""Report pieces (tables, figures) and the renderer.

`report/report.qmd` only includes what rules wrote: markdown tables through Quarto's
``{{< include path >}}`` shortcode and PNG figures. It renders with ``quarto`` when on PATH and
otherwise with pandoc (shipped by the pypandoc-binary wheel): for pandoc the include shortcodes
are expanded here, since pandoc does not know them. Both produce one self-contained HTML file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on compute nodes
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path, read_json, write_provenance  # noqa: E402

INCLUDE = re.compile(r"\{\{<\s*include\s+(\S+)\s*>\}\}")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt) + "\n"


def _tokens(n: int | None) -> str:
    return "—" if n is None else ("0" if n == 0 else f"{n / 1e6:.2f}M")


def model_table(model_dirs: list[str]) -> pd.DataFrame:
    rows = []
    for d in model_dirs:
        r = read_json(Path(d) / "eval.json")
        rows.append({
            "model": r["name"], "source": r["source"], "architecture": r["architecture"],
            "layers": r["n_layers"], "d_model": r["d_model"], "d_mlp": r["d_mlp"],
            "parameters": f"{r['parameters'] / 1e6:.2f}M",
            "training tokens": _tokens(r.get("training_tokens")),
            "held-out loss (nats)": r["heldout_loss"],
            "unigram baseline (nats)": r.get("unigram_heldout_xent_nats", float("nan")),
        })  # fmt: skip
    return pd.DataFrame(rows)


def training_curves_figure(model_dirs: list[str], out_png: str) -> None:
    """Training loss vs. tokens for every trained model, with each model's held-out loss and the unigram baseline."""
    frames, finals, baseline = [], [], None
    for d in model_dirs:
        log = Path(d) / "training_log.csv"
        if not log.exists():  # untrained twins and hub models have no curve
            continue
        r = read_json(Path(d) / "eval.json")
        df = pd.read_csv(log)
        df["model"] = f"{r['name']} ({r['parameters'] / 1e6:.2f}M params)"
        frames.append(df)
        finals.append((df["model"].iloc[0], r["training_tokens"], r["heldout_loss"]))
        baseline = r.get("unigram_heldout_xent_nats", baseline)
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if frames:
        data = pd.concat(frames)
        sns.lineplot(data=data, x="tokens", y="loss", hue="model", ax=ax, linewidth=1.4)
        palette = dict(zip(data["model"].unique(), sns.color_palette()))
        for name, tokens, loss in finals:
            ax.scatter([tokens], [loss], marker="D", s=40, color=palette[name], zorder=5, edgecolor="black")
        ax.scatter([], [], marker="D", color="grey", edgecolor="black", label="held-out loss (end)")
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle="--", linewidth=1, label=f"unigram baseline ({baseline:.2f})")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("Training curves of the embedded model family")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def expand_includes(text: str, base: Path, depth: int = 0) -> str:
    """Inline Quarto include shortcodes (paths relative to `base`) for renderers that lack them."""
    if depth > 5:
        raise ValueError("include shortcodes nested more than 5 deep")

    def inline(m: re.Match) -> str:
        path = base / m.group(1)
        if not path.is_file():
            raise FileNotFoundError(f"report include {m.group(1)!r} not found at {path}")
        return expand_includes(path.read_text(), path.parent, depth + 1)

    return INCLUDE.sub(inline, text)


def choose_renderer(renderer: str = "auto") -> str:
    if renderer == "auto":
        return "quarto" if shutil.which("quarto") else "pandoc"
    if renderer == "quarto" and not shutil.which("quarto"):
        raise RuntimeError("report.renderer: quarto, but no quarto on PATH; install Quarto or use renderer: auto")
    return renderer


def render(report_dir: str, assets: dict[str, str], out_html: str, renderer: str = "auto") -> str:
    """Render report_dir/report.qmd into one self-contained HTML file.

    `assets` maps a path inside the build directory (as the .qmd refers to it) to a file or
    folder written by a rule. Rendering happens in a per-job copy, so Quarto's .quarto/ and any
    half-written output never land next to the source or the results.
    """
    renderer = choose_renderer(renderer)
    with tempfile.TemporaryDirectory(prefix="report-build-") as build:
        build = Path(build)
        shutil.copytree(report_dir, build, dirs_exist_ok=True)
        for rel, src in assets.items():
            dest = build / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, dest)
        if renderer == "quarto":
            subprocess.run(["quarto", "render", "report.qmd", "--to", "html", "--output", "index.html"],
                           cwd=build, check=True)  # fmt: skip
        else:
            import pypandoc

            md = expand_includes((build / "report.qmd").read_text(), build)
            (build / "report.md").write_text(md)
            subprocess.run(
                [pypandoc.get_pandoc_path(), "report.md", "--from", "markdown", "--to", "html5", "--standalone",
                 "--embed-resources", "--toc", "--toc-depth=3", "--mathml", "--number-sections",
                 "--css", "style.css", "--output", "index.html"],
                cwd=build, check=True,
            )  # fmt: skip
        with atomic_path(out_html) as tmp:
            shutil.copy2(build / "index.html", tmp)
    return renderer


def model_summary(model_dirs: list[str], table_md: str, table_csv: str, curves_png: str) -> None:
    """The report's model section: table (markdown + CSV) and training-curve figure."""
    df = model_table(model_dirs)
    with atomic_path(table_csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(table_md) as tmp:
        tmp.write_text(markdown_table(df))
    training_curves_figure(model_dirs, curves_png)


def report_stage(report_dir: str, assets: dict[str, str], out_html: str, renderer: str, config: dict,
                 seed: int) -> None:  # fmt: skip
    used = render(report_dir, assets, out_html, renderer)
    write_provenance(Path(out_html).parent, config, seed, renderer=used)
