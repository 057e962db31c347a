"""The README's worked estimate ("On a cluster"): GPU hours and wall time of the default DAG's stages
pointed at pythia-410m, from per-token costs measured here and a stated GPU throughput.

    python scripts/cluster_estimate.py [--gpus N]

Measured: the CPU time per token of a forward pass and of a forward + backward pass of a model with
pythia-410m's exact shapes (random weights: the cost does not depend on them; nothing is downloaded),
giving this machine's FLOP rate. Counted: the tokens each stage pushes through the model with the
default config's budgets (config/config.yaml) on one model of that size. Assumed: GPU_FLOPS, the
effective fp32 rate of one GPU on these shapes, and per-job start-up.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig

from lmfeatures.config import load_config
from lmfeatures.lm.corpus import CorpusConfig, build_corpus
from lmfeatures.lm.models import n_parameters

# EleutherAI/pythia-410m's config.json
PYTHIA_410M = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    vocab_size=50304,
    max_position_embeddings=2048,
    rotary_pct=0.25,
    use_parallel_residual=True,
)
CHARS_PER_TOKEN = 3.5  # Pythia's BPE on Python source (assumed; its tokenizer cannot be downloaded here)
GPU_FLOPS = 10e12  # assumed effective fp32 rate of one A100-class GPU (half its 19.5 TFLOP/s peak)
JOB_START_SECONDS = 60  # assumed: scheduler, Snakemake, loading 1.6 GB of weights


def measure(model, batch: int, length: int, backward: bool, repeats: int = 3) -> float:
    """CPU seconds per token of a forward (and backward) pass on [batch, length] random tokens."""
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        if backward:
            model(ids, labels=ids).loss.backward()
        else:
            with torch.no_grad():
                model(ids)
        best = min(best, time.perf_counter() - start)
    return best / (batch * length)


def stages(config: dict, heldout_tokens: int, n_layers: int) -> dict[str, tuple[float, float, int, str | None]]:
    """{stage: (forward tokens, forward+backward tokens, jobs it splits into, the stage it waits for)}
    with the config's budgets on one model of n_layers."""
    epo, sae, selection, prune = config["epo"], config["sae"], config["neurons"], config["prune"]
    epo_neurons = len(epo["neurons"].get("layers") or range(n_layers)) * epo["neurons"]["top_per_layer"]
    gradient_runs = epo_neurons * (len(epo["seeds"]) + len(epo["baseline_seeds"]))  # EPO and GCG
    runs = gradient_runs + epo_neurons * len(epo["baseline_seeds"])  # and the random baseline
    per_run = epo["population"] * epo["children"] * epo["n_tokens"] * epo["iterations"]
    per_gradient_run = epo["population"] * epo["n_tokens"] * epo["iterations"]
    pruned = n_layers * (selection["top_per_layer"] + selection["random_per_layer"]) + selection["top_concentration"]
    # per top example: up to max_context prefixes cut back, as many masked copies, and as many variants
    per_example = 3 * prune["max_context"] * (prune["max_context"] + prune["window"])
    up_to_sae_layer = (sae["layer"] + 1) / n_layers  # the SAE stage stops the forward pass at its layer
    sae_runs = 2 * len(sae["seeds"])  # the model's and its untrained twin's
    return {
        "hub_model: held-out loss": (config["training"]["eval_tokens"], 0, 1, None),
        "scan: every neuron, held-out split": (heldout_tokens, 0, 1, "hub_model: held-out loss"),
        f"EPO: {runs} runs ({epo_neurons} neurons; seeds, GCG, random)": (
            runs * per_run,
            gradient_runs * per_gradient_run,
            runs,
            "scan: every neuron, held-out split",
        ),
        f"pruning: {pruned} neurons x {config['scan']['top_k']} examples": (
            pruned * config["scan"]["top_k"] * per_example,
            0,
            1,
            "scan: every neuron, held-out split",
        ),
        "alignment: every token alone, 4 methods": (
            4 * PYTHIA_410M["vocab_size"],
            0,
            1,
            "hub_model: held-out loss",
        ),
        f"SAE: {sae_runs} runs, checks": (
            up_to_sae_layer * (sae_runs * sae["tokens"] + 6 * sae["check_tokens"]),
            0,
            sae_runs + 2,
            "hub_model: held-out loss",
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPTNeoXConfig(**PYTHIA_410M)).float()
    n_params = n_parameters(model)
    embeddings = 2 * PYTHIA_410M["vocab_size"] * PYTHIA_410M["hidden_size"]
    flops_per_token = 2 * (n_params - embeddings) + embeddings  # matmuls: 2 per weight; the unembedding's
    forward_s = measure(model, 4, 64, backward=False)
    backward_s = measure(model.train(), 2, 64, backward=True)
    cpu_flops = flops_per_token / forward_s
    print(f"pythia-410m shapes: {n_params / 1e6:.0f}M parameters, {flops_per_token / 1e9:.2f} GFLOP per token forward")
    print(
        f"measured on {torch.get_num_threads()} CPU threads: {forward_s * 1e3:.1f} ms/token forward, "
        f"{backward_s * 1e3:.1f} ms/token forward+backward ({cpu_flops / 1e9:.0f} GFLOP/s); "
        f"assumed GPU: {GPU_FLOPS / 1e12:.0f} TFLOP/s, {GPU_FLOPS / cpu_flops:.0f}x this CPU"
    )
    config = load_config("config/config.yaml")
    corpus, _ = build_corpus(CorpusConfig())
    heldout = int(sum(len(t) for t in corpus["heldout"]["text"]) / CHARS_PER_TOKEN)
    print("\n| stage | forward tokens | fwd+bwd tokens | jobs | GPU hours |\n|---|---|---|---|---|")
    total, finished = 0.0, {None: 0.0}  # hours from the start until each stage's last job ends
    for name, (forward, backward, jobs, after) in stages(config, heldout, PYTHIA_410M["num_hidden_layers"]).items():
        compute = (forward + backward_s / forward_s * backward) * flops_per_token / GPU_FLOPS
        hours = (compute + jobs * JOB_START_SECONDS) / 3600
        total += hours
        finished[name] = finished[after] + hours / jobs  # a stage's jobs run side by side
        print(f"| {name} | {forward / 1e6:.2f}M | {backward / 1e6:.2f}M | {jobs} | {hours:.2f} |")
    print(f"| **total** (with {JOB_START_SECONDS} s start-up per job) | | | | **{total:.1f}** |")
    wall = max(total / args.gpus, max(finished.values()))
    print(f"\non {args.gpus} GPUs: wall time about max(total / {args.gpus}, longest chain) = {wall:.1f} h")


if __name__ == "__main__":
    main()
