"""results/benchmarks/: one TSV per job, written by Snakemake's `benchmark:` directive (every rule
has one). Its path mirrors the job's log: results/benchmarks/scans/micro-a.tsv is the scan of micro-a."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lmfeatures.io import reading

# Snakemake's benchmark columns: wall seconds, peak resident / virtual memory (MB) of the job's
# process tree, CPU seconds (user + system)
COLUMNS = {"s": "seconds", "max_rss": "peak_rss_mb", "cpu_time": "cpu_seconds"}


def read_job_benchmarks(folder: str | Path) -> pd.DataFrame:
    """Every job's benchmark under `folder`: one row per job with columns job (the file's path below
    `folder`, without .tsv), stage (its first folder), seconds, peak_rss_mb, cpu_seconds; the last
    measurement when a file holds several (benchmark repeats). Empty when there are none."""
    folder = Path(folder)
    rows = []
    for path in sorted(folder.rglob("*.tsv")):
        with reading(path):
            frame = pd.read_csv(path, sep="\t")
        last = frame.iloc[-1]
        job = path.relative_to(folder).with_suffix("").as_posix()
        # a measurement Snakemake could not take (a job faster than its sampling) is "NA"
        rows.append({"job": job, "stage": job.split("/")[0]} | {new: last[old] for old, new in COLUMNS.items()})
    return pd.DataFrame(rows, columns=["job", "stage", *COLUMNS.values()])
