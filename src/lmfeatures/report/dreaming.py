"""The report's "Dreaming" section: EPO frontiers against the data, a verdict per neuron, tables."""

from __future__ import annotations

import math

import pandas as pd
import torch

from lmfeatures.epo.epo import pareto_front
from lmfeatures.report.plotting import md_code, plt, save_figure, set_theme
from lmfeatures.store.report import write_text


def _xent(row: dict) -> str:
    """A prompt's xent for the text; a 1-token dataset cut (its max at a window's first token) has none."""
    return "— (one token)" if row["xent"] is None else f"{row['xent']:.2f}"


def _front(df: pd.DataFrame) -> pd.DataFrame:
    idx = pareto_front(torch.tensor(df["target"].values), torch.tensor(df["xent"].values)).tolist()
    return df.iloc[idx]


def frontier_figure(hist: pd.DataFrame, data: pd.DataFrame, summary: dict, neuron: str, out, ax=None) -> None:
    """Activation vs. cross-entropy: EPO's merged and per-seed frontiers, GCG, random and dataset
    examples, with the dataset maximum and the real-text fluency band of the summary (compare_with_data)."""
    scan_max, real = summary["dataset_max"], summary["real_text_xent"]
    own = ax is None
    if own:
        set_theme()
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colours = {"epo": "#d95f02", "gcg": "#7570b3", "random": "#999999"}
    epo = hist[hist["method"] == "epo"]
    if not epo.empty:
        sample = epo.sample(min(len(epo), 3000), random_state=0)
        ax.scatter(sample["xent"], sample["target"], s=3, alpha=0.15, color=colours["epo"], label="EPO candidates")
        for _, g in epo.groupby("seed"):
            f = _front(g)
            ax.plot(f["xent"], f["target"], color=colours["epo"], alpha=0.35, linewidth=0.8, drawstyle="steps-post")
        f = _front(epo)
        ax.plot(
            f["xent"],
            f["target"],
            color=colours["epo"],
            linewidth=2,
            drawstyle="steps-post",
            marker="o",
            markersize=3,
            label="EPO frontier (all seeds)",
        )
    for method in ("gcg", "random"):
        g = hist[hist["method"] == method]
        if not g.empty:
            f = _front(g)
            ax.plot(
                f["xent"],
                f["target"],
                color=colours[method],
                linewidth=1.2,
                drawstyle="steps-post",
                marker="s",
                markersize=3,
                label=f"{method.upper() if method == 'gcg' else method} frontier",
            )
    ax.scatter(
        data["xent"],
        data["target"],
        marker="*",
        s=70,
        color="#1b9e77",
        edgecolor="black",
        linewidth=0.4,
        zorder=5,
        label="dataset top examples (cut)",
    )
    ax.axhline(scan_max, color="#1b9e77", linestyle="--", linewidth=1, label="dataset max")
    # The value goes on the panel, not in the legend, which the report's panels share.
    ax.text(1.0, scan_max, f" {scan_max:.2f}", transform=ax.get_yaxis_transform(), va="center", fontsize=7)
    for t in (4, 6):
        ax.axvline(t, color="black", linestyle=":", linewidth=0.8)
    ax.axvspan(real["median"], real["p90"], color="#1b9e77", alpha=0.08, label="real text: median to p90 xent")
    ax.set_xlabel("cross-entropy of the prompt (nats / token)")
    ax.set_ylabel("activation")
    ax.set_title(neuron)
    ax.set_xlim(left=0, right=min(12, max(hist["xent"].quantile(0.99), data["xent"].max()) + 0.5))
    if own:
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        save_figure(fig, out, dpi=120)


def dreaming_section(
    summaries: dict[str, dict],
    runs: dict[str, pd.DataFrame],
    data: dict[str, pd.DataFrame],
    figure: str,
    section_md: str,
    figure_ref: str,
) -> None:
    """One frontier panel per neuron, a paragraph per neuron, the summary table and the best prompts.
    Keyed by '{model} {neuron}': compare_with_data() summaries, every run's candidates, dataset examples."""
    keys = sorted(summaries)
    set_theme()
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        frontier_figure(runs[k], data[k], summaries[k], k, None, ax=ax)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16 / rows, 1, 1))
    save_figure(fig, figure, dpi=110)

    def cell(b: dict | None) -> str:
        return "—" if b is None else f"{b['target']:.2f}"

    lines = [
        "| model · neuron | dataset max | data, cut to n tokens | real text xent (median, p90) | EPO < median | "
        "EPO < p90 | EPO xent<4 | EPO xent<6 | EPO any | EPO/data (< p90) | seeds' best < p90 | GCG any (xent) | "
        "random any |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    prompts = ["| model · neuron | fluency | EPO prompt | act | xent |", "|---|---|---|---:|---:|"]
    paragraphs = []
    for k in keys:
        s = summaries[k]
        e = s["methods"].get("epo", {})
        b = e.get("best", {})
        g = s["methods"].get("gcg", {}).get("best", {}).get("xent<inf")
        r = s["methods"].get("random", {}).get("best", {}).get("xent<inf")
        real = s["real_text_xent"]
        ratio = e.get("ratio_to_dataset_max", {}).get("xent<p90")
        seeds = ", ".join(f"{v:.2f}" for v in e.get("best_xent<p90_per_seed", []))
        gcg = "—" if g is None else f"{g['target']:.2f} ({g['xent']:.1f})"
        lines.append(
            f"| {k} | {s['dataset_max']:.2f} | {s['dataset_cut_max']:.2f} | {real['median']:.2f}, {real['p90']:.2f} | "
            f"{cell(b.get('xent<median'))} | {cell(b.get('xent<p90'))} | {cell(b.get('xent<4'))} | "
            f"{cell(b.get('xent<6'))} | {cell(b.get('xent<inf'))} | {'—' if ratio is None else f'{ratio:.2f}'} | "
            f"{seeds} | {gcg} | {cell(r)} |"
        )
        top = s["dataset_top"]
        prompts.append(
            f"| {k} | best dataset example (cut) | {md_code(top['text'])} | {top['target']:.2f} | {_xent(top)} |"
        )
        fluency = (
            (f"below real text's median ({real['median']:.2f})", "xent<median"),
            (f"below real text's p90 ({real['p90']:.2f})", "xent<p90"),
            ("xent < 6", "xent<6"),
            ("unconstrained", "xent<inf"),
        )
        best_prompts: dict[str, tuple[list[str], dict]] = {}  # a prompt best at several thresholds: one row
        for name, key in fluency:
            if b.get(key):
                best_prompts.setdefault(b[key]["text"], ([], b[key]))[0].append(name)
        for names, p in best_prompts.values():
            prompts.append(f"| {k} | {', '.join(names)} | {md_code(p['text'])} | {p['target']:.2f} | {p['xent']:.2f} |")
        in_dist = b.get("xent<p90")
        fluent = (
            f"the fluency of real text (cross-entropy below {real['p90']:.2f}, the 90th percentile of held-out "
            f"text slices of the same length under this model)"
        )
        if in_dist is None:
            verdict = f"found no prompt at {fluent}"
        elif in_dist["target"] > s["dataset_max"]:
            verdict = (
                f"found activations above the dataset maximum at {fluent}: {in_dist['target']:.2f} at xent "
                f"{in_dist['xent']:.2f} against {s['dataset_max']:.2f} ({in_dist['target'] / s['dataset_max']:.2f}×)"
            )
        else:
            verdict = (
                f"did not exceed the dataset maximum at {fluent}: best {in_dist['target']:.2f} at xent "
                f"{in_dist['xent']:.2f} against {s['dataset_max']:.2f}"
            )
        median = b.get("xent<median")
        if median is not None:
            verdict += f"; below the median real-text xent ({real['median']:.2f}) it reached {median['target']:.2f}"
        unc = b.get("xent<inf")
        extra = ""
        if unc and unc["target"] > max(s["dataset_max"], in_dist["target"] if in_dist else -math.inf):
            extra = f" Without the fluency constraint it reached {unc['target']:.2f} (xent {unc['xent']:.2f})."
        trapped = [v for v in e.get("best_any_per_seed", []) if v <= 0]
        if trapped:
            extra += f" {len(trapped)} of {len(e['best_any_per_seed'])} seeds never found a positive activation."
        paragraphs.append(
            f"**{k}.** EPO {verdict}.{extra} The best of the neuron's top dataset examples, cut to "
            f"the same length, scores {top['target']:.2f} at xent {_xent(top)}."
        )
    section = [
        f"![Activation against prompt cross-entropy for each neuron. Orange: EPO candidates, per-seed frontiers "
        f"(thin) and the frontier over all seeds (thick); purple: GCG; grey: random prompts; green stars: the "
        f"neuron's top dataset examples cut to the same length and scored the same way; dashed: the dataset "
        f"maximum (full-context windows); dotted: xent 4 and 6 (the paper's thresholds); green band: the "
        f"cross-entropy of real held-out text of the same length under the fluency model, median to 90th "
        f"percentile.]({figure_ref}){{#fig-epo-frontiers}}",
        "\n\n".join(paragraphs),
        "Best activation at each fluency threshold (merged over seeds): below the median and the 90th "
        "percentile of real text's cross-entropy under this model, and below the paper's fixed 4 and 6; its "
        "ratio to the dataset maximum, the spread over seeds, and the baselines (GCG with its cross-entropy):",
        "\n".join(lines),
        "The best prompts at each threshold next to the best of the neuron's top dataset examples cut to the "
        "same length:",
        "\n".join(prompts),
    ]
    write_text(section_md, "\n\n".join(section) + "\n")
