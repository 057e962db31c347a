"""The report's "Sparse autoencoder features" section: evaluation table, pass rates of every
dictionary with intervals on the real layer and on the planted ground truth, per-check verdicts
against the random-decoder SAE, the untrained twin's SAE and the neurons, the neuron-correlation x
universality scatter, the proxy-matched features' table and histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

from lmfeatures.report.plotting import markdown_table, md_code, plt, save_figure, set_theme
from lmfeatures.sae.checks import CHECKS, SAE_ONLY
from lmfeatures.stats import wilson_interval
from lmfeatures.store.report import write_text

SCATTER_PROXIES = 9  # the most common proxies among the specific features get a colour of their own
DOCUMENT_FEATURES = (".", "for", "else", "import")  # the seed document's four features
SHARED_CHECKS = tuple(c for c in CHECKS if c not in SAE_ONLY)  # the checks that apply to neurons too
PLANTED_RUNS = ("A", "B", "random-A", "random-B", "neurons")
PLANTED_NEURONS = "neurons (planted: the coordinates)"
RECOVERED_COSINE = 0.9  # a planted direction is recovered when a decoder row is at least this close


def dictionary_label(model: str, name: str, trained_model: str) -> str:
    if name == "neurons":
        return f"neurons of {model}"
    kind = "random-decoder SAE" if name.startswith("random-") else "SAE"
    where = "" if model == trained_model else f" of {model} (untrained twin)"
    return f"{kind} {name.removeprefix('random-')}{where}"


def evaluation_table(evaluations: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": [e["model"] for e in evaluations],
            "run": [e["run"] for e in evaluations],
            "L0": [e["l0"] for e in evaluations],
            "explained variance": [e["explained_variance"] for e in evaluations],
            "MSE": [e["mse"] for e in evaluations],
            "dead": [e["dead_share"] for e in evaluations],
            "dense": [e["dense_share"] for e in evaluations],
            "CE clean": [e["ce_clean"] for e in evaluations],
            "CE spliced": [e["ce_spliced"] for e in evaluations],
            "CE zero-ablated": [e["ce_zero_ablated"] for e in evaluations],
            "loss recovered": [_recovered(e) for e in evaluations],
        }
    )


MIN_ABLATION_GAP = 0.01  # nats: below this, zero-ablating the layer barely matters and the ratio is noise


def _recovered(evaluation: dict) -> float:
    """Loss recovered, NaN where zero-ablation changes the loss by less than MIN_ABLATION_GAP."""
    gap = evaluation["ce_zero_ablated"] - evaluation["ce_clean"]
    return evaluation["loss_recovered"] if gap >= MIN_ABLATION_GAP else float("nan")


def _rate_row(live: pd.DataFrame, sae_only_applicable: bool) -> dict:
    """Per check (and 'shared' = the checks neurons can take, 'all' = all five) the share of `live`
    rows passing with its Wilson 95% interval and count; NaN where the check does not apply."""
    row = {"live": len(live)}
    columns = {c: live[f"pass_{c}"] for c in CHECKS}
    columns["shared"] = live[[f"pass_{c}" for c in SHARED_CHECKS]].all(axis=1)
    columns["all"] = live[[f"pass_{c}" for c in CHECKS]].all(axis=1)
    # the downstream check may have been measured on a sample of the live units (sae.downstream_units):
    # rates that include it are estimated over that sample
    sampled = live["downstream_sampled"] if "downstream_sampled" in live else pd.Series(True, index=live.index)
    for check, passed in columns.items():
        ok = sae_only_applicable or check not in (*SAE_ONLY, "all")
        if check in ("downstream", "shared", "all"):
            passed = passed[sampled]
        share, lo, hi = wilson_interval(int(passed.sum()), len(passed)) if ok else (np.nan,) * 3
        row |= {check: share, f"{check}_lo": lo, f"{check}_hi": hi, f"{check}_n": int(passed.sum()) if ok else np.nan}
    return row


def pass_rates(checks: dict[tuple[str, str], pd.DataFrame], trained_model: str) -> pd.DataFrame:
    """One row per dictionary: live units, and per check the share of live units passing with
    Wilson 95% intervals; "shared" = specificity, sensitivity and downstream together (the checks
    neurons can take), "all" = all five (SAE features only)."""
    rows = []
    for (model, name), table in checks.items():
        label = {"dictionary": dictionary_label(model, name, trained_model), "model": model, "name": name}
        rows.append(label | _rate_row(table[table["live"]], name != "neurons"))
    return pd.DataFrame(rows)


def planted_features(table: pd.DataFrame, planted_classes: list[str]) -> pd.DataFrame:
    """Per planted class, the dictionary's unit chosen for it the way a user would: among the live
    units whose best proxy is the class, the one with the highest F1 on the selection windows (a row
    of NaN / False where no unit has it)."""
    live = table[table["live"]].sort_values("selection_f1", ascending=False)
    first = live.drop_duplicates("best_proxy").set_index("best_proxy")
    # the chosen units' downstream check is always measured (sae.downstream_units): no sample to restrict to
    chosen = first.reindex(planted_classes).drop(columns="downstream_sampled", errors="ignore")
    return chosen.assign(**{f"pass_{c}": lambda f, c=c: f[f"pass_{c}"].fillna(False).astype(bool) for c in CHECKS})


def planted_rates(tables: dict[str, pd.DataFrame], summary: dict) -> pd.DataFrame:
    """One row per planted dictionary: recovered directions (a decoder row within RECOVERED_COSINE),
    and per check the share of planted classes whose chosen unit passes, with Wilson intervals."""
    rows = []
    classes = summary["planted_classes"]
    for name in PLANTED_RUNS:
        if name not in tables:
            continue
        cosines = np.asarray(summary["recovery"][name]["cosine"]) if name in summary["recovery"] else None
        row = {
            "dictionary": PLANTED_NEURONS
            if name == "neurons"
            else ("random-decoder SAE " if "random" in name else "SAE ") + name.removeprefix("random-"),
            "name": name,
            "recovered": np.nan if cosines is None else float((cosines >= RECOVERED_COSINE).mean()),
            "median cosine": np.nan if cosines is None else float(np.median(cosines)),
        }
        rows.append(row | _rate_row(planted_features(tables[name], classes), name != "neurons"))
    return pd.DataFrame(rows).rename(columns={"live": "classes"})


def _cell(row, check: str) -> str:
    if np.isnan(row[check]):
        return "n/a"
    lo, hi = 100 * row[f"{check}_lo"], 100 * row[f"{check}_hi"]
    return f"{int(row[f'{check}_n'])} ({100 * row[check]:.1f}% [{lo:.1f}, {hi:.1f}])"


def _differs(a, b, check: str) -> str:
    """'above' / 'below' / 'not clearly different from' by non-overlapping Wilson intervals (NaN:
    'not comparable with')."""
    if np.isnan(a[check]) or np.isnan(b[check]):
        return "not comparable with"
    if a[f"{check}_lo"] > b[f"{check}_hi"]:
        return "above"
    if a[f"{check}_hi"] < b[f"{check}_lo"]:
        return "below"
    return "not clearly different from"


def universality_figure(
    checks: dict[tuple[str, str], pd.DataFrame], panels: list[tuple[str, str, str]], thresholds: dict, out
) -> None:
    """Per SAE dictionary (a panel): each live feature's max |r| with a neuron against its best r
    with the other run (dashed: the universality threshold); proxy-matched features (passing
    specificity) coloured by their proxy."""
    set_theme()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(8, 4.2 * len(panels)), 4.4), sharex=True, sharey=True, squeeze=False
    )
    matched = pd.concat([checks[(model, name)].query("pass_specificity")["best_proxy"] for model, name, _ in panels])
    common = matched.value_counts().index[:SCATTER_PROXIES].tolist()  # coloured; the other proxies in one colour
    colours = dict(zip(common, plt.cm.tab10([0, 1, 2, 3, 4, 5, 6, 8, 9])))  # tab10 without its grey
    for ax, (model, name, title) in zip(axes[0], panels):
        t = checks[(model, name)]
        t = t[t["live"]]
        rest = t[~t["pass_specificity"]]
        ax.scatter(rest["neuron_corr"], rest["other_corr"], s=5, c="#bbbbbb", alpha=0.5, label="other features")
        specific = t[t["pass_specificity"]]
        others = specific[~specific["best_proxy"].isin(common)]
        ax.scatter(others["neuron_corr"], others["other_corr"], s=10, c="#555555", label="other proxies")
        for proxy, group in specific[specific["best_proxy"].isin(common)].groupby("best_proxy"):
            ax.scatter(group["neuron_corr"], group["other_corr"], s=14, color=colours[proxy], label=str(proxy))
        ax.axhline(thresholds["universality"], color="k", lw=0.8, ls="--")
        ax.set(title=title, xlabel="max |r| with a neuron", xlim=(0, 1.02), ylim=(-0.05, 1.02))
    axes[0][0].set_ylabel("best r with the other run")
    seen = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=min(7, len(seen)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    save_figure(fig, out, dpi=110)


def specificity_figure(features: pd.DataFrame, out, n: int = 8) -> None:
    """The document's specificity view for the proxy-matched features: firing tokens per activation
    bin (fraction of the feature's max), in the proxy class and outside it."""
    set_theme()
    shown = features.head(n)
    cols = min(4, max(len(shown), 1))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    if not len(shown):
        axes[0][0].text(0.5, 0.5, "no proxy-matched features", ha="center", va="center")
    for ax, (_, f) in zip(axes.flat, shown.iterrows()):
        inside, total = np.asarray(f["hist_in_proxy"]), np.asarray(f["hist_all"])
        centres = (np.arange(len(total)) + 0.5) / len(total)
        ax.bar(centres, inside, width=1 / len(total), color="#d95f02", label="in proxy class")
        ax.bar(centres, total - inside, bottom=inside, width=1 / len(total), color="#7570b3", label="other tokens")
        ax.set_yscale("symlog")
        ax.set_title(f"F{int(f['unit'])}: {f['best_proxy']!r} (LLR {f['llr']:.1f})", fontsize=9)
        ax.set_xlabel("activation / max", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, out, dpi=110)


def rates_figure(real: pd.DataFrame, planted: pd.DataFrame, out) -> None:
    """Pass rate per check with Wilson 95% intervals, one bar per dictionary: the real layer (left)
    and the planted ground truth (right)."""
    set_theme()
    checks = [*CHECKS, "all"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    labels = list(dict.fromkeys([*real["dictionary"], *planted["dictionary"]]))
    colours = dict(zip(labels, sns.color_palette("tab10", len(labels))))  # one colour per dictionary in both panels
    for ax, rates, title in (
        (axes[0], real, "real layer: all live units"),
        (axes[1], planted, "planted: one unit per planted class"),
    ):
        width = 0.8 / max(len(rates), 1)
        for i, (_, row) in enumerate(rates.iterrows()):
            x = np.arange(len(checks)) + (i - (len(rates) - 1) / 2) * width
            share = np.array([row[c] for c in checks], dtype=float)
            err = np.array([[row[c] - row[f"{c}_lo"], row[f"{c}_hi"] - row[c]] for c in checks], dtype=float).T
            err = np.clip(np.nan_to_num(err), 0, None)  # the interval's ends can round past the share
            ax.bar(
                x,
                np.nan_to_num(share),
                width,
                yerr=err,
                capsize=2,
                color=colours[row["dictionary"]],
                label=row["dictionary"],
            )
        ax.set_xticks(np.arange(len(checks)), [c.replace("_", " ") for c in checks], rotation=20)
        ax.set(title=title, ylim=(0, 1.05))
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel("share passing")
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def matched_features(table: pd.DataFrame) -> pd.DataFrame:
    """Live features passing specificity, best selection F1 first."""
    live = table[table["live"]]
    return live[live["pass_specificity"]].sort_values("selection_f1", ascending=False)


def _check_rule(t: dict) -> str:
    return (
        f"A unit *fires* at activation ≥ {t['fire_share']} of its max on the selection windows (neurons too). "
        "Its best proxy is the class with the highest F1 of (fires, in class) on the **selection windows** "
        "(train split); every check is scored on the **held-out check windows**. Specificity: precision ≥ "
        f"{t['specificity']} and lift (precision / the class's base rate) ≥ {t['lift']}. Sensitivity: recall ≥ "
        f"{t['sensitivity']}. Downstream: at the class's tokens where the unit fires, removing its part (activation × "
        "decoder row) from the layer's activations lowers log p(the tokens the class predicts) by ≥ "
        f"{t['downstream']} nats and by ≥ {t['downstream_share']} of what mean-ablating the whole layer does there "
        "(a class predicts the tokens whose frequency right after it most exceeds their overall frequency). Not a "
        "neuron: it is specific, and no neuron of the layer passes specificity for the same proxy. Universality: "
        f"its best activation r with a feature of the other run ≥ {t['universality']}."
    )


def sae_section(
    evaluations: list[dict],
    checks: dict[tuple[str, str], pd.DataFrame],
    planted: tuple[dict[str, pd.DataFrame], dict],
    trained_model: str,
    twin: str | None,
    params: dict,
    class_tokens: dict[str, int],
    page_links: dict[int, str],
    figures: dict[str, str],
    out,
) -> None:
    """summary.md: evaluation, pass rates with per-check verdicts on the real layer and on the planted
    ground truth, the document's four features, the proxy-matched features' table. `figures` maps
    figure key -> path relative to the report."""
    evaluation = evaluation_table(evaluations)
    rates = pass_rates(checks, trained_model)
    planted_tables, summary = planted
    planted_rate = planted_rates(planted_tables, summary)
    context = (
        "**a context-free layer**: its MLP reads the current token alone (attention and MLP run in parallel, and "
        "nothing before them has mixed the context in), so its features can code token identity at most, and "
        "contextual proxies match only through the tokens they contain (`sae.allow_context_free` is set)"
        if evaluations[0]["context_free"]
        else "a layer whose input depends on earlier tokens"
    )
    hand = [c for c in class_tokens if not c.startswith("token ")]
    lines = [
        f"SAEs read `mlp.{params['layer']}` of **{trained_model}** (expansion {params['expansion']}, "
        f"{params['architecture']} with k = {params['k']}, {params['tokens']:,} training tokens per run, windows "
        f"sampled from the whole train split), {context}. The evaluation and the checks read "
        f"{evaluations[0]['tokens']:,} held-out tokens from documents no SAE trained on.",
        "",
        "**Evaluation.** CE is the next-token cross-entropy (nats) of the model clean, with the SAE's "
        "reconstruction spliced in, and with the activations zero-ablated; loss recovered = (zero − spliced) / "
        f"(zero − clean), left empty where zero-ablation moves the loss by less than {MIN_ABLATION_GAP} nats (the "
        "ratio is then noise: an untrained model barely uses its MLP). Dead = never fired on the held-out tokens; "
        "dense = fires on more than 10% of them.",
        "",
        markdown_table(evaluation, floatfmt=".3f").replace(" nan ", "     "),
        f"**Proxies.** {len(class_tokens)} classes: {len(hand)} hand classes ("
        + ", ".join(md_code(c) for c in hand)
        + f") and {len(class_tokens) - len(hand)} token classes (every token with at least "
        f"{params['token_classes']['min_tokens']} occurrences in the selection windows).",
        "",
        f"**Checks.** {_check_rule(params['thresholds'])} Shares of live units with Wilson 95% intervals; 'shared' "
        "= the first three together, the checks a neuron can take.",
        "",
    ]
    shown = rates.assign(**{c: [_cell(r, c) for _, r in rates.iterrows()] for c in (*CHECKS, "shared", "all")})
    lines.append(markdown_table(shown[["dictionary", "live", *CHECKS, "shared", "all"]]))
    lines += ["", "**Verdicts on the real layer.**", ""]
    lines += _verdicts(rates, trained_model, twin)
    lines += ["", *_planted_lines(planted_rate, summary, params), ""]
    lines += [
        f"![Pass rate per check with Wilson 95% intervals, per dictionary: the real layer (left, all live units) "
        f"and the planted ground truth (right, the unit chosen for each planted class).]({figures['rates']})"
        "{#fig-sae-pass-rates}",
        "",
    ]
    a = checks[(trained_model, "A")]
    matched = matched_features(a)
    lines += [
        f"![Each live feature's largest |r| with a neuron (x) against its best r with a feature of the other run "
        f"(y), one panel per SAE; dashed: the universality threshold. Coloured: features passing specificity, "
        f"by their proxy (the {SCATTER_PROXIES} most common; dark grey: the others).]({figures['scatter']})"
        "{#fig-sae-universality}",
        "",
        "**The document's features.** Seed 004 found full-stop, `for`, `else` and `import` features in an "
        "open SAE on a 1-layer model. Ours (run A, the feature with the best selection F1 for each proxy):",
        "",
    ]
    lines.append(_document_features(a, class_tokens, page_links))
    lines += [
        "",
        f"**Proxy-matched features of run A** ({len(matched)} pass specificity; the first 20 by selection F1). "
        "LLR = log P(fires | class) / P(fires | not in class), the document's log-likelihood-ratio view in one "
        "number; Δ log p = the downstream effect, share = its share of the whole layer's.",
        "",
        _matched_table(matched.head(20), page_links),
        f"![Specificity, the document's way: firing tokens per activation bin for the proxy-matched features of "
        f"run A, in the proxy class (orange) and outside it (purple), log scale.]({figures['specificity']})"
        "{#fig-sae-specificity}",
        "",
        "Hand classes on the held-out tokens: "
        + ", ".join(f"{md_code(k)} {int(class_tokens[k]):,}" for k in hand)
        + ".",
        "",
    ]
    write_text(out, "\n".join(lines) + "\n")


def _separating(a, b, checks=(*CHECKS, "all")) -> tuple[list[str], list[str]]:
    """(checks where a's interval lies above b's, the others among those that apply to both)."""
    above = [c for c in checks if _differs(a, b, c) == "above"]
    rest = [c for c in checks if c not in above and _differs(a, b, c) != "not comparable with"]
    return above, rest


def _names(checks: list[str]) -> str:
    return ", ".join(c.replace("_", " ") for c in checks) or "none"


def _verdicts(rates: pd.DataFrame, trained_model: str, twin: str | None) -> list[str]:
    """One sentence per comparison of the trained SAE A, check by check, with the counts behind it."""
    by = {(r["model"], r["name"]): r for _, r in rates.iterrows()}
    a = by.get((trained_model, "A"))
    if a is None:
        return []
    lines = [f"- Trained SAE A: {_cell(a, 'all')} of its live features pass all five checks."]
    for key, what in (
        ((trained_model, "B"), "SAE B (the other seed)"),
        ((trained_model, "random-A"), "the random-decoder SAE A"),
        ((twin, "A"), "the untrained twin's SAE A"),
        ((trained_model, "neurons"), "the layer's neurons"),
    ):
        if key not in by:
            continue
        b = by[key]
        above, rest = _separating(a, b)
        detail = "; ".join(f"{c.replace('_', ' ')} {_cell(a, c)} vs {_cell(b, c)}" for c in (*above, *rest))
        lines.append(f"- Against {what}: SAE A is above it on {_names(above)}; not above on {_names(rest)} ({detail}).")
    return lines


def _planted_lines(planted: pd.DataFrame, summary: dict, params: dict) -> list[str]:
    """The planted ground truth's paragraph, table and verdict sentences."""
    cfg = summary["config"]
    by = {r["name"]: r for _, r in planted.iterrows()}
    lines = [
        f"**Planted ground truth.** Activations of the layer's width built from {len(summary['planted_classes'])} "
        f"random unit directions, each firing (magnitude 0.5–1.5) exactly on one class's tokens of the same windows, "
        f"plus {cfg['background']} background directions firing at random (a token has k = {params['k']} active on "
        f"average) and noise of norm {cfg['noise']}; a synthetic readout makes each class direction add "
        f"{cfg['gain']} logits per unit to its class's predicted tokens. SAEs A, B and random-decoder A, B "
        f"(expansion {params['planted']['expansion']}, {params['planted']['tokens']:,} tokens) train on it and take "
        "every check; each dictionary's unit for a planted class is its live unit with that best proxy and the "
        f"highest selection F1. Recovered = a decoder row within cosine {RECOVERED_COSINE} of the planted direction.",
        "",
    ]
    shown = planted.assign(**{c: [_cell(r, c) for _, r in planted.iterrows()] for c in (*CHECKS, "all")})
    shown["recovered"] = [f"{v:.0%}" if not np.isnan(v) else "n/a" for v in planted["recovered"]]
    shown["median cosine"] = [f"{v:.3f}" if not np.isnan(v) else "n/a" for v in planted["median cosine"]]
    lines.append(markdown_table(shown[["dictionary", "recovered", "median cosine", *CHECKS, "all"]]))
    if "A" in by:
        a = by["A"]
        lines += [
            "",
            f"- Trained SAE A recovers {a['recovered']:.0%} of the planted directions; {_cell(a, 'all')} "
            "of the planted classes get a unit passing all five checks.",
        ]
        if "random-A" in by:
            above, rest = _separating(a, by["random-A"])
            lines.append(
                f"- Checks that separate trained from random-decoder on planted data (A's interval above random-A's): "
                f"{_names(above)}; not separating: {_names(rest)}."
            )
    return lines


def _link(unit: int, page_links: dict[int, str]) -> str:
    return f"[F{unit}]({page_links[unit]})" if unit in page_links else f"F{unit}"


def _tokens(tokens) -> str:
    return " ".join(md_code(t) for t in list(tokens)[:5])


def _document_features(table: pd.DataFrame, class_tokens: dict[str, int], page_links: dict[int, str]) -> str:
    rows = []
    live = table[table["live"]]
    for proxy in DOCUMENT_FEATURES:
        if proxy not in class_tokens:
            rows.append({"proxy": md_code(proxy), "feature": "proxy not configured"})
            continue
        cands = live[live["best_proxy"] == proxy].sort_values("selection_f1", ascending=False)
        if not len(cands):
            rows.append({"proxy": md_code(proxy), "feature": "none: no live feature has it as its best proxy"})
            continue
        f = cands.iloc[0]
        rows.append(
            {
                "proxy": md_code(proxy),
                "feature": _link(int(f["unit"]), page_links),
                "precision": f"{f['precision']:.2f}",
                "recall": f"{f['recall']:.2f}",
                "LLR": f"{f['llr']:.1f}",
                "lift": f"{f['lift']:.1f}",
                "neuron r": f"{f['neuron_corr']:.2f}",
                "other run r": f"{f['other_corr']:.2f}",
                "Δ log p": f"{f['downstream']:.3f}",
                "share": f"{f['downstream_share']:.2f}",
                "predicts": _tokens(f["predicted"]),
                "promotes": _tokens(f["top_logits"]),
                "passes all": "yes" if f["pass_all"] else "no",
            }
        )
    return markdown_table(pd.DataFrame(rows).fillna(""))


def _matched_table(matched: pd.DataFrame, page_links: dict[int, str]) -> str:
    if not len(matched):
        return "No feature of run A passes specificity against the configured proxies.\n"
    return markdown_table(
        pd.DataFrame(
            {
                "feature": [_link(int(u), page_links) for u in matched["unit"]],
                "proxy": [md_code(p) for p in matched["best_proxy"]],
                "precision": matched["precision"],
                "recall": matched["recall"],
                "lift": matched["lift"],
                "LLR": matched["llr"],
                "neuron r": matched["neuron_corr"],
                "other run r": matched["other_corr"],
                "Δ log p": matched["downstream"],
                "share": matched["downstream_share"],
                "predicts": [_tokens(t) for t in matched["predicted"]],
                "promotes": [_tokens(t) for t in matched["top_logits"]],
                "passes all": ["yes" if p else "no" for p in matched["pass_all"]],
            }
        ),
        floatfmt=".2f",
    )
