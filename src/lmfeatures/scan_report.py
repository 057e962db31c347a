"""The report's "Dataset examples" section: distribution figure, concentration table, gallery."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402
from .scan import load_scan  # noqa: E402
from .tokenizer import load_tokenizer  # noqa: E402

GALLERY_NEURONS = 2  # per model, by token concentration
GALLERY_EXAMPLES = 3
SNIPPET = (12, 4)  # tokens before / after the max token


def distribution_figure(scans: dict[str, str], kinds: dict[str, str], out_png: str) -> None:
    """Max activation and density of every neuron per layer, trained models vs untrained twins."""
    rows = []
    for name, path in scans.items():
        s = load_scan(path)
        for layer in range(s.meta["n_layers"]):
            h = f"mlp.{layer}"
            for mx, dens in zip(s[f"{h}.max"].tolist(), s[f"{h}.density"].tolist()):
                rows.append({"model": name, "kind": kinds[name], "layer": layer, "max activation": mx,
                             "density (share > 0)": dens})  # fmt: skip
    df = pd.DataFrame(rows)
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, y in zip(axes, ["max activation", "density (share > 0)"]):
        sns.boxplot(data=df, x="layer", y=y, hue="kind", ax=ax, fliersize=1.5, linewidth=0.8)
        ax.set_title(f"{y} per neuron, all models")
    axes[0].set_yscale("log")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def concentration_table(selections: dict[str, str], trained: list[str], out_md: str, n: int = 12) -> None:
    """Most token-concentrated selected neurons of the trained models, linked to their pages."""
    rows = []
    for name in trained:
        for r in json.loads((Path(selections[name]) / "selection.json").read_text()):
            rows.append({**r, "model": name})
    rows.sort(key=lambda r: (-r["token_concentration"], -r["max"]))
    lines = ["| model | neuron | token concentration | most common max token | max act |", "|---|---|---:|---|---:|"]
    for r in rows[:n]:
        link = f"../neurons/{r['model']}/{r['page']}"
        tok = r["mode_token"].replace("|", "\\|").replace("\n", "↵")
        lines.append(f"| {r['model']} | [{r['neuron']}]({link}) | {r['token_concentration']:.2f} | "
                     f"`{tok}` | {r['max']:.2f} |")  # fmt: skip
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _snippet(tokenizer, ids: list[int], pos: int) -> str:
    lo, hi = max(0, pos - SNIPPET[0]), min(len(ids), pos + SNIPPET[1] + 1)
    parts = []
    for i in range(lo, hi):
        t = html.escape(tokenizer.decode([ids[i]]).replace("\n", "↵"))
        parts.append(f'<mark style="background:#fb8">{t}</mark>' if i == pos else t)
    return "<code>" + ("…" if lo else "") + "".join(parts) + ("…" if hi < len(ids) else "") + "</code>"


def gallery(selections: dict[str, str], scans: dict[str, str], models: dict[str, str], trained: list[str],
            out_md: str) -> None:  # fmt: skip
    """An HTML table: for the most concentrated neurons of each trained model, top snippets with the max token marked."""
    index_links = " · ".join(f'<a href="../neurons/{n}/index.html">{n}</a>' for n in models)
    out = [f"<p>Neuron pages of every model: {index_links}</p>", '<table class="gallery"><tr><th>neuron</th><th>top examples (max token marked)</th></tr>']
    for name in trained:
        s = load_scan(scans[name])
        tok = load_tokenizer(models[name])
        rows = json.loads((Path(selections[name]) / "selection.json").read_text())
        rows.sort(key=lambda r: (-r["token_concentration"], -r["max"]))
        for r in rows[:GALLERY_NEURONS]:
            h, u = f"mlp.{r['layer']}", r["index"]
            cells = []
            for k in range(GALLERY_EXAMPLES):
                w, p, v = int(s[f"{h}.top_window"][k, u]), int(s[f"{h}.top_pos"][k, u]), float(s[f"{h}.top_values"][k, u])
                cells.append(f"{v:.2f} {_snippet(tok, s.windows.ids[w].tolist(), p)}")
            link = f"../neurons/{name}/{r['page']}"
            out.append(f'<tr><td><a href="{link}">{name} {r["neuron"]}</a></td><td>{"<br>".join(cells)}</td></tr>')
    out.append("</table>")
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(out) + "\n")


def scan_summary_stage(scans: dict[str, str], selections: dict[str, str], models: dict[str, str],
                       kinds: dict[str, str], figure: str, table: str, gallery_md: str) -> None:  # fmt: skip
    trained = [n for n, k in kinds.items() if k == "trained"] or list(kinds)
    distribution_figure(scans, kinds, figure)
    concentration_table(selections, trained, table)
    gallery(selections, scans, models, trained, gallery_md)
