"""The report's "What exactly does a neuron respond to?" section: paired F1 differences between the N2G
predictor and two token lookups, by model kind and layer group, their verdicts, example tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmfeatures.report.plotting import markdown_table, md_cell, md_code, plt, save_figure, set_theme
from lmfeatures.stats import bootstrap_mean
from lmfeatures.store.report import write_text

N2G_F1 = (
    "N2G reports F1 0.68 at layer 0 falling to 0.37 at layer 5 on a 6-layer SoLU model "
    "(its token baseline: 0.53 at layer 0)"
)
METHODS = {
    "predictor": "N2G patterns",
    "last_token_lookup": "their final tokens",
    "token_lookup": "every training token",
}
# the predictor against each lookup: what the comparison measures
COMPARISONS = {
    "last_token_lookup": "the lookup of the patterns' own final tokens (same prompts, same tokens: what context adds)",
    "token_lookup": "the lookup of every token of the training windows (more tokens: what coverage adds)",
}
MIN_NEURONS = 5  # fewer paired neurons than this: the interval is shown, no verdict drawn


def layer_group(scores: pd.DataFrame) -> pd.Series:
    """'layer 0 (context-free)' where the neuron's layer sees only the current token, else 'layer 0'
    or 'layers ≥ 1'."""
    return pd.Series(
        np.where(
            scores["context_free"], "layer 0 (context-free)", np.where(scores["layer"] == 0, "layer 0", "layers ≥ 1")
        ),
        index=scores.index,
    )


def comparable(scores: pd.DataFrame) -> pd.DataFrame:
    """The neurons every comparison uses: those where some held-out token fires (there every F1 is
    defined; elsewhere it would count only false positives, or be undefined)."""
    return scores[scores["test_firing"] > 0]


def paired_differences(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, group, lookup): over the comparable neurons, the mean F1 of the predictor and of the
    lookup and their mean paired difference with a 95% bootstrap interval that resamples neurons
    (each neuron's two scores move together)."""
    rows = []
    for (kind, group), frame in comparable(scores).groupby(["kind", "group"], sort=True):
        for lookup in COMPARISONS:
            diff, lo, hi = bootstrap_mean((frame["predictor"] - frame[lookup]).to_numpy())
            rows.append(
                {
                    "kind": kind,
                    "group": group,
                    "lookup": lookup,
                    "neurons": len(frame),
                    "predictor": frame["predictor"].mean(),
                    "lookup F1": frame[lookup].mean(),
                    "difference": diff,
                    "low": lo,
                    "high": hi,
                }
            )
    return pd.DataFrame(
        rows, columns=["kind", "group", "lookup", "neurons", "predictor", "lookup F1", "difference", "low", "high"]
    )


def verdict(row) -> str:
    """What the paired interval says, as the verb before the lookup's name: the predictor beat / fell
    below / did not clearly differ from it, or is not judged against it on too few neurons."""
    if row["neurons"] < MIN_NEURONS:
        return f"are not judged, on {row['neurons']} neuron(s) (fewer than {MIN_NEURONS}), against"
    if row["low"] > 0:
        return "beat"
    if row["high"] < 0:
        return "fell below"
    return "did not clearly differ from"


def paired_figure(paired: pd.DataFrame, out) -> None:
    """The predictor minus each lookup, mean F1 difference with its paired 95% interval, one panel per lookup."""
    set_theme()
    fig, axes = plt.subplots(1, len(COMPARISONS), figsize=(4.2 * len(COMPARISONS), 3.4), sharey=True)
    groups = sorted(paired["group"].unique())
    kinds = sorted(paired["kind"].unique())
    colours = dict(zip(kinds, ["#1b9e77", "#999999", "#7570b3", "#d95f02"]))
    for ax, lookup in zip(np.atleast_1d(axes), COMPARISONS):
        ax.axhline(0, color="black", linewidth=0.8)
        for k, kind in enumerate(kinds):
            part = paired[(paired["lookup"] == lookup) & (paired["kind"] == kind)]
            x = np.array([groups.index(g) for g in part["group"]]) + (k - (len(kinds) - 1) / 2) * 0.15
            err = np.vstack([part["difference"] - part["low"], part["high"] - part["difference"]])
            ax.errorbar(x, part["difference"], yerr=err, fmt="o", capsize=3, color=colours[kind], label=kind)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_title(f"patterns − {METHODS[lookup]}", fontsize=10)
        ax.set_xlim(-0.6, len(groups) - 0.4)
    np.atleast_1d(axes)[0].set_ylabel("held-out F1 difference")
    np.atleast_1d(axes)[-1].legend(title="models", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)


def _example_table(frame: pd.DataFrame) -> str:
    """The first pruned example of a neuron in the report's style: prompt, type, activation, change."""
    first = frame[frame["example"] == frame["example"].min()]
    shown = pd.concat([first[first["type"].isin(["dataset example", "MAE"])], first[first["type"] == "positive"][:4]])
    shown = pd.concat([shown, first[first["type"] == "negative"][:4]])
    table = pd.DataFrame(
        {
            "prompt": [md_code(p[-80:]) for p in shown["prompt"]],
            "type": shown["type"],
            "activation": shown["activation"].round(2),
            "changed": [md_cell(c) if isinstance(c, str) else "" for c in shown["changed"]],
        }
    )
    return markdown_table(table, floatfmt=".2f")


def _epo_paragraph(epo: pd.DataFrame) -> list[str]:
    """What the patterns and lookups predict of EPO's frontier prompts, per neuron both stages ran on."""
    if not len(epo):
        return []
    firing = epo[epo["firing"] > 0]
    lines = [
        "**Does the explanation from data cover what optimisation found?** For the neurons EPO also "
        "ran on, its Pareto-frontier prompts (all seeds) scored by the same predictors at EPO's target "
        "position: the share of the prompts that fire (≥ 0.5 of the dataset maximum) that each predicts to fire.",
        "",
    ]
    if len(firing):
        total = firing["firing"].sum()
        shares = {m: (firing[m] * firing["firing"]).sum() / total for m in METHODS}
        lines += [
            f"Over {len(firing)} neuron(s) and {total} firing EPO prompts: the patterns predict "
            f"{shares['predictor']:.0%}, the lookup of their final tokens {shares['last_token_lookup']:.0%}, "
            f"the lookup of every training token {shares['token_lookup']:.0%}.",
            "",
        ]
    table = epo.rename(
        columns={"prompts": "frontier prompts", **{m: f"{label}: recall" for m, label in METHODS.items()}}
    )
    return lines + [markdown_table(table, floatfmt=".2f")]


def _verdicts(paired: pd.DataFrame) -> list[str]:
    """One paragraph per (kind, group), every clause computed from the paired intervals."""
    lines = []
    for (kind, group), frame in paired.groupby(["kind", "group"], sort=True):
        by = frame.set_index("lookup")
        clauses = [
            f"{verdict(by.loc[lookup])} {COMPARISONS[lookup]}: F1 {by.loc[lookup, 'predictor']:.2f} against "
            f"{by.loc[lookup, 'lookup F1']:.2f}, difference {by.loc[lookup, 'difference']:+.2f} "
            f"[{by.loc[lookup, 'low']:+.2f}, {by.loc[lookup, 'high']:+.2f}]"
            for lookup in COMPARISONS
        ]
        context = (
            " This layer sees only the current token (its blocks run attention and the MLP in parallel), "
            "so a pattern can at best tie its own final token here."
            if "context-free" in group
            else ""
        )
        lines += [
            f"**{kind.capitalize()} models, {group} ({int(by['neurons'].iloc[0])} neurons).** The patterns "
            + "; and they ".join(clauses)
            + f" (95% paired bootstrap intervals over neurons).{context}",
            "",
        ]
    return lines


def pruning_section(
    scores: pd.DataFrame,
    kinds: dict,
    examples: dict[str, pd.DataFrame],
    skipped: list[str],
    epo: pd.DataFrame,
    figure,
    out,
) -> None:
    """summary.md: paired verdicts by model kind and layer group, MAE statistics, the F1 table by
    model and group, two neurons' tables, the recall on EPO's prompts (`epo`, from
    prune.evaluate.frontier_recall), skipped neurons. `examples` maps "model neuron" to its parquet
    rows (the best and the worst F1 of trained models)."""
    scores = scores.assign(kind=scores["model"].map(kinds), group=layer_group(scores))
    paired = paired_differences(scores)
    lines = [
        "![The N2G patterns' held-out F1 minus each lookup's, paired per neuron, by layer group "
        "(layer 0 apart: in a model whose blocks run attention and the MLP in parallel it sees only the "
        "current token); 95% bootstrap intervals over neurons.](pruning/paired_f1.png){#fig-prune-f1}",
        "",
    ]
    lines += _verdicts(paired)
    left_out = len(scores) - len(comparable(scores))
    if left_out:
        lines += [
            f"{left_out} of {len(scores)} scored neurons are left out of every comparison: no held-out "
            "token fires for them, so their F1 could only count false positives.",
            "",
        ]
    for kind, group in scores.groupby("kind"):
        kept, klo, khi = bootstrap_mean(group["mae_activation_share"].to_numpy())
        lines += [
            f"The {kind} models' MAEs are {group['mae_tokens'].median():.0f} token(s) long up to the anchor "
            f"(median), lie inside the anchor's line for {group['mae_within_line'].mean():.0%} of examples, and "
            f"keep {kept:.0%} [{klo:.0%}, {khi:.0%}] of the full window's activation on average (pruning stops "
            "before the activation falls below `prune.keep_share`).",
            "",
        ]
    lines += [f"For scale: {N2G_F1}.", ""]
    by_group = (
        comparable(scores)
        .groupby(["model", "group"])[list(METHODS)]
        .mean()
        .reset_index()
        .rename(columns={m: f"{label} F1" for m, label in METHODS.items()})
    )
    lines.append(markdown_table(by_group, floatfmt=".2f"))
    for label, frame in examples.items():
        lines += [f"**{label}**: its first pruned example, the MAE and variants that swap one token:", ""]
        lines.append(_example_table(frame))
    lines += _epo_paragraph(epo)
    if skipped:
        lines += ["Skipped neurons: " + "; ".join(skipped) + ".", ""]
    write_text(out, "\n".join(lines) + "\n")
    paired_figure(paired, figure)
