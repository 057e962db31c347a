"""The report's appendix "Time and memory of each job": Snakemake's benchmark of every job (wall
time, peak resident memory of its process tree, CPU time), per stage and per job."""

from __future__ import annotations

import pandas as pd

from lmfeatures.report.plotting import markdown_table, plt, save_figure, set_theme, sns

SHOWN_JOBS = 30  # the figure's longest jobs; the table lists all


def stage_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per stage: jobs, summed and longest wall time, largest peak memory, summed CPU time."""
    grouped = jobs.groupby("stage", sort=False)
    table = pd.DataFrame(
        {
            "jobs": grouped.size(),
            "wall s (sum)": grouped["seconds"].sum(),
            "longest job s": grouped["seconds"].max(),
            "peak RSS MB (max)": grouped["peak_rss_mb"].max(),
            "CPU s (sum)": grouped["cpu_seconds"].sum(),
        }
    )
    return table.sort_values("wall s (sum)", ascending=False).reset_index()


def jobs_markdown(jobs: pd.DataFrame) -> str:
    """The appendix's tables: per stage, then every job (longest first) in a folded block."""
    if jobs.empty:
        return "No job has a benchmark file yet (results/benchmarks/ is empty).\n"
    summary = f"{len(jobs)} jobs, {jobs['seconds'].sum():,.0f} s of wall time summed over jobs"
    if jobs["peak_rss_mb"].notna().any():
        peak = jobs.loc[jobs["peak_rss_mb"].idxmax()]
        summary += f"; the largest peak memory is {peak['peak_rss_mb']:,.0f} MB, in `{peak['job']}`"
    lines = [
        summary + ". Snakemake samples memory every few seconds: a shorter job shows none (nan).\n",
        markdown_table(stage_table(jobs), floatfmt=",.0f"),
        "<details><summary>Every job, longest first</summary>\n",
        markdown_table(
            jobs.sort_values("seconds", ascending=False)[["job", "seconds", "peak_rss_mb", "cpu_seconds"]].rename(
                columns={"seconds": "wall s", "peak_rss_mb": "peak RSS MB", "cpu_seconds": "CPU s"}
            ),
            floatfmt=",.1f",
        ),
        "</details>\n",
    ]
    return "\n".join(lines)


def jobs_figure(jobs: pd.DataFrame, out_png: str) -> None:
    """Wall time and peak memory of the longest jobs, coloured by stage."""
    set_theme()
    shown = jobs.sort_values("seconds", ascending=False).head(SHOWN_JOBS)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.25 * max(len(shown), 4) + 1.5), sharey=True)
    if not shown.empty:
        palette = dict(zip(sorted(jobs["stage"].unique()), sns.color_palette("tab10", jobs["stage"].nunique())))
        sns.barplot(shown, y="job", x="seconds", hue="stage", palette=palette, dodge=False, ax=left)
        sns.barplot(shown, y="job", x="peak_rss_mb", hue="stage", palette=palette, dodge=False, ax=right, legend=False)
    left.set_xlabel("wall time (s)")
    right.set_xlabel("peak resident memory (MB)")
    left.set_ylabel("")
    left.set_title(f"the {len(shown)} longest jobs")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
