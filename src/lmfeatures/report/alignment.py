"""The report's "Are features aligned across layers?" section: figures, the essay-style token tables
and one verdict per claim of the essay, each computed from the numbers with the rules below.

Every claim is judged in the essay's own terms, the same maximising input: the argmax agreement of
feature i with its counterpart, against the permuted-index null (feature j != i), per model; top-k
Jaccard and Spearman are given beside it with their nulls. A claim about models in general holds
when it holds in each model that tests it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmfeatures.lm.display import token_text
from lmfeatures.report.plotting import markdown_table, md_code, plt, save_figure, set_theme, sns
from lmfeatures.store.report import write_text

# The same maximising input for "most features": argmax agreement at least MIN_AGREEMENT, with the
# interval of its paired difference from the permuted null above zero.
MIN_AGREEMENT = 0.5
# Whole-profile alignment (the identity-path analysis): Spearman at least MIN_ALIGNED, above every null.
MIN_ALIGNED = 0.3

VARIANTS = {"raw": "resid.L", "minus_embed": "resid.L − embed", "writes": "block write"}
STATISTIC_NAMES = {"argmax": "argmax agreement", "jaccard": "top-k Jaccard", "spearman": "Spearman"}


def _fmt(summary: list[float]) -> str:
    mean, lo, hi = summary
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def _signed(summary: list[float]) -> str:
    mean, lo, hi = summary
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def above(record: dict, null: str = "permuted") -> bool:
    """The paired difference from the null has its 95% interval above zero."""
    return record["nulls"][null]["difference"][1] > 0


def aligned(record: dict) -> bool:
    """Whole-profile alignment: the value reaches MIN_ALIGNED and beats every null."""
    return record["value"][0] >= MIN_ALIGNED and all(above(record, null) for null in record["nulls"])


def agreement_verdict(record: dict) -> str:
    """'holds', 'above chance' (for fewer than MIN_AGREEMENT of features) or 'at chance'."""
    if not above(record):
        return "at chance"
    return "holds" if record["value"][0] >= MIN_AGREEMENT else "above chance"


def _versus_null(record: dict, null: str = "permuted") -> str:
    return f"{_fmt(record['value'])} against {_fmt(record['nulls'][null]['value'])}"


def claim_rows(metrics: dict) -> list[dict]:
    """One row per claim and model (or model pair) that the configured models test: the claim, who,
    and the record of each statistic (argmax agreement decides)."""
    rows = []
    for name, entry in metrics["models"].items():
        if "raw" in entry["across_layers"]:
            claim = "across layers" if entry["kind"] == "trained" else "across layers, untrained"
            rows.append({"claim": claim, "who": name, **entry["across_layers"]["raw"]})
    for pair in metrics["sizes"]:
        rows.append({"claim": "across sizes (first block)", "who": f"{pair['a']} / {pair['b']}",
                     **{k: pair["depths"]["first block"][k] for k in STATISTIC_NAMES}})  # fmt: skip
    for trained, record in metrics["twins"].items():
        rows.append({"claim": "trained vs untrained", "who": f"{trained} / {record['twin']}",
                     **{k: record[k] for k in STATISTIC_NAMES}})  # fmt: skip
    return rows


CLAIMS = {  # claim: what the essay says, or why the row is there
    "across layers": "the essay: the same features at every depth; feature i has one maximising input in all blocks",
    "across sizes (first block)": "the essay: different-sized models share their features index by index",
    "trained vs untrained": "the essay: an untrained model has the trained one's features; Llama yes, GPT-2 no",
    "across layers, untrained": "the contrast: the across-layer alignment without training",
}


def _claim_verdict(claim: str, rows: list[dict]) -> str:
    """The verdict sentence of one claim from its rows, one per model (pair), on argmax agreement."""
    per = {r["who"]: agreement_verdict(r["argmax"]) for r in rows}
    holding = [who for who, v in per.items() if v == "holds"]
    values = [r["argmax"]["value"][0] for r in rows]
    spread = f"{min(values):.2f}" if len(values) == 1 else f"{min(values):.2f} to {max(values):.2f}"
    if len(holding) == len(per):
        overall = f"**Holds** in {'each of the ' + str(len(per)) if len(per) > 1 else 'the one'} tested"
    elif holding:
        overall = f"**Holds in {len(holding)} of {len(per)}** ({', '.join(holding)})"
    elif any(v == "above chance" for v in per.values()):
        above_in = [who for who, v in per.items() if v == "above chance"]
        overall = (
            f"**Does not hold**: above the permuted null in {len(above_in)} of {len(per)}, but for fewer than "
            f"{MIN_AGREEMENT:.0%} of features"
        )
    else:
        overall = "**Does not hold**: at the permuted null in each"
    return f"**{claim.capitalize()}** ({CLAIMS[claim]}). {overall} (argmax agreement {spread})."


def claims_table(rows: list[dict]) -> str:
    """Every claim's rows: each statistic against its permuted null, the paired difference and the verdict."""
    table = []
    for r in rows:
        argmax = r["argmax"]
        table.append({
            "claim": r["claim"],
            "model(s)": r["who"],
            "argmax agreement": _fmt(argmax["value"]),
            "permuted null": _fmt(argmax["nulls"]["permuted"]["value"]),
            "difference": _signed(argmax["nulls"]["permuted"]["difference"]),
            "verdict": agreement_verdict(argmax),
            **{
                f"{STATISTIC_NAMES[k]} (null)": f"{_fmt(r[k]['value'])} ({r[k]['nulls']['permuted']['value'][0]:.2f})"
                for k in ("jaccard", "spearman")
            },
        })  # fmt: skip
    return markdown_table(pd.DataFrame(table))


def _identity_conclusion(entry: dict) -> str:
    """Which part of the residual stream carries a model's across-layer alignment (Spearman)."""
    across = entry["across_layers"]
    raw, writes = aligned(across["raw"]["spearman"]), aligned(across["writes"]["spearman"])
    if writes:
        return "the blocks' own writes are aligned too"
    if not raw:
        return "no across-layer alignment for the identity path to explain"
    if entry["identity"]["all"][0] >= MIN_ALIGNED:
        return "carried by the identity path: the embedding itself"
    return "carried by the identity path, past the embedding: what the earlier blocks wrote"


def identity_verdict(metrics: dict) -> str | None:
    """The identity-path paragraph: per trained model with resid controls, Spearman of resid.L with the
    embedding's dimension i, of the blocks' writes across blocks, and what carries the alignment."""
    models = {n: e for n, e in metrics["models"].items() if e["kind"] == "trained" and "writes" in e["across_layers"]}
    if not models:
        return None
    parts = []
    for name, entry in models.items():
        writes = entry["across_layers"]["writes"]["spearman"]["nulls"]
        first = entry.get("first_write")
        parts.append(
            f"{name}: **{_identity_conclusion(entry)}** (block writes' nulls {_fmt(writes['permuted']['value'])} "
            f"permuted, {_fmt(writes['rotated']['value'])} rotated"
            + (f"; resid.L − embed of later layers against block 0's write {_fmt(first)}" if first else "")
            + ")"
        )
    return (
        "**The identity path** (Spearman of whole profiles, per model in the table below; aligned means at least "
        f"{MIN_ALIGNED} and above both nulls). " + "; ".join(parts) + "."
    )


def _trained_methods(metrics: dict, key: str) -> dict[str, dict]:
    """{trained model: its method records} for the models whose records hold `key`."""
    found = {n: e["methods"] for n, e in metrics["models"].items() if e["kind"] == "trained"}
    return {n: m for n, m in found.items() if key in m.get("all", {})}


def decoding_verdict(metrics: dict) -> str | None:
    """The gradient method's decoding per trained model: id == feature index and |cos(e_g, e_i)|,
    each against its null, over all method features and over the random ones; a sentence and a table."""
    models = _trained_methods(metrics, "gradient_pinv_is_index")
    if not models:
        return None
    table, reproduced = [], []
    for name, found in models.items():
        index = found["all"]["gradient_pinv_is_index"]
        row = {
            "model": name,
            "id = index": _fmt(index["value"]),
            "permuted null": _fmt(index["nulls"]["permuted"]["value"]),
        }
        row["difference"] = _signed(index["nulls"]["permuted"]["difference"])
        if "random" in found:
            row["id = index, random features"] = _fmt(found["random"]["gradient_pinv_is_index"]["value"])
        if "gradient_basis_cosine" in found["all"]:
            cosine = found["all"]["gradient_basis_cosine"]
            row["abs. cosine to e_i"] = _fmt(cosine["value"])
            row["to the other e_j"] = _fmt(cosine["nulls"]["other basis vectors"]["value"])
        table.append(row)
        if above(index):
            reproduced.append(name)
    conclusion = (
        f"**The id = index pattern appears here** in {', '.join(reproduced)}"
        if reproduced
        else "**A correct decoding does not give id = index more often than another feature's index** in any model"
    )
    cosines = [r for r in table if "abs. cosine to e_i" in r]
    pulled = [m for m in models if "gradient_basis_cosine" in models[m]["all"]
              and above(models[m]["all"]["gradient_basis_cosine"], "other basis vectors")]  # fmt: skip
    pull = (
        f" The optimised embedding leans towards basis vector i more than towards the others, from the same "
        f"start, in {len(pulled)} of {len(cosines)} models{': the identity path predicts it' if pulled else ''}."
        if cosines
        else ""
    )
    return (
        "**The gradient method's decoding** (the essay's tables: every decoded token has id = feature index). "
        "The share of decoded positions (pseudo-inverse of W_E, as the essay writes it) whose token id is the "
        f"feature's own index, against another method feature's index: {conclusion}.{pull}\n\n"
        + markdown_table(pd.DataFrame(table))
    )


METHOD_RATES = {
    "gradient_pinv_is_exhaustive": "gradient decodings hit the exhaustive winner",
    "gradient_pinv_in_greedy": "gradient decodings hit one of greedy's tokens",
    "relaxed_is_exhaustive": "the relaxed one-hot hits the exhaustive winner",
    "greedy_same_across_layers": "greedy gives the same sequence in two layers",
    "gradient_pinv_same_across_layers": "gradient ascent gives the same sequence in two layers",
}


def methods_verdict(metrics: dict) -> str | None:
    """How the methods agree, per trained model, each rate against its permuted null: a sentence on
    greedy's first step, and a table."""
    models = {n: m["all"] for n, m in _trained_methods(metrics, "greedy_first_is_exhaustive").items()}
    if not models:
        return None
    first = {n: m["greedy_first_is_exhaustive"]["value"][0] for n, m in models.items()}
    faults = [n for n, share in first.items() if share < 1]
    table = [
        {"rate": label, **{n: _versus_null(m[key]) if key in m else "—" for n, m in models.items()}}
        for key, label in METHOD_RATES.items()
        if any(key in m for m in models.values())
    ]
    return (
        "**Agreement between methods.** Greedy search's first token, found by its own search over the "
        "vocabulary, is the exhaustive winner for a share of features of "
        + ", ".join(f"{share:.2f} in {n}" for n, share in first.items())
        + ": both read a one-token input, so "
        + (f"**one of the searches is at fault in {', '.join(faults)}**." if faults else "the two searches agree.")
        + " Each rate below is against the same rate for another feature's tokens:\n\n"
        + markdown_table(pd.DataFrame(table))
    )


def verdicts(metrics: dict) -> list[str]:
    """One paragraph per claim of the essay that the configured models can test, then the table of
    the structural claims' numbers."""
    rows = claim_rows(metrics)
    out = []
    for claim in CLAIMS:
        of_claim = [r for r in rows if r["claim"] == claim]
        if of_claim:
            out.append(_claim_verdict(claim, of_claim))
    out.append(claims_table(rows))
    return out + [v for v in (identity_verdict(metrics), decoding_verdict(metrics), methods_verdict(metrics)) if v]


def claims_figure(metrics: dict, out) -> None:
    """Each claim and model: argmax agreement, top-k Jaccard and Spearman (dots) against their
    permuted-index nulls (hollow), with 95% intervals resampled by feature."""
    set_theme()
    rows = claim_rows(metrics)
    labels = [f"{r['claim']}\n{r['who']}" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10, 0.45 * len(rows) + 1.4), sharey=True)
    y = np.arange(len(rows))
    series = {  # label: (offset on the y axis, marker style, the summary it plots of a record)
        "same index": (-0.15, {"color": "#1b9e77", "marker": "o"}, lambda record: record["value"]),
        "permuted null": (
            0.15,
            {"color": "0.45", "marker": "o", "mfc": "white"},
            lambda record: record["nulls"]["permuted"]["value"],
        ),
    }
    for ax, (statistic, title) in zip(axes, STATISTIC_NAMES.items()):
        for label, (offset, style, summary_of) in series.items():
            values = np.array([summary_of(r[statistic]) for r in rows])  # [rows, (mean, lo, hi)]
            err = np.abs(values[:, 1:].T - values[:, 0])
            ax.errorbar(values[:, 0], y + offset, xerr=err, ls="none", ms=5, capsize=2, label=label, **style)
        if statistic == "argmax":
            ax.axvline(MIN_AGREEMENT, color="#d95f02", lw=0.8, ls="--", label=f"verdict threshold {MIN_AGREEMENT}")
        ax.set(title=title, xlim=(-0.05 if statistic != "spearman" else -0.3, 1.02))
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].invert_yaxis()
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, out, dpi=110)


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
            grid = np.array(metrics["models"][name]["heatmap"][variant]["spearman"])
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
                curve = entry["distance"][variant]["spearman"]  # {layer distance: [mean, lo, hi]}
                d = sorted(curve)
                mean = [curve[k][0] for k in d]
                ax.plot(d, mean, style, color=colour, marker="o", ms=3, label=f"{entry['kind']} {VARIANTS[variant]}")
            if name == trained and entry["distance"]:
                nulls = [entry["distance"]["raw"][k] for k in ("spearman_permuted", "spearman_rotated")]
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
            same, best = values["spearman"], values["best_match"]
            for (mean, lo, hi), label in (
                (same["value"], "same index"),
                (same["nulls"]["permuted"]["value"], "same index: permuted null"),
                (best["value"], "best match"),
                (best["nulls"]["rotated"]["value"], "best match: rotated null"),
            ):
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
                cells = [md_code(token_text(tok, tokens_of(h, f))) for h in found[name]["hooks"].values()]
                table[f"{kind}[{feature}] {'untrained' if name != trained else 'trained'}"] = cells
        lines += [f"*{method}*, {trained}" + (f" and {names[1]}" if len(names) > 1 else "") + ":", ""]
        lines.append(markdown_table(pd.DataFrame(table)))
    return lines


def alignment_section(
    metrics: dict,
    found: dict,
    tokenizers: dict,
    twins: dict[str, str],
    kind: str,
    figures: dict[str, str],
    out,
) -> None:
    """summary.md (figures, verdicts, the per-model table, the token tables) and the figures."""
    if not figure_rows(metrics, twins):
        raise ValueError("alignment.models has no model with two layers or more: there is nothing to compare")
    claims_figure(metrics, figures["claims"])
    heatmap_figure(metrics, twins, figures["heatmaps"])
    distance_figure(metrics, twins, figures["distance"])
    lines = [
        "![Each claim of the essay, per model or model pair: argmax agreement (the verdicts' statistic), "
        "top-k Jaccard and Spearman of feature i with its counterpart (filled) against feature j ≠ i "
        "(hollow); 95% intervals resample features.](alignment/claims.png){#fig-align-claims}",
        "",
        "![Layer × layer mean Spearman of same-index single-token profiles: raw, after subtracting the "
        "embedding, and of each block's own write; trained and untrained twins side by side.]"
        "(alignment/heatmaps.png){#fig-align-heatmaps}",
        "",
        "![Same-index Spearman against layer distance (solid: trained, dashed: untrained), with the "
        "permuted-index and random-rotation nulls' 95% band.](alignment/distance.png){#fig-align-distance}",
        "",
    ]
    if metrics["sizes"]:
        sizes_figure(metrics, figures["sizes"])
        lines += [
            "![Across sizes: Spearman of feature i against feature i on the shared dimensions and each "
            "feature's best match, each with its null; 95% intervals resample features.](alignment/sizes.png)"
            "{#fig-align-sizes}",
            "",
        ]
    else:
        lines += ["No sizes are compared: `alignment.sizes` lists fewer than two models.", ""]
    lines += [
        "Verdicts. Each claim is judged per model (or model pair) on argmax agreement: it **holds** when at "
        f"least {MIN_AGREEMENT:.0%} of features share their maximising token with their counterpart and the "
        "paired difference from the permuted-index null (feature j ≠ i, averaged over every j) has its 95% "
        "interval above zero; a claim about models holds when it holds in each. Numbers are mean [95% "
        "interval], resampled by feature within one model: a feature measured at several layers is one unit.",
        "",
    ]
    for verdict in verdicts(metrics):
        lines += [verdict, ""]
    table = []
    for name, entry in metrics["models"].items():
        row = {"model": name, "kind": entry["kind"], "layers": entry["n_layers"]}
        across = entry["across_layers"]
        for variant in VARIANTS:
            cell = _fmt(across[variant]["spearman"]["value"]) if variant in across else "—"
            row[f"Spearman, {VARIANTS[variant]}"] = cell
        row["vs embedding"] = _fmt(entry["identity"]["all"]) if "identity" in entry else "—"
        table.append(row)
    lines += [
        "Per model: same-index Spearman across layers (mean over layer pairs), for resid.L and the identity-path "
        "controls, and each layer's profile against the embedding's own dimension (— : one layer, or no "
        "embedding control for mlp features).",
        "",
        markdown_table(pd.DataFrame(table)),
        "",
    ]
    lines += token_tables(found, tokenizers, twins, kind)
    write_text(out, "\n".join(lines) + "\n")
