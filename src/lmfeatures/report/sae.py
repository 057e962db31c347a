"""The report's "Sparse autoencoder features" section: evaluation table, pass rates of every
dictionary with intervals, the not-a-neuron x universality scatter, the proxy-matched features'
specificity / sensitivity table and histograms, and computed verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmfeatures.report.plotting import markdown_table, md_code, plt, save_figure, set_theme
from lmfeatures.sae.checks import CHECKS
from lmfeatures.stats import wilson_interval
from lmfeatures.store.report import write_text

DOCUMENT_FEATURES = (".", "for", "else", "import")  # the seed document's four features
SHARED_CHECKS = ("specificity", "sensitivity", "downstream")  # the checks that apply to neurons too


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


def pass_rates(checks: dict[tuple[str, str], pd.DataFrame], trained_model: str) -> pd.DataFrame:
    """One row per dictionary: live units, and per check the share of live units passing with
    Wilson 95% intervals; "shared" = specificity, sensitivity and downstream together (the checks
    neurons can take), "all" = all five (SAE features only)."""
    rows = []
    for (model, name), table in checks.items():
        live = table[table["live"]]
        row = {
            "dictionary": dictionary_label(model, name, trained_model),
            "model": model,
            "name": name,
            "live": len(live),
        }
        columns = {c: live[f"pass_{c}"] for c in CHECKS}
        columns["shared"] = live[[f"pass_{c}" for c in SHARED_CHECKS]].all(axis=1)
        columns["all"] = live[[f"pass_{c}" for c in CHECKS]].all(axis=1) if name != "neurons" else None
        for check, passed in columns.items():
            not_applicable = passed is None or (name == "neurons" and check in ("not_a_neuron", "universality"))
            share, lo, hi = (np.nan,) * 3 if not_applicable else wilson_interval(int(passed.sum()), len(live))
            row |= {
                check: share,
                f"{check}_lo": lo,
                f"{check}_hi": hi,
                f"{check}_n": np.nan if not_applicable else int(passed.sum()),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(row, check: str) -> str:
    if np.isnan(row[check]):
        return "n/a"
    lo, hi = 100 * row[f"{check}_lo"], 100 * row[f"{check}_hi"]
    return f"{int(row[f'{check}_n'])} ({100 * row[check]:.1f}% [{lo:.1f}, {hi:.1f}])"


def _differs(a, b, check: str) -> str:
    """'above' / 'below' / 'not clearly different from' by non-overlapping Wilson intervals."""
    if a[f"{check}_lo"] > b[f"{check}_hi"]:
        return "above"
    if a[f"{check}_hi"] < b[f"{check}_lo"]:
        return "below"
    return "not clearly different from"


def universality_figure(
    checks: dict[tuple[str, str], pd.DataFrame], panels: list[tuple[str, str, str]], thresholds: dict, out
) -> None:
    """Per SAE dictionary (a panel): each live feature's max |r| with a neuron against its best r
    with the other run; proxy-matched features (passing specificity) coloured by their proxy."""
    set_theme()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(8, 4.2 * len(panels)), 4.4), sharex=True, sharey=True, squeeze=False
    )
    matched_proxies = sorted(
        {p for model, name, _ in panels for p in checks[(model, name)].query("pass_specificity")["best_proxy"].dropna()}
    )
    colours = dict(zip(matched_proxies, plt.cm.tab20(np.linspace(0, 1, max(len(matched_proxies), 1)))))
    for ax, (model, name, title) in zip(axes[0], panels):
        t = checks[(model, name)]
        t = t[t["live"]]
        rest = t[~t["pass_specificity"]]
        ax.scatter(rest["neuron_corr"], rest["other_corr"], s=5, c="#bbbbbb", alpha=0.5, label="other features")
        for proxy, group in t[t["pass_specificity"]].groupby("best_proxy"):
            ax.scatter(group["neuron_corr"], group["other_corr"], s=14, color=colours[proxy], label=repr(proxy))
        ax.axvline(thresholds["not_a_neuron"], color="k", lw=0.8, ls="--")
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


def matched_features(table: pd.DataFrame) -> pd.DataFrame:
    """Live features passing specificity (precision of their best proxy), best F1 first."""
    live = table[table["live"]]
    return live[live["pass_specificity"]].sort_values("f1", ascending=False)


def sae_section(
    evaluations: list[dict],
    checks: dict[tuple[str, str], pd.DataFrame],
    trained_model: str,
    twin: str | None,
    params: dict,
    class_tokens: dict[str, int],
    page_links: dict[int, str],
    figures: dict[str, str],
    out,
) -> None:
    """summary.md: evaluation, pass rates with verdicts, the document's four features, the
    proxy-matched features' table. `figures` maps figure key -> path relative to the report."""
    t = params["thresholds"]
    evaluation = evaluation_table(evaluations)
    rates = pass_rates(checks, trained_model)
    context = (
        "**a context-free layer**: its MLP reads the current token alone (attention and MLP run in parallel, and "
        "nothing before them has mixed the context in), so its features can code token identity at most, and "
        "contextual proxies match only through the tokens they contain (`sae.allow_context_free` is set)"
        if evaluations[0]["context_free"]
        else "a layer whose input depends on earlier tokens"
    )
    lines = [
        f"SAEs read `mlp.{params['layer']}` of **{trained_model}** (expansion {params['expansion']}, "
        f"{params['architecture']} with k = {params['k']}, {params['tokens']:,} training tokens per run), "
        f"{context}. Every number below is measured on {evaluations[0]['tokens']:,} held-out tokens.",
        "",
        "**Evaluation.** CE is the next-token cross-entropy (nats) of the model clean, with the SAE's "
        "reconstruction spliced in, and with the activations zero-ablated; loss recovered = (zero − spliced) / "
        f"(zero − clean), left empty where zero-ablation moves the loss by less than {MIN_ABLATION_GAP} nats (the "
        "ratio is then noise: an untrained model barely uses its MLP). Dead = never fired on the held-out tokens; "
        "dense = fires on more than 10% of them.",
        "",
        markdown_table(evaluation, floatfmt=".3f").replace(" nan ", "     "),
        f"**Pass rates.** A unit passes when the precision of its best proxy is ≥ {t['specificity']} (specificity), "
        f"that proxy's recall is ≥ {t['sensitivity']} (sensitivity), removing it changes log p(next token) by ≥ "
        f"{t['downstream']} nats on average where it fires (downstream), its largest |Pearson r| with a neuron is "
        f"< {t['not_a_neuron']} (not a neuron), and its best r with a feature of the other run is ≥ "
        f"{t['universality']} (universality). Shares of live units with Wilson 95% intervals; 'shared' = the first "
        "three together, the checks a neuron can take.",
        "",
    ]
    shown = rates.assign(**{c: [_cell(r, c) for _, r in rates.iterrows()] for c in (*CHECKS, "shared", "all")})
    lines.append(markdown_table(shown[["dictionary", "live", *CHECKS, "shared", "all"]]))
    lines += _verdicts(rates, trained_model, twin)
    a = checks[(trained_model, "A")]
    matched = matched_features(a)
    lines += [
        "",
        f"![Each live feature's largest |r| with a neuron (x) against its best r with a feature of the other run "
        f"(y), one panel per SAE; dashed lines: the thresholds (a feature passing both sits top left). Coloured: "
        f"features passing specificity, by their proxy.]({figures['scatter']}){{#fig-sae-universality}}",
        "",
        "**The document's features.** Seed 004 found full-stop, `for`, `else` and `import` features in an "
        "open SAE on a 1-layer model. Ours (run A, the feature with the best F1 for each proxy):",
        "",
    ]
    lines.append(_document_features(a, class_tokens, page_links))
    lines += [
        "",
        f"**Proxy-matched features of run A** ({len(matched)} pass specificity; the first 20 by F1). LLR = "
        "log P(fires | class) / P(fires | not in class), the document's log-likelihood-ratio view in one number.",
        "",
        _matched_table(matched.head(20), page_links),
        f"![Specificity, the document's way: firing tokens per activation bin for the proxy-matched features of "
        f"run A, in the proxy class (orange) and outside it (purple), log scale.]({figures['specificity']})"
        "{#fig-sae-specificity}",
        "",
        "Proxy classes on the held-out tokens: "
        + ", ".join(f"{md_code(k)} {int(v):,}" for k, v in class_tokens.items())
        + ".",
        "",
    ]
    write_text(out, "\n".join(lines) + "\n")


def _verdicts(rates: pd.DataFrame, trained_model: str, twin: str | None) -> list[str]:
    by = {(r["model"], r["name"]): r for _, r in rates.iterrows()}
    a = by.get((trained_model, "A"))
    lines = []
    if a is None:
        return lines
    lines.append(f"- Trained SAE A: {_cell(a, 'all')} of its live features pass all five checks.")
    for key, what in (
        ((trained_model, "random-A"), "the random-decoder SAE A"),
        ((twin, "A"), "the untrained twin's SAE A"),
    ):
        if key in by:
            b = by[key]
            lines.append(
                f"- Against {what}: all five {_differs(a, b, 'all')} it ({_cell(b, 'all')}); specificity "
                f"{_differs(a, b, 'specificity')}, universality {_differs(a, b, 'universality')}, downstream "
                f"{_differs(a, b, 'downstream')}."
            )
    if (trained_model, "neurons") in by:
        n = by[(trained_model, "neurons")]
        lines.append(
            f"- Against the layer's neurons on the three shared checks: the SAE's share is {_differs(a, n, 'shared')} "
            f"the neurons' ({_cell(a, 'shared')} vs {_cell(n, 'shared')})."
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
        cands = live[live["best_proxy"] == proxy].sort_values("f1", ascending=False)
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
                "neuron r": f"{f['neuron_corr']:.2f}",
                "other run r": f"{f['other_corr']:.2f}",
                "Δ log p": f"{f['ablation_mean_abs']:.3f}",
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
                "LLR": matched["llr"],
                "neuron r": matched["neuron_corr"],
                "other run r": matched["other_corr"],
                "Δ log p": matched["ablation_mean_abs"],
                "promotes": [_tokens(t) for t in matched["top_logits"]],
                "passes all": ["yes" if p else "no" for p in matched["pass_all"]],
            }
        ),
        floatfmt=".2f",
    )
