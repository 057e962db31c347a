"""The report's "Are features aligned across layers?" section: figures, the essay-style token tables
and one verdict per claim of the essay, each computed from the numbers with the thresholds below."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lmfeatures.report.plotting import markdown_table, md_code, plt, save_figure, set_theme, sns
from lmfeatures.stats import bootstrap_mean
from lmfeatures.store.report import write_text

# A claim of alignment holds when the mean Spearman is at least MIN_ALIGNED and its 95% interval
# lies above every null's interval.
MIN_ALIGNED = 0.3
# The decoding artefact is reproduced when decoded id == feature index at least ARTEFACT_FACTOR
# times as often as chance (1 / vocabulary), with the interval above chance.
ARTEFACT_FACTOR = 10

VARIANTS = {"raw": "resid.L", "minus_embed": "resid.L − embed", "writes": "block write"}


def _fmt(summary: list[float]) -> str:
    mean, lo, hi = summary
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def aligned(summary: list[float], *nulls: list[float]) -> bool:
    return summary[0] >= MIN_ALIGNED and all(summary[1] > null[2] for null in nulls)


def _pooled(pooled: dict[str, torch.Tensor], key: str, seed: int) -> list[float] | None:
    return list(bootstrap_mean(pooled[key], seed)) if key in pooled else None


def verdicts(metrics: dict, pooled: dict[str, torch.Tensor], seed: int) -> list[str]:
    """One paragraph per claim of the essay that the configured models can test."""
    out = []

    def get(key: str) -> list[float] | None:
        return _pooled(pooled, key, seed)

    raw, perm, rot = (get(f"trained.layers.raw.{k}") for k in ("same", "permuted", "rotated"))
    if raw:
        holds = aligned(raw, perm, rot)
        jac, jac_null = get("trained.layers.raw.jaccard"), get("trained.layers.raw.jaccard_permuted")
        out.append(
            f"**Across layers** (the essay: the same features at every depth). In the trained models, feature i "
            f"of one block and feature i of another correlate over the vocabulary with mean Spearman "
            f"{_fmt(raw)}, against {_fmt(perm)} for a random other index and {_fmt(rot)} after a random "
            f"rotation of the second block's basis; their top-10 tokens overlap by Jaccard {_fmt(jac)} "
            f"(null {_fmt(jac_null)}). **{'Holds' if holds else 'Does not hold'}** as measured here."
        )
    identity, writes = get("trained.identity"), get("trained.layers.writes.same")
    if identity and writes:
        w_perm, w_rot = get("trained.layers.writes.permuted"), get("trained.layers.writes.rotated")
        minus = get("trained.layers.minus_embed.same")
        carried = raw is not None and aligned(raw, perm, rot) and not aligned(writes, w_perm, w_rot)
        if not carried:
            conclusion = (
                "**The blocks' own writes are aligned too**, so the identity path does not explain it all."
                if aligned(writes, w_perm, w_rot)
                else "There is no across-layer alignment for the identity path to explain."
            )
        elif identity[0] >= MIN_ALIGNED:
            conclusion = (
                "**The alignment across layers is carried by the identity path**: the embedding itself is in every "
                "layer's profile, and the blocks' own writes are not aligned."
            )
        else:
            first = get("trained.first_write")
            conclusion = (
                "**The alignment across layers is carried by the identity path, past the embedding**: neither the "
                "embedding alone nor the blocks' own writes make layers alike, but each resid.L carries forward "
                "what the earlier blocks wrote"
                + (
                    f": resid.L − embed of the later layers correlates with the first block's write at {_fmt(first)}."
                    if first
                    else "."
                )  # fmt: skip
            )
        out.append(
            f"**The identity path.** resid.L correlates with the embedding's own dimension i at {_fmt(identity)} "
            f"(mean over layers). What each block writes (resid.L − resid.L−1) aligns across blocks at "
            f"{_fmt(writes)} (nulls {_fmt(w_perm)} and {_fmt(w_rot)}); resid.L − embed, which still shares the "
            f"earlier blocks' writes, at {_fmt(minus)}. {conclusion}"
        )
    for depth in ("first block", "embedding"):
        same, null = get(f"sizes.{depth}.same"), get(f"sizes.{depth}.permuted")
        if not same:
            continue
        best, best_null = get(f"sizes.{depth}.best"), get(f"sizes.{depth}.best_rotated")
        pairs = ", ".join(f"{p['a']}/{p['b']}" for p in metrics["sizes"])
        same_verdict = "holds" if aligned(same, null) else "does not hold"
        best_verdict = "better than in a random basis" if aligned(best, best_null) else "no better than a random basis"
        out.append(
            f"**Across sizes, {depth}** (the essay: different-sized models share their features index by index). "
            f"Feature i against feature i of another size on their shared dimensions ({pairs}): {_fmt(same)} "
            f"against {_fmt(null)} for a random other index: **{same_verdict}**. Each feature's best match in the "
            f"other model: {_fmt(best)}, against {_fmt(best_null)} in a randomly rotated basis: {best_verdict}."
        )
        break
    twin, twin_null = get("twins.same"), get("twins.permuted")
    if twin:
        u_raw = get("untrained.layers.raw.same")
        u_perm, u_rot = get("untrained.layers.raw.permuted"), get("untrained.layers.raw.rotated")
        sentence = (
            f"**Trained vs untrained** (the essay: an untrained Llama has the trained one's features; an untrained "
            f"GPT-2 does not). Feature i of a trained model against feature i of its untrained twin, same layer: "
            f"{_fmt(twin)} against {_fmt(twin_null)}: **{'alike' if aligned(twin, twin_null) else 'not alike'}**. "
            "The twin is the trained model's own initialisation, so likeness measures how far training moved "
            "the features, not a universal basis."
        )
        if u_raw:
            sentence += (
                f" Across layers, the untrained twins align at {_fmt(u_raw)} (nulls {_fmt(u_perm)}, {_fmt(u_rot)}): "
                f"**{'aligned' if aligned(u_raw, u_perm, u_rot) else 'not aligned'}** without training."
            )
        out.append(sentence)
    pinv = get("trained.methods.gradient_pinv_is_index")
    if pinv:
        chance = next(iter(metrics["models"].values()))["methods"]["chance_index"]
        nearest = get("trained.methods.gradient_nearest_is_index")
        cosine = get("trained.methods.gradient_basis_cosine")
        cosine_chance = np.mean([m["methods"]["chance_cosine"] for m in metrics["models"].values()])
        reproduced = pinv[0] >= ARTEFACT_FACTOR * chance and pinv[1] > chance
        out.append(
            f"**The gradient method's decoding** (the essay's tokens all have id = feature index). Decoded with "
            f"the pseudo-inverse of W_E as the essay writes it, token id = feature index for {_fmt(pinv)} of the "
            f"positions (chance {chance:.4f}); by nearest embedding, {_fmt(nearest)}. |cos(e_g, e_i)| between the "
            f"optimised embedding and basis vector i: {_fmt(cosine)} (a random direction: "
            f"{cosine_chance:.2f}), the pull towards e_i that the identity path predicts. "
            + (
                "**The id = index pattern appears here too.**"
                if reproduced
                else "**A correct decoding does not give id = index**: the essay's tables point to a decoding artefact."
            )
        )
    agree = get("trained.methods.greedy_first_is_exhaustive")
    if agree:

        def share(key: str) -> str:
            value = get(f"trained.methods.{key}")
            return _fmt(value) if value else "n/a"

        out.append(
            f"**Agreement between methods.** Greedy search's first token is the exhaustive winner for {_fmt(agree)} "
            f"of features (it must be: both read a one-token input). Gradient ascent's pseudo-inverse decodings hit "
            f"the exhaustive winner at {share('gradient_pinv_is_exhaustive')} of positions and one of greedy's tokens "
            f"at {share('gradient_pinv_in_greedy')}; the relaxed one-hot hits the exhaustive winner at "
            f"{share('relaxed_is_exhaustive')}. The same feature index gives the same sequence in two layers for "
            f"{share('greedy_same_across_layers')} of features (mean over layer pairs) by greedy search and "
            f"{share('gradient_pinv_same_across_layers')} by gradient ascent (the essay's tables)."
        )
    return out


def figure_rows(metrics: dict, twins: dict[str, str]) -> list[str]:
    """The models the layer figures show, one row each: every model with two layers or more that
    is not a listed twin (its twin, if listed, goes next to it)."""
    listed_twins = set(twins.values())
    return [n for n, e in metrics["models"].items() if n not in listed_twins and e["heatmap"]]


def heatmap_figure(metrics: dict, twins: dict[str, str], out) -> None:
    """Layer x layer mean same-index Spearman, trained and untrained side by side, per variant."""
    set_theme()
    rows = figure_rows(metrics, twins)
    variants = [v for v in VARIANTS if v in metrics["models"][rows[0]]["heatmap"]]
    with_twins = any(r in twins for r in rows)
    columns = [(m, v) for v in variants for m in ("trained", "untrained") if with_twins or m == "trained"]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.3 * len(columns), 2.2 * len(rows)), squeeze=False)
    for r, trained in enumerate(rows):
        for c, (which, variant) in enumerate(columns):
            name = trained if which == "trained" else twins.get(trained)
            if name is None:
                axes[r, c].axis("off")
                continue
            grid = np.array(metrics["models"][name]["heatmap"][variant])
            sns.heatmap(grid, ax=axes[r, c], vmin=-1, vmax=1, cmap="vlag", cbar=c == len(columns) - 1,
                        square=True, annot=len(grid) <= 6, fmt=".1f", annot_kws={"size": 6})  # fmt: skip
            axes[r, c].set_title(f"{name}\n{VARIANTS[variant]}", fontsize=8)
            axes[r, c].tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def distance_figure(metrics: dict, twins: dict[str, str], out) -> None:
    """Mean same-index Spearman against layer distance, trained and untrained, each variant; the grey
    band spans the permuted-index and random-rotation nulls' 95% intervals (trained model)."""
    set_theme()
    rows = figure_rows(metrics, twins)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3), squeeze=False, sharey=True)
    for ax, trained in zip(axes[0], rows):
        names = [trained] + ([twins[trained]] if trained in twins else [])
        for name, style in zip(names, ("-", "--")):
            entry = metrics["models"][name]
            for variant, colour in zip(VARIANTS, ("#1b9e77", "#d95f02", "#7570b3")):
                if variant not in entry["distance"]:
                    continue
                curve = entry["distance"][variant]["same"]  # {layer distance: [mean, lo, hi]}
                d = sorted(curve)
                mean = [curve[k][0] for k in d]
                ax.plot(d, mean, style, color=colour, marker="o", ms=3, label=f"{entry['kind']} {VARIANTS[variant]}")
            if name == trained and entry["distance"]:
                nulls = [entry["distance"]["raw"][k] for k in ("permuted", "rotated")]
                d = sorted(nulls[0])
                lo = [min(n[k][1] for n in nulls) for k in d]
                hi = [max(n[k][2] for n in nulls) for k in d]
                ax.fill_between(d, lo, hi, color="0.6", alpha=0.35, label="nulls (95%)")
        n_layers = metrics["models"][trained]["n_layers"]
        ax.set(title=trained, xlabel="layer distance", ylim=(-0.3, 1.05), xlim=(0.5, n_layers - 0.5))
        ax.set_xticks(range(1, n_layers))
    axes[0, 0].set_ylabel("Spearman, same index")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    save_figure(fig, out, dpi=110)


def sizes_figure(metrics: dict, out) -> None:
    """Across sizes: same index on shared dimensions and best match, each with its null."""
    set_theme()
    rows = []
    for pair in metrics["sizes"]:
        for depth, values in pair["depths"].items():
            for key, label in (
                ("same", "same index"),
                ("permuted", "same index: permuted null"),
                ("best", "best match"),
                ("best_rotated", "best match: rotated null"),
            ):
                mean, lo, hi = values[key]
                rows.append({"pair": f"{pair['a']} / {pair['b']}\n{depth}", "metric": label, "mean": mean,
                             "lo": lo, "hi": hi})  # fmt: skip
    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * frame["pair"].nunique()), 3.4))
    sns.barplot(frame, x="pair", y="mean", hue="metric", ax=ax, palette=["#1b9e77", "#b3e2cd", "#7570b3", "#cbd5e8"])
    for bar, (_, row) in zip(ax.patches, frame.sort_values(["metric", "pair"], key=_order(frame)).iterrows()):
        x = bar.get_x() + bar.get_width() / 2
        ax.plot([x, x], [row["lo"], row["hi"]], color="black", lw=0.8)
    ax.set(ylabel="mean Spearman", xlabel="", ylim=(-0.2, 1.05))
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def _order(frame: pd.DataFrame):
    """Sort keys that put rows in the bars' order (hue, then x, each as first seen)."""
    ranks = {c: {v: i for i, v in enumerate(dict.fromkeys(frame[c]))} for c in ("metric", "pair")}
    return lambda column: column.map(ranks[column.name])


def token_tables(found: dict, tokenizers: dict, twins: dict[str, str], kind: str) -> list[str]:
    """The essay's tables: the inputs each method finds for features 0-4 at every layer, trained next
    to untrained (the largest trained model with a twin, else the first model)."""
    trained = list(twins)[-1] if twins else next(iter(found))
    names = [trained] + ([twins[trained]] if trained in twins else [])
    n = min(5, len(found[trained]["features"]))
    features = found[trained]["features"][:n]
    methods = {  # label: (the method's key in methods.json, the tokens it found for feature f at hook record h)
        "exhaustive": ("exhaustive", lambda h, f: [h["exhaustive"][f]]),
        "greedy": ("greedy", lambda h, f: h["greedy"][f]),
        "gradient (pseudo-inverse)": ("gradient", lambda h, f: h["gradient"]["pinv"][f]),
        "gradient (nearest)": ("gradient", lambda h, f: h["gradient"]["nearest"][f]),
        "isolated block (pseudo-inverse)": ("isolated", lambda h, f: h["isolated"]["pinv"][f]),
        "relaxed one-hot": ("relaxed", lambda h, f: h["relaxed"]["tokens"][f]),
    }
    lines = []
    first_hook = next(iter(found[trained]["hooks"].values()))
    for method, (key, tokens_of) in methods.items():
        if key not in first_hook:
            continue
        table = {"layer": list(range(len(found[trained]["hooks"])))}
        for f, feature in enumerate(features):
            for name in names:
                tok = tokenizers[name]
                cells = [md_code(tok.decode(tokens_of(h, f))) for h in found[name]["hooks"].values()]
                table[f"{kind}[{feature}] {'untrained' if name != trained else 'trained'}"] = cells
        lines += [f"*{method}*, {trained}" + (f" and {names[1]}" if len(names) > 1 else "") + ":", ""]
        lines.append(markdown_table(pd.DataFrame(table)))
    return lines


def alignment_section(
    metrics: dict,
    pooled: dict[str, torch.Tensor],
    found: dict,
    tokenizers: dict,
    twins: dict[str, str],
    kind: str,
    seed: int,
    figures: dict[str, str],
    out,
) -> None:
    """summary.md (figures, verdicts, the per-model table, the token tables) and the figures."""
    if not figure_rows(metrics, twins):
        raise ValueError("alignment.models has no model with two layers or more: there is nothing to compare")
    heatmap_figure(metrics, twins, figures["heatmaps"])
    distance_figure(metrics, twins, figures["distance"])
    lines = [
        "![Layer × layer mean Spearman of same-index single-token profiles: raw, after subtracting the "
        "embedding, and of each block's own write; trained and untrained twins side by side.]"
        "(alignment/heatmaps.png){#fig-align-heatmaps}",
        "",
        "![Same-index alignment against layer distance (solid: trained, dashed: untrained), with the "
        "permuted-index and random-rotation nulls' 95% band.](alignment/distance.png){#fig-align-distance}",
        "",
    ]
    if metrics["sizes"]:
        sizes_figure(metrics, figures["sizes"])
        lines += [
            "![Across sizes: feature i against feature i on the shared dimensions and each feature's best "
            "match, each with its null; 95% bootstrap intervals over features.](alignment/sizes.png)"
            "{#fig-align-sizes}",
            "",
        ]
    else:
        lines += ["No sizes are compared: `alignment.sizes` lists fewer than two models.", ""]
    lines += [
        f"Verdicts (a claim of alignment holds when the mean Spearman is at least {MIN_ALIGNED} and its 95% "
        "bootstrap interval over features lies above every null's; numbers are mean [95% interval]):",
        "",
    ]
    for verdict in verdicts(metrics, pooled, seed):
        lines += [verdict, ""]
    table = []
    for name, entry in metrics["models"].items():
        row = {"model": name, "kind": entry["kind"], "layers": entry["n_layers"]}
        across = entry["across_layers"]
        for variant in VARIANTS:
            row[f"{VARIANTS[variant]} across layers"] = _fmt(across[variant]["same"]) if variant in across else "—"
        row["permuted null"] = _fmt(across["raw"]["permuted"]) if across else "—"
        row["vs embedding"] = _fmt(entry["identity"]["all"]) if "identity" in entry else "—"
        table.append(row)
    lines += [
        "Per model: same-index Spearman across layers (mean over layer pairs), its permuted-index null, and "
        "each layer's profile against the embedding's own dimension (— : one layer, or no embedding control for "
        "mlp features).",
        "",
        markdown_table(pd.DataFrame(table)),
        "",
    ]
    lines += token_tables(found, tokenizers, twins, kind)
    write_text(out, "\n".join(lines) + "\n")
