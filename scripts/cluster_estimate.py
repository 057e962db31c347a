"""Projected GPU hours and memory per stage for Pythia-410m and Pythia-1.4B, from the scale run.

    python scripts/cluster_estimate.py [SCALE_RESULTS] [--scan-tokens N] [--gpus N]

SCALE_RESULTS is the results folder of a run of config/scale.yaml (default: scale-run/results; see
the README's "A real model's size"). An estimate, with these steps and assumptions:

Measured (the scale run, on this machine's CPU): each stage's job time and peak resident memory
(Snakemake's benchmark files), on a model of GPT-2-small shape with a ~50k vocabulary.
Work per token: a forward pass costs 2 FLOPs per weight it uses; the scan stops after the last
block (no unembedding), the other model stages need logits. An SAE job's own matrix products grow
with the SAE's weights, expansion * d_mlp^2 (its share of the stage is taken as all of it).
Projected time of a stage = its measured time x (the target's work per token / the scale model's)
x (the target's tokens / the scale run's): only the scan's tokens change (--scan-tokens, 100M by
default); the other stages keep config/scale.yaml's budgets. CPU to GPU: the scan job's measured
rate (FLOPs of its forward passes / its seconds) against GPU_FLOPS, an assumed effective rate of one
A100-class GPU; every stage is assumed to gain as much as the scan, and each job to start in
JOB_START_SECONDS.
Projected memory of a job = the Python and library floor (the smallest peak of a job that loads no
model) + the rest of its measured peak x the target's parameters / the scale model's (an SAE job:
x its SAE weights / the scale SAE's). On a GPU most of it is device memory.
The scan also writes, for each hook, the max of every window for every unit, float16 [windows,
units]: disk that grows with tokens x units, printed separately.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPTNeoXConfig

from lmfeatures.config import load_config
from lmfeatures.lm.models import n_parameters
from lmfeatures.store.benchmarks import read_job_benchmarks

REPO = Path(__file__).resolve().parents[1]
# EleutherAI's config.json of each model
PYTHIA = {
    "pythia-410m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "pythia-1.4b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192),
}
PYTHIA_SHARED = dict(vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25, use_parallel_residual=True)
GPU_FLOPS = 10e12  # assumed effective fp32 rate of one A100-class GPU (half its 19.5 TFLOP/s peak)
JOB_START_SECONDS = 60  # assumed: scheduler, Snakemake, loading the weights
MODEL_FREE_STAGES = ("data", "report")  # their jobs load no model: the memory floor


def shape(config) -> dict:
    """Parameters and forward FLOPs per token (to the last block; with the unembedding) of a config."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = n_parameters(model)
    unembed = config.vocab_size * config.hidden_size
    blocks = n - 2 * unembed  # without the embedding and the unembedding (untied in these models)
    return {
        "parameters": n,
        "scan_flops": 2 * blocks,
        "logit_flops": 2 * (blocks + unembed),
        "sae_weights": config.intermediate_size**2,  # times the expansion, the same for both
        "units": config.num_hidden_layers * config.intermediate_size,
    }


def project(stages, measured: dict, target: dict, scan_tokens: int, scale_scan_tokens: int, floor: float):
    """Rows (stage, jobs, CPU s projected, GPU h, peak GB) for a target shape from the scale run's stages."""
    cpu_rate = scale_scan_tokens * measured["scan_flops"] / stages.loc["scans", "seconds"]  # FLOP/s
    rows = []
    for stage, row in stages.iterrows():
        if stage == "sae":
            work, memory = (
                target["sae_weights"] / measured["sae_weights"],
                target["sae_weights"] / measured["sae_weights"],
            )
        elif stage == "scans":
            work = target["scan_flops"] / measured["scan_flops"] * scan_tokens / scale_scan_tokens
            memory = target["parameters"] / measured["parameters"]
        elif stage in MODEL_FREE_STAGES:
            work, memory = 1.0, 1.0
        else:
            work, memory = (
                target["logit_flops"] / measured["logit_flops"],
                target["parameters"] / measured["parameters"],
            )
        cpu_seconds = row["seconds"] * work
        gpu_hours = (cpu_seconds * cpu_rate / GPU_FLOPS + row["jobs"] * JOB_START_SECONDS) / 3600
        peak = floor + max(row["peak_rss_mb"] - floor, 0) * memory
        rows.append((stage, int(row["jobs"]), cpu_seconds, gpu_hours, peak / 1024))
    return rows, cpu_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="scale-run/results", help="results folder of config/scale.yaml")
    parser.add_argument("--scan-tokens", type=float, default=100e6)
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()
    results = Path(args.results)
    jobs = read_job_benchmarks(results / "benchmarks")
    if jobs.empty:
        sys.exit(f"no benchmark files under {results / 'benchmarks'}: run config/scale.yaml first (README)")
    config = load_config(REPO / "config" / "scale.yaml")
    (entry,) = config["models"]
    measured = shape(AutoConfig.from_pretrained(results / "models" / entry["name"]))
    scale_scan_tokens = config["scan"]["max_tokens"]
    stages = jobs.groupby("stage").agg(
        jobs=("job", "size"), seconds=("seconds", "sum"), peak_rss_mb=("peak_rss_mb", "max")
    )
    floor = jobs[jobs["stage"].isin(MODEL_FREE_STAGES)]["peak_rss_mb"].min()
    print(
        f"measured: {entry['name']} ({measured['parameters'] / 1e6:.0f}M parameters), {len(jobs)} jobs in "
        f"{results}; scan of {scale_scan_tokens:,} tokens in {stages.loc['scans', 'seconds']:.0f} s; memory floor "
        f"{floor:,.0f} MB"
    )
    for name, fields in PYTHIA.items():
        target = shape(GPTNeoXConfig(**fields, **PYTHIA_SHARED))
        rows, cpu_rate = project(stages, measured, target, args.scan_tokens, scale_scan_tokens, floor)
        windows = args.scan_tokens / config["scan"]["context_length"]
        table_gb = windows * target["units"] * 2 / 1e9
        print(
            f"\n{name}: {target['parameters'] / 1e6:.0f}M parameters; scan of {args.scan_tokens / 1e6:.0f}M tokens, "
            f"the other stages at config/scale.yaml's budgets; this CPU's scan rate {cpu_rate / 1e9:.0f} GFLOP/s, "
            f"assumed GPU {GPU_FLOPS / 1e12:.0f} TFLOP/s"
        )
        print(
            "| stage | jobs | CPU hours (this machine) | GPU hours | peak memory per job (GB) |\n|---|---|---|---|---|"
        )
        for stage, n_jobs, cpu_seconds, gpu_hours, peak in rows:
            print(f"| {stage} | {n_jobs} | {cpu_seconds / 3600:,.1f} | {gpu_hours:,.2f} | {peak:,.1f} |")
        total = sum(r[3] for r in rows)
        print(
            f"| **total** | {sum(r[1] for r in rows)} | | **{total:,.1f}** | |\n"
            f"scan's window-max tables: {windows:,.0f} windows x {target['units']:,} units x 2 bytes = "
            f"{table_gb:,.0f} GB of disk; on {args.gpus} GPUs the scan alone (scan.shards: {args.gpus}) takes about "
            f"{dict((r[0], r[3]) for r in rows)['scans'] / args.gpus:.1f} h"
        )


if __name__ == "__main__":
    main()
