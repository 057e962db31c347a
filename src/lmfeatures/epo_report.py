"""EPO against the data: merged frontiers, dataset examples on the same axes, summary tables, report pieces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from .epo import build_scorer, pareto_front  # noqa: E402
from .io import atomic_path, write_json, write_provenance  # noqa: E402
from .neurons import Neuron  # noqa: E402
from .scan import load_scan  # noqa: E402

THRESHOLDS = (4.0, 6.0, math.inf)  # xent < 6 counts as in-distribution (paper: real 12-token text ~3.7 ± 1.1)


def best_below(df: pd.DataFrame, threshold: float) -> dict | None:
    """The highest-target row with xent < threshold, as a dict (None when there is none)."""
    ok = df[df["xent"] < threshold]
    if ok.empty:
        return None
    r = ok.loc[ok["target"].idxmax()]
    return {"text": r["text"], "target": float(r["target"]), "xent": float(r["xent"])}


def load_runs(run_dirs: list[str]) -> pd.DataFrame:
    """Every scored candidate of these runs: text, target, xent, method, seed."""
    runs = []
    for d in run_dirs:
        meta = json.loads((Path(d) / "frontier.json").read_text())
        h = pd.read_parquet(Path(d) / "history.parquet", columns=["text", "target", "xent"])
        h["method"], h["seed"] = meta["method"], meta["seed"]
        runs.append(h)
    return pd.concat(runs, ignore_index=True)


def dataset_examples(scan_dir: str, model_dir: str, neuron: str, scorer, tokenizer, n_tokens: int) -> pd.DataFrame:
    """The neuron's top dataset windows cut to n_tokens ending at their max token, scored like prompts."""
    scan = load_scan(scan_dir, model_dir=model_dir)
    n = Neuron.from_name(neuron)
    h, index = n.hook, n.index
    rows = []
    for k in range(scan[f"{h}.top_window"].shape[0]):
        w, p = int(scan[f"{h}.top_window"][k, index]), int(scan[f"{h}.top_pos"][k, index])
        if w < 0:
            continue
        start = max(0, p - n_tokens + 1)
        rows.append(scan.windows.ids[w, start : start + n_tokens])
    ids = torch.stack(rows).to(scorer.model.device)
    target, xent = scorer.score(ids)
    return pd.DataFrame({"text": tokenizer.batch_decode(ids.tolist()), "target": target.tolist(),
                         "xent": xent.tolist(), "scan_max": float(scan[f"{h}.top_values"][0, index])})  # fmt: skip


def epo_compare_stage(model_dir: str, scan_dir: str, run_dirs: list[str], out_dir: str, neuron: str, params: dict,
                      device: str, threads: int, config: dict, fluency_dir: str | None = None) -> None:  # fmt: skip
    """Per neuron: merge runs, score the dataset's top examples the same way, write compare.json and the figure."""
    torch.set_num_threads(threads)
    scorer, tok = build_scorer(model_dir, neuron, params, device, fluency_dir)
    hist = load_runs(run_dirs)
    data = dataset_examples(scan_dir, model_dir, neuron, scorer, tok, int(params["n_tokens"]))
    scan_max = float(data["scan_max"].iloc[0])
    summary = {"neuron": neuron, "dataset_max": scan_max, "dataset_cut_max": float(data["target"].max()),
               "dataset_top": best_below(data, math.inf), "methods": {}}  # fmt: skip
    for method, df in hist.groupby("method"):
        best = {f"xent<{t:g}": best_below(df, t) for t in THRESHOLDS}
        per_seed = [b["target"] for _, g in df.groupby("seed") if (b := best_below(g, 6.0))]
        per_seed_any = [float(g["target"].max()) for _, g in df.groupby("seed")]
        summary["methods"][method] = {
            "best": best, "n_scored": len(df), "seeds": int(df["seed"].nunique()),
            "best_xent<6_per_seed": per_seed, "best_any_per_seed": per_seed_any,
            "ratio_to_dataset_max": {k: (v["target"] / scan_max if v and scan_max > 0 else None) for k, v in best.items()},
        }  # fmt: skip
    with atomic_path(out_dir, directory=True) as tmp:
        write_json(tmp / "compare.json", summary)
        data.to_parquet(tmp / "dataset_examples.parquet")
        frontier_figure(hist, data, scan_max, neuron, tmp / "frontier.png")
        write_provenance(tmp, config, config.get("seed"), neuron=neuron)


def _front(df: pd.DataFrame) -> pd.DataFrame:
    idx = pareto_front(torch.tensor(df["target"].values), torch.tensor(df["xent"].values)).tolist()
    return df.iloc[idx]


def frontier_figure(hist: pd.DataFrame, data: pd.DataFrame, scan_max: float, neuron: str, out, ax=None) -> None:
    """Activation vs. cross-entropy: EPO's merged and per-seed frontiers, GCG, random and dataset examples."""
    own = ax is None
    if own:
        sns.set_theme(style="whitegrid", context="notebook")
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
        ax.plot(f["xent"], f["target"], color=colours["epo"], linewidth=2, drawstyle="steps-post",
                marker="o", markersize=3, label="EPO frontier (all seeds)")  # fmt: skip
    for method in ("gcg", "random"):
        g = hist[hist["method"] == method]
        if not g.empty:
            f = _front(g)
            ax.plot(f["xent"], f["target"], color=colours[method], linewidth=1.2, drawstyle="steps-post",
                    marker="s", markersize=3, label=f"{method.upper() if method == 'gcg' else method} frontier")  # fmt: skip
    ax.scatter(data["xent"], data["target"], marker="*", s=70, color="#1b9e77", edgecolor="black", linewidth=0.4,
               zorder=5, label="dataset top examples (cut)")  # fmt: skip
    ax.axhline(scan_max, color="#1b9e77", linestyle="--", linewidth=1, label=f"dataset max ({scan_max:.2f})")
    for t in (4, 6):
        ax.axvline(t, color="black", linestyle=":", linewidth=0.8)
    ax.set_xlabel("cross-entropy of the prompt (nats / token)")
    ax.set_ylabel("activation")
    ax.set_title(neuron)
    ax.set_xlim(left=0, right=min(12, max(hist["xent"].quantile(0.99), data["xent"].max()) + 0.5))
    if own:
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out, dpi=120, format="png")
        plt.close(fig)


def _md(text: str) -> str:
    """A prompt as inline code in a markdown table cell."""
    t = text.replace("\n", "↵").replace("|", "\\|").replace("`", "'")
    return f"`{t}`" if t.strip() else "`(whitespace)`"


def epo_summary_stage(compare_dirs: dict[str, str], run_dirs: dict[str, list[str]], figure: str, section_md: str,
                      figure_ref: str = "figures/epo_frontiers.png") -> None:  # fmt: skip
    """The report's Dreaming section: one frontier panel per neuron, a paragraph per neuron, the summary
    table and the best prompts. compare_dirs / run_dirs are keyed by '{model} {neuron}'."""
    keys = sorted(compare_dirs)
    summaries = {k: json.loads((Path(compare_dirs[k]) / "compare.json").read_text()) for k in keys}
    sns.set_theme(style="whitegrid", context="notebook")
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        data = pd.read_parquet(Path(compare_dirs[k]) / "dataset_examples.parquet")
        frontier_figure(load_runs(run_dirs[k]), data, summaries[k]["dataset_max"], k, None, ax=ax)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16 / rows, 1, 1))
    with atomic_path(figure) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    def cell(b: dict | None) -> str:
        return "—" if b is None else f"{b['target']:.2f}"

    lines = ["| model · neuron | dataset max | data, cut to n tokens | EPO xent<4 | EPO xent<6 | EPO any | "
             "EPO/data (xent<6) | seeds' best at xent<6 | GCG any (xent) | random any |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    prompts = ["| model · neuron | fluency | EPO prompt | act | xent |", "|---|---|---|---:|---:|"]
    paragraphs = []
    for k in keys:
        s = summaries[k]
        e = s["methods"].get("epo", {})
        b = e.get("best", {})
        g = s["methods"].get("gcg", {}).get("best", {}).get("xent<inf")
        r = s["methods"].get("random", {}).get("best", {}).get("xent<inf")
        ratio = e.get("ratio_to_dataset_max", {}).get("xent<6")
        seeds = ", ".join(f"{v:.2f}" for v in e.get("best_xent<6_per_seed", []))
        gcg = "—" if g is None else f"{g['target']:.2f} ({g['xent']:.1f})"
        lines.append(f"| {k} | {s['dataset_max']:.2f} | {s['dataset_cut_max']:.2f} | {cell(b.get('xent<4'))} | {cell(b.get('xent<6'))} | "
                     f"{cell(b.get('xent<inf'))} | {'—' if ratio is None else f'{ratio:.2f}'} | {seeds} | "
                     f"{gcg} | {cell(r)} |")  # fmt: skip
        top = s["dataset_top"]
        prompts.append(f"| {k} | best dataset example (cut) | {_md(top['text'])} | {top['target']:.2f} | {top['xent']:.2f} |")
        for name, key in (("xent < 4", "xent<4"), ("xent < 6", "xent<6"), ("unconstrained", "xent<inf")):
            if b.get(key):
                prompts.append(f"| {k} | {name} | {_md(b[key]['text'])} | {b[key]['target']:.2f} | {b[key]['xent']:.2f} |")
        in_dist = b.get("xent<6")
        if in_dist is None:
            verdict = "found no prompt with cross-entropy below 6 (in-distribution fluency)"
        elif in_dist["target"] > s["dataset_max"]:
            verdict = (f"found activations above the dataset maximum at in-distribution fluency: "
                       f"{in_dist['target']:.2f} at xent {in_dist['xent']:.2f} against {s['dataset_max']:.2f} "
                       f"({in_dist['target'] / s['dataset_max']:.2f}×)")  # fmt: skip
        else:
            verdict = (f"did not exceed the dataset maximum at in-distribution fluency: best {in_dist['target']:.2f} "
                       f"at xent {in_dist['xent']:.2f} against {s['dataset_max']:.2f}")  # fmt: skip
        unc = b.get("xent<inf")
        extra = ""
        if unc and unc["target"] > max(s["dataset_max"], in_dist["target"] if in_dist else -math.inf):
            extra = f" Without the fluency constraint it reached {unc['target']:.2f} (xent {unc['xent']:.2f})."
        trapped = [v for v in e.get("best_any_per_seed", []) if v <= 0]
        if trapped:  # GELU's negative tail: its gradient points to ever more negative pre-activations
            extra += (f" {len(trapped)} of {len(e['best_any_per_seed'])} seeds never found a positive activation: "
                      "from a start deep in the negative tail of a GELU-like activation, the one-hot gradient leads towards ever more "
                      "negative pre-activations, where the activation approaches 0 from below.")  # fmt: skip
        paragraphs.append(f"**{k}.** EPO {verdict}.{extra} The best of the neuron's top dataset examples, cut to "
                          f"the same length, scores {top['target']:.2f} at xent {top['xent']:.2f}.")  # fmt: skip
    section = [
        f"![Activation against prompt cross-entropy for each neuron. Orange: EPO candidates, per-seed frontiers "
        f"(thin) and the frontier over all seeds (thick); purple: GCG; grey: random prompts; green stars: the "
        f"neuron's top dataset examples cut to the same length and scored the same way; dashed: the dataset "
        f"maximum (full-context windows); dotted: xent 4 and 6.]({figure_ref}){{#fig-epo-frontiers}}",
        "\n\n".join(paragraphs),
        "Best activation at each fluency threshold (merged over seeds), its ratio to the dataset maximum, "
        "the spread over seeds, and the baselines (GCG with its cross-entropy):",
        "\n".join(lines),
        "The best prompts at each threshold next to the best of the neuron's top dataset examples cut to the "
        "same length:",
        "\n".join(prompts),
    ]
    with atomic_path(section_md) as tmp:
        tmp.write_text("\n\n".join(section) + "\n")
