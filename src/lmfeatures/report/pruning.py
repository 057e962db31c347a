"""The report's "What exactly does a neuron respond to?" section: F1 by layer, verdicts, example tables."""

from __future__ import annotations

import pandas as pd

from lmfeatures.report.plotting import markdown_table, md_cell, md_code, save_figure, set_theme, sns
from lmfeatures.stats import bootstrap_mean
from lmfeatures.store.report import write_text

N2G_F1 = (
    "N2G reports F1 0.68 at layer 0 falling to 0.37 at layer 5 on a 6-layer SoLU model "
    "(its token baseline: 0.53 at layer 0)"
)


def f1_figure(scores: pd.DataFrame, out) -> None:
    """F1 by layer per model: the pattern predictor against the single-token lookup, 95% bootstrap intervals."""
    set_theme()
    long = scores.melt(["model", "neuron", "layer"], ["predictor", "token_baseline"], "method", "F1")
    grid = sns.catplot(
        long,
        x="layer",
        y="F1",
        hue="method",
        col="model",
        col_wrap=3,
        kind="point",
        errorbar=("ci", 95),
        seed=0,  # the bootstrap's, so a rebuilt report is byte-identical
        dodge=0.3,
        height=2.6,
        aspect=1.2,
        palette={"predictor": "#1b9e77", "token_baseline": "#999999"},
    )
    grid.set(ylim=(-0.05, 1.05))
    save_figure(grid.figure, out, dpi=120)


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
    """What the patterns predict of EPO's frontier prompts, per neuron both stages ran on."""
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
        predicted = (firing["predictor"] * firing["firing"]).sum() / total
        looked_up = (firing["token_baseline"] * firing["firing"]).sum() / total
        lines += [
            f"Over {len(firing)} neuron(s), the patterns predict {predicted:.0%} of {total} firing EPO prompts, "
            f"the token lookup {looked_up:.0%}.",
            "",
        ]
    table = epo.rename(
        columns={
            "prompts": "frontier prompts",
            "firing": "firing",
            "predictor": "patterns' recall",
            "token_baseline": "token lookup's recall",
        }
    )
    return lines + [markdown_table(table, floatfmt=".2f")]


def pruning_section(
    scores: pd.DataFrame,
    kinds: dict,
    examples: dict[str, pd.DataFrame],
    skipped: list[str],
    epo: pd.DataFrame,
    figure,
    out,
) -> None:
    """summary.md: verdicts by model kind, the F1-by-layer table, two neurons' tables, the patterns'
    recall on EPO's prompts (`epo`, from stages.prune.epo_coverage), skipped neurons. `examples` maps
    "model neuron" to its parquet rows (the best and the worst F1 of trained models)."""
    lines = [
        "![Held-out F1 of firing tokens (normalised activation ≥ 0.5 of the neuron's dataset maximum) "
        "by layer, one panel per model (trained models, then their untrained twins): the pattern predictor "
        "built from half of each neuron's top examples against a "
        "single-token lookup built from the same half, scored on the other half and random windows; "
        "95% bootstrap intervals over neurons.](pruning/f1_by_layer.png){#fig-prune-f1}",
        "",
    ]
    scores = scores.assign(kind=scores["model"].map(kinds))
    for kind, group in scores.groupby("kind"):
        pred, lo, hi = bootstrap_mean(group["predictor"].to_numpy())
        base, blo, bhi = bootstrap_mean(group["token_baseline"].to_numpy())
        better = (group["predictor"] > group["token_baseline"]).mean()
        verdict = "beat" if lo > bhi else "fell below" if hi < blo else "did not clearly differ from"
        kept, klo, khi = bootstrap_mean(group["mae_activation_share"].to_numpy())
        lines.append(
            f"**{kind.capitalize()} models ({len(group)} neurons).** The patterns {verdict} the single-token lookup: "
            f"mean F1 {pred:.2f} [{lo:.2f}, {hi:.2f}] against {base:.2f} [{blo:.2f}, {bhi:.2f}] (95% bootstrap "
            f"intervals; 'beat' or 'fell below' when they do not overlap); higher on {better:.0%} of neurons. "
            f"Their MAEs are {group['mae_tokens'].median():.0f} token(s) long up to the anchor (median), lie "
            f"inside the anchor's line for {group['mae_within_line'].mean():.0%} of examples, and keep "
            f"{kept:.0%} [{klo:.0%}, {khi:.0%}] of the full window's activation on average (pruning stops "
            "before the activation falls below `prune.keep_share`, so every MAE keeps at least that share)."
        )
        lines.append("")
    lines.append(f"For scale: {N2G_F1}.")
    lines.append("")
    by_layer = (
        scores.groupby(["model", "layer"])[["predictor", "token_baseline"]]
        .mean()
        .reset_index()
        .rename(columns={"predictor": "predictor F1", "token_baseline": "token baseline F1"})
    )
    lines.append(markdown_table(by_layer, floatfmt=".2f"))
    for label, frame in examples.items():
        lines += [f"**{label}**: its first pruned example, the MAE and variants that swap one token:", ""]
        lines.append(_example_table(frame))
    lines += _epo_paragraph(epo)
    if skipped:
        lines += ["Skipped neurons: " + "; ".join(skipped) + ".", ""]
    write_text(out, "\n".join(lines) + "\n")
    f1_figure(scores, figure)
