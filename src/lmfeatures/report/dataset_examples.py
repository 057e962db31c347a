"""The report's "Dataset examples" section: distribution figure, concentration table, gallery."""

from __future__ import annotations

import html

import pandas as pd

from lmfeatures.report.plotting import md_code, plt, save_figure, set_theme, sns
from lmfeatures.store.report import write_text
from lmfeatures.store.scans import Scan

GALLERY_NEURONS = 2  # per model, by token concentration
GALLERY_EXAMPLES = 3
SNIPPET = (12, 4)  # tokens before / after the max token


def distribution_figure(scans: dict[str, Scan], kinds: dict[str, str], out_png: str) -> None:
    """Max activation and density of every neuron per layer, trained models vs untrained twins."""
    rows = []
    for name, s in scans.items():
        for layer in range(s.meta["n_layers"]):
            h = f"mlp.{layer}"
            for mx, dens in zip(s.tensor(h, "max").tolist(), s.tensor(h, "density").tolist()):
                rows.append(
                    {
                        "model": name,
                        "kind": kinds[name],
                        "layer": layer,
                        "max activation": mx,
                        "density (share > 0)": dens,
                    }
                )
    df = pd.DataFrame(rows)
    set_theme()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, y in zip(axes, ["max activation", "density (share > 0)"]):
        sns.boxplot(data=df, x="layer", y=y, hue="kind", ax=ax, fliersize=1.5, linewidth=0.8)
        ax.set_title(f"{y} per neuron, all models")
    axes[0].set_yscale("log")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=120)


def _by_concentration(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (-r["token_concentration"], -r["max"]))


def concentration_table(selections: dict[str, list[dict]], out_md: str, n: int = 12) -> None:
    """Most token-concentrated selected neurons of the given models, linked to their pages."""
    rows = _by_concentration([{**r, "model": name} for name, sel in selections.items() for r in sel])
    lines = ["| model | neuron | token concentration | most common max token | max act |", "|---|---|---:|---|---:|"]
    for r in rows[:n]:
        link = f"../neurons/{r['model']}/{r['page']}"
        lines.append(
            f"| {r['model']} | [{r['neuron']}]({link}) | {r['token_concentration']:.2f} | "
            f"{md_code(r['mode_token'])} | {r['max']:.2f} |"
        )
    write_text(out_md, "\n".join(lines) + "\n")


def _snippet(tokenizer, ids: list[int], pos: int) -> str:
    lo, hi = max(0, pos - SNIPPET[0]), min(len(ids), pos + SNIPPET[1] + 1)
    parts = []
    for i in range(lo, hi):
        t = html.escape(tokenizer.decode([ids[i]]).replace("\n", "↵"))
        parts.append(f'<mark style="background:#fb8">{t}</mark>' if i == pos else t)
    return "<code>" + ("…" if lo else "") + "".join(parts) + ("…" if hi < len(ids) else "") + "</code>"


def gallery(
    selections: dict[str, list[dict]], scans: dict[str, Scan], tokenizers: dict, all_models: list[str], out_md: str
) -> None:
    """An HTML table: for the most concentrated neurons of each given model, top snippets with the max token marked."""
    index_links = " · ".join(f'<a href="../neurons/{n}/index.html">{n}</a>' for n in all_models)
    out = [
        f"<p>Neuron pages of every model: {index_links}</p>",
        '<table class="gallery"><tr><th>neuron</th><th>top examples (max token marked)</th></tr>',
    ]
    for name, selection in selections.items():
        s, tok = scans[name], tokenizers[name]
        for r in _by_concentration(selection)[:GALLERY_NEURONS]:
            h, u = f"mlp.{r['layer']}", r["index"]
            cells = []
            for k in range(GALLERY_EXAMPLES):
                w = int(s.tensor(h, "top_window")[k, u])
                if w < 0:  # fewer top examples than that
                    break
                p = int(s.tensor(h, "top_pos")[k, u])
                v = float(s.tensor(h, "top_values")[k, u])
                cells.append(f"{v:.2f} {_snippet(tok, s.windows.ids[w].tolist(), p)}")
            link = f"../neurons/{name}/{r['page']}"
            out.append(f'<tr><td><a href="{link}">{name} {r["neuron"]}</a></td><td>{"<br>".join(cells)}</td></tr>')
    out.append("</table>")
    write_text(out_md, "\n".join(out) + "\n")
