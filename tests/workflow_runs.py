"""Running the workflow from tests: the snakemake command on config/test.yaml, and outputs compared
across runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TIMING_FIELDS = {"seconds", "training_seconds"}  # wall-clock times: the only values two runs may disagree on


def snakemake_command(workdir: Path, *args: str, targets: tuple[str, ...] = ()) -> list[str]:
    """`snakemake` on config/test.yaml in `workdir` with 2 cores; `args` come last, so a later
    --configfile replaces test.yaml."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(REPO / "config" / "test.yaml"),
        *args,
    ]


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run snakemake_command(); AssertionError with its output's tail on failure (with `check`)."""
    result = subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def report_line(request, line: str) -> None:
    """Print `line` past pytest's output capture (a measurement the test log should show)."""
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(line)


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


JOB_TIMES = re.compile(r"<!-- job-times.*?<!-- /job-times -->", flags=re.S)
MOMENTS = ("mean", "var", "skew", "kurtosis")  # a scan's float64 merges: the order of a sharded scan's differs


class Moments:
    """A scan's moment tensors, equal to another's up to float rounding (a sharded scan merges its
    parts' float64 sums in another order than one job)."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def __eq__(self, other) -> bool:
        return self.tensors.keys() == other.tensors.keys() and all(
            torch.allclose(v, other.tensors[k], rtol=1e-6, atol=1e-7) for k, v in self.tensors.items()
        )


def comparable(path: Path):
    """A file's content with its wall-clock fields dropped (JSON keys, parquet and CSV columns)."""
    if path.name == "scan.safetensors":
        tensors = load_file(path)
        moments = {k: tensors.pop(k) for k in list(tensors) if k.rsplit(".", 1)[-1] in MOMENTS}
        return {k: v.tolist() for k, v in tensors.items()}, Moments(moments)
    if path.suffix == ".json":
        return _without_timing(json.loads(path.read_text()))
    if path.name == "index.html":  # the report: its appendix of job times (report/sections/jobs.md) aside
        return JOB_TIMES.sub("", path.read_text())
    if path.suffix in (".parquet", ".csv"):
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        return frame.drop(columns=[c for c in frame.columns if c in TIMING_FIELDS]).to_json()
    return path.read_bytes()


def differing_outputs(results_a: Path, results_b: Path) -> list[str]:
    """Paths under two results/ folders that differ, provenance.json, logs and job times aside
    (they hold commits, hosts and timings), or that only one run wrote. Snakemake's own marker in a directory
    output (.snakemake_timestamp, left where an interrupted run's job finished) is not an output."""

    def outputs(root: Path) -> set[Path]:
        return {
            p.relative_to(root)
            for p in root.rglob("*")
            if p.is_file()
            and p.name not in ("provenance.json", ".snakemake_timestamp")
            and p.relative_to(root).parts[0] not in ("logs", "benchmarks")
            and p.relative_to(root).parts[:2] != ("report", "jobs")  # the appendix of job times
        }

    a, b = outputs(results_a), outputs(results_b)
    differ = sorted(str(p) + " (one run only)" for p in a ^ b)
    return differ + sorted(str(p) for p in a & b if comparable(results_a / p) != comparable(results_b / p))
