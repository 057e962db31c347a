"""The report's "Models" section: the model table and the training curves."""

from __future__ import annotations

import pandas as pd

from lmfeatures.report.plotting import plt, save_figure, set_theme, sns
from lmfeatures.store.models import read_eval, read_training_log


def _tokens(n: int | None) -> str:
    return "—" if n is None else ("0" if n == 0 else f"{n / 1e6:.2f}M")


def model_table(model_dirs: list[str]) -> pd.DataFrame:
    rows = []
    for d in model_dirs:
        r = read_eval(d)
        rows.append(
            {
                "model": r["name"],
                "source": r["source"],
                "architecture": r["architecture"],
                "layers": r["n_layers"],
                "d_model": r["d_model"],
                "d_mlp": r["d_mlp"],
                "parameters": f"{r['parameters'] / 1e6:.2f}M",
                "training tokens": _tokens(r.get("training_tokens")),
                "held-out loss (nats)": r["heldout_loss"],
                "unigram baseline (nats)": r.get("unigram_heldout_xent_nats", float("nan")),
            }
        )
    return pd.DataFrame(rows)


def training_curves_figure(model_dirs: list[str], out_png: str) -> None:
    """Training loss vs. tokens for every trained model, with each model's held-out loss and the unigram baseline."""
    frames, finals, baseline = [], [], None
    for d in model_dirs:
        df = read_training_log(d)
        if df is None:  # untrained twins and hub models have no curve
            continue
        r = read_eval(d)
        df["model"] = f"{r['name']} ({r['parameters'] / 1e6:.2f}M params)"
        frames.append(df)
        finals.append((df["model"].iloc[0], r["training_tokens"], r["heldout_loss"]))
        baseline = r.get("unigram_heldout_xent_nats", baseline)
    set_theme()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if frames:
        data = pd.concat(frames)
        sns.lineplot(data=data, x="tokens", y="loss", hue="model", ax=ax, linewidth=1.4)
        palette = dict(zip(data["model"].unique(), sns.color_palette()))
        for name, tokens, loss in finals:
            ax.scatter([tokens], [loss], marker="D", s=40, color=palette[name], zorder=5, edgecolor="black")
        ax.scatter([], [], marker="D", color="grey", edgecolor="black", label="held-out loss (end)")
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle="--", linewidth=1, label=f"unigram baseline ({baseline:.2f})")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("Training curves of the embedded model family")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=130)
