"""Scan overhead: the full scan update (top-k, moments, histograms, window-max table) against a
bare forward pass over the same batches, on the default model.

No arguments; under two minutes on 2 cores. Uses the largest trained model of config/config.yaml
when it is under results/models/, otherwise a model of the same shape with random weights.
The bare forward runs the same blocks (to the last layer, no unembedding) and keeps nothing; the
full forward with logits is printed for reference. Prints `scan/forward time ratio: X` last.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lmfeatures.config import TRAIN, load_config
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import family_config, init_model
from lmfeatures.scan.scan import ScanConfig, Windows, scan
from lmfeatures.store.models import load_model

REPO = Path(__file__).resolve().parents[1]
N_WINDOWS = 256  # 32k tokens per timed run
REPEATS = 5


def default_model() -> tuple[HookedModel, str]:
    config = load_config(REPO / "config" / "config.yaml")
    trained = [m for m in config["models"] if m["source"] == TRAIN]
    entry = max(trained, key=lambda m: m["n_layers"] * m["d_model"])
    path = REPO / config["results"] / "models" / entry["name"]
    if (path / "config.json").is_file():
        return HookedModel(load_model(path)[0]), f"{entry['name']} (trained, {path})"
    cfg = family_config(entry, config["tokenizer"]["vocab_size"], config["scan"]["context_length"], 0)
    return HookedModel(init_model(cfg, 0)), f"{entry['name']} shape with random weights (no trained model found)"


def main() -> None:
    torch.set_num_threads(2)
    model, label = default_model()
    # the default scan settings (128-token windows, batches of 32, all mlp layers), compiled as the
    # DAG's full held-out scan of this model is; compilation is timed separately (warm-up)
    cfg = ScanConfig(compile="always")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.vocab_size, (N_WINDOWS, cfg.context_length), generator=gen)
    windows = Windows(
        doc=torch.arange(N_WINDOWS),
        start=torch.zeros(N_WINDOWS, dtype=torch.int64),
        valid_from=torch.zeros(N_WINDOWS, dtype=torch.int64),
        ids=ids,
        skipped_short_docs=0,
    )
    last = f"resid.{model.n_layers - 1}"

    def bare() -> None:
        with torch.inference_mode():
            for b in range(0, N_WINDOWS, cfg.batch_size):
                model.run([last], input_ids=ids[b : b + cfg.batch_size])

    def full() -> None:
        with torch.inference_mode():
            for b in range(0, N_WINDOWS, cfg.batch_size):
                model.model(input_ids=ids[b : b + cfg.batch_size], use_cache=False)

    def scanned() -> None:
        scan(model, windows, cfg, desc="benchmark scan")

    times = {"bare": [], "full": [], "scan": []}
    bare()  # warm-up
    t0 = time.perf_counter()
    scanned()  # warm-up: compiles the fused per-batch statistics
    warmup = time.perf_counter() - t0
    for _ in range(REPEATS):
        for name, fn in (("bare", bare), ("full", full), ("scan", scanned)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    tokens = N_WINDOWS * cfg.context_length
    print(
        f"model: {label}; {model.n_layers} layers x {model.d_mlp} neurons; {tokens:,} tokens, batches of "
        f"{cfg.batch_size} x {cfg.context_length}; best of {REPEATS}"
    )
    print(f"bare forward (to last layer): {best['bare']:.3f} s ({tokens / best['bare']:,.0f} tok/s)")
    print(f"full forward with logits:     {best['full']:.3f} s")
    print(
        f"scan:                         {best['scan']:.3f} s ({tokens / best['scan']:,.0f} tok/s); "
        f"first run incl. compilation {warmup:.1f} s"
    )
    print(f"scan/forward time ratio: {best['scan'] / best['bare']:.3f}")


if __name__ == "__main__":
    main()
