"""What a job's own process spends parsing the workflow, against the main process's parse.

No arguments; about 30 seconds. Every job parses the Snakefile again in a process of its own (a
local job's subprocess; on SLURM, the batch job's and its step's): `snakemake --mode subprocess`
and `--mode remote` are those parses. The main process alone validates the config against the
models' module trees (importing torch and transformers); a job process only fills the schema's
defaults. Both parse the default config, `--list-rules`, no job runs. Prints the median of five
parses each, the goal (a job process parses in at most 2 s), and `job/main parse ratio: X` last.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = 5


def parse_seconds(mode: str) -> float:
    """Median wall time of `snakemake --mode <mode> --list-rules` on the default config."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--mode", mode, "--list-rules", "--cores", "1"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    main_parse = parse_seconds("default")
    job_parses = {mode: parse_seconds(mode) for mode in ("subprocess", "remote")}
    print(f"main process parse: {main_parse:.2f} s")
    for mode, seconds in job_parses.items():
        print(f"job process parse (--mode {mode}): {seconds:.2f} s (goal: at most 2 s)")
    print(f"job/main parse ratio: {max(job_parses.values()) / main_parse:.2f}")


if __name__ == "__main__":
    main()
