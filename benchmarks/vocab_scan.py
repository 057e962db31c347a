"""The exhaustive single-token search against a bare forward over the vocabulary.

No arguments; under two minutes on 2 cores. On the largest model of `alignment.models` in
config/config.yaml (its shape with random weights: speed does not depend on training), it times
`lmfeatures.alignment.feature_inputs.vocab_profiles` (every token alone, every layer's `resid` and the
embedding captured, moved to the CPU) against the model's own forward over the same tokens without
its LM head (the blocks and the final norm, no hooks). Also reports the greedy step's tokens per
second. Prints `vocab-scan/forward time ratio: X` last (goal: X <= 1.2).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lmfeatures.alignment.feature_inputs import greedy_step, vocab_profiles
from lmfeatures.config import load_config, model_entry
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import family_config, init_model

REPO = Path(__file__).resolve().parents[1]
REPEATS = 5


def largest_model() -> tuple[HookedModel, str, int]:
    config = load_config(REPO / "config" / "config.yaml")
    names = config["alignment"]["models"] or [m["name"] for m in config["models"]]
    entries = [model_entry(config, n) for n in names]
    entry = max((e for e in entries if "d_model" in e), key=lambda e: e["d_model"] * e["n_layers"])
    vocab = config["tokenizer"]["vocab_size"]
    cfg = family_config(entry, vocab, config["training"]["context_length"], eos_id=0)
    return HookedModel(init_model(cfg, 0)), entry["name"], config["alignment"]["batch_size"]


def best_of(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(2)
    model, name, batch_size = largest_model()
    hooks = ["embed"] + [f"resid.{i}" for i in range(model.n_layers)]
    vocab = torch.arange(model.vocab_size)
    base = model.model.base_model  # the blocks and final norm, no LM head

    def bare() -> None:
        for start in range(0, len(vocab), batch_size):
            base(input_ids=vocab[start : start + batch_size, None])

    vocab_profiles(model, hooks, batch_size)  # warm-up
    t_scan = best_of(lambda: vocab_profiles(model, hooks, batch_size))
    t_bare = best_of(bare)
    features = torch.arange(4)
    prefixes = torch.randint(0, model.vocab_size, (4, 3), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    greedy_step(model, f"resid.{model.n_layers - 1}", features, prefixes, batch_size)
    t_greedy = time.perf_counter() - t0
    print(f"model: {name} shape, random weights; vocabulary {model.vocab_size}, {model.n_layers} layers")
    print(
        f"exhaustive search ({len(hooks)} hooks captured): {t_scan * 1e3:.1f} ms; bare forward: {t_bare * 1e3:.1f} ms"
    )
    print(f"greedy step, {len(features)} features x {model.vocab_size} candidates on a 3-token cache: "
          f"{len(features) * model.vocab_size / t_greedy:,.0f} candidates/s")  # fmt: skip
    print(f"vocab-scan/forward time ratio: {t_scan / t_bare:.2f}")


if __name__ == "__main__":
    main()
