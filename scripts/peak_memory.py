"""Wall time and peak memory of every job, from Snakemake's benchmark files (every rule has one).

    python scripts/peak_memory.py [RESULTS]      (default: results)

Prints every job (largest peak resident memory first), then the totals per stage, and last the
largest peak over all jobs against the memory budget of one job (12 GB: a model of GPT-2-small
size, config/scale.yaml, must fit a 16 GB machine beside the OS). Exits 1 when a job went over it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmfeatures.report.jobs import stage_table
from lmfeatures.store.benchmarks import read_job_benchmarks

BUDGET_MB = 12 * 1024


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "results") / "benchmarks"
    jobs = read_job_benchmarks(folder)
    if jobs.empty:
        print(f"no benchmark files under {folder}: run the workflow first (snakemake --cores 2)")
        return 2
    shown = jobs.sort_values("peak_rss_mb", ascending=False, na_position="last")
    print(shown.to_string(index=False, float_format=lambda x: f"{x:,.1f}", na_rep="-"))
    print()
    print(stage_table(jobs).to_string(index=False, float_format=lambda x: f"{x:,.0f}", na_rep="-"))
    peak = shown.iloc[0]
    verdict = "within" if peak["peak_rss_mb"] <= BUDGET_MB else "OVER"
    print(
        f"\nlargest peak RSS: {peak['peak_rss_mb']:,.0f} MB ({peak['job']}), {verdict} the budget of "
        f"{BUDGET_MB:,} MB per job; {len(jobs)} jobs, {jobs['seconds'].sum():,.0f} s of job time"
    )
    return 0 if verdict == "within" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
